"""The protocol between the trusted grading process and the untrusted sandbox child, defined once.

The child (`child.py`, run inside the sandbox) reports progress as text lines on a status pipe, one word
and an optional argument per line (`STATUS_*` below), and writes one output file per item (`out_name`) into
the io folder. The grading process only reads those files through `outputs.load` (size cap,
`torch.load(weights_only=True)`, then `outputs.validate`: plain contiguous tensors, bounded sizes) and
computes every verdict itself; nothing the child writes is trusted beyond "these are the raw tensors".

Isolation levels (`ISOLATION_*`, named in results.json's staff output):
- `bwrap`: each child runs under bubblewrap (own mount, PID, network, IPC and UTS namespaces, a private
  /tmp, only the sandbox folder and the Python environment mounted, unprivileged uid);
- `uid`: bubblewrap cannot create namespaces here; the child runs as a dedicated unprivileged uid (one per
  concurrent sandbox) in a fresh folder, with the grader's files unreadable to it;
- `none`: no isolation (only with `--unsafe-no-isolation`, for local development).
"""
import dataclasses

# status words (child -> parent, one per line on the status pipe)
STATUS_TORCH = "torch"  # the interpreter and torch are up; no student code has run yet
STATUS_IMPORTED = "imported"  # `import student_code` succeeded
STATUS_IMPORT_ERROR = "importerror"  # followed by the reason (the student's own exception and line)
STATUS_START = "start"  # followed by the item number
STATUS_DONE = "done"  # followed by the item number (its output file is written)
STATUS_MEMORY = "memory"  # followed by the child's peak virtual and resident memory in kB

ISOLATION_BWRAP = "bwrap"
ISOLATION_UID = "uid"
ISOLATION_NONE = "none"
ISOLATION_LEVELS = (ISOLATION_BWRAP, ISOLATION_UID, ISOLATION_NONE)

INPUTS_FILE = "inputs.pt"
CHILD_FILE = "_grading_child.py"  # inside the sandbox's code folder (the helper library and the runners get
SANDBOX_HELPERS = ("_grading_child",)  # random module names per sandbox); names for the review flags

# what one output file may hold (checked by the parent before any use)
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
MAX_ELEMENTS = 16 * 1024 * 1024  # all tensor elements of one output file together
MAX_DEPTH = 10
MAX_ITEMS = 20000  # entries of one list/dict
MAX_STRING = 20000


def out_name(number):
    """The output file of item `number` in the io folder."""
    return f"out_{number}.pt"


@dataclasses.dataclass
class Isolation:
    """How the children are isolated: `level` (one of ISOLATION_LEVELS) and a line saying why/how."""
    level: str
    detail: str


@dataclasses.dataclass
class GroupOutcome:
    """What one sandbox group produced: `outputs[item]` (validated raw outputs) or `errors[item]` (why
    there are none, student-facing), plus the grader's log lines and the child's stderr tail (staff)."""
    outputs: dict = dataclasses.field(default_factory=dict)
    errors: dict = dataclasses.field(default_factory=dict)
    log: list = dataclasses.field(default_factory=list)
    stderr: str = ""
