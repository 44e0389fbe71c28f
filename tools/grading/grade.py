"""Grading one submission or a batch (trusted grading process; no student code ever runs here).

`Kit(kit_dir)` reads the kit's given files into memory and loads the kit's reference `student_code.py`
(trusted) under a private module name; it computes, once per process and item, the seeded inputs
(`Kit.inputs`) and the reference outputs (`Kit.expected`). `grade_submission(...)` then:

1. reads the submission's `student_code.py` (directory or zip) - a missing file fails every item;
2. parses it here (syntax error -> every item 0 with the line) and scans it for forbidden APIs;
3. runs each sandbox group (rubric.GROUPS) in its own child process, groups in parallel threads, while the
   reference outputs are computed here;
4. scores every item from the child's tensors against the reference, and returns Gradescope's results dict.

`grade_batch(...)` grades every subdirectory / .zip of a folder with N worker threads sharing one `Kit`.
"""
import concurrent.futures
import hashlib
import importlib.util
import io
import os
import sys
import threading
import time
import traceback

import torch

from . import checks_part1, checks_part2, checks_part3, rubric, sandbox, static
from .results import ItemGrade, build_results, csv_header, csv_row, failed_everywhere, write_csv, \
    write_json_atomic
from .submission import SubmissionError, decode_source, read_kit, read_source

HERE = os.path.dirname(os.path.abspath(__file__))
INPUTS = {**checks_part1.INPUTS, **checks_part2.INPUTS, **checks_part3.INPUTS}
EXPECTED = {**checks_part1.EXPECTED, **checks_part2.EXPECTED, **checks_part3.EXPECTED}
SCORE = {**checks_part1.SCORE, **checks_part2.SCORE, **checks_part3.SCORE}


def _read(name):
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


class Kit:
    """The kit: its given files (bytes, for the sandboxes), the harness sources and the reference module,
    plus a per-item cache of `(inputs, expected)` (thread-safe)."""

    def __init__(self, kit_dir):
        self.dir = os.path.abspath(kit_dir)
        given, self.reference_path = read_kit(self.dir)
        self.files = dict(given)
        self.files["_grading_child.py"] = _read("child.py")
        self.files["_grading_harness.py"] = _read("harness.py")
        self.ref = _load_reference(self.dir, self.reference_path)
        # one lock for every reference computation: they seed torch's global RNG (module initialization)
        self._lock = threading.RLock()
        self._inputs, self._expected = {}, {}

    def inputs(self, number):
        with self._lock:
            if number not in self._inputs:
                with _reference_numerics():
                    self._inputs[number] = INPUTS[number](self.ref)
            return self._inputs[number]

    def expected(self, number):
        with self._lock:
            if number not in self._expected:
                inp = self.inputs(number)
                with _reference_numerics():
                    self._expected[number] = EXPECTED[number](self.ref, inp)
            return self._expected[number]

    def inputs_bytes(self, numbers):
        buf = io.BytesIO()
        torch.save(_detached({n: self.inputs(n) for n in numbers}), buf)
        return buf.getvalue()


def _detached(obj):
    """A copy of a nested dict/list/tuple structure with every tensor detached (no autograd state leaks
    into the child's inputs)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detached(v) for v in obj)
    return obj


class _reference_numerics:
    """TF32 off, one intra-op thread, and the global RNG restored around reference computations."""

    def __enter__(self):
        self.old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        self.threads = torch.get_num_threads()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_num_threads(1)  # tiny tensors; several processes share the cores
        self.rng = torch.random.fork_rng(devices=[])
        self.rng.__enter__()
        torch.manual_seed(0)
        return self

    def __exit__(self, *exc):
        self.rng.__exit__(*exc)
        torch.set_num_threads(self.threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.old
        return False


def _load_reference(kit_dir, path):
    """Import the kit's reference student_code.py under a private name (its sibling imports resolve in the
    kit directory)."""
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    name = f"_autograde_reference_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, kit_dir)
    try:
        spec.loader.exec_module(module)
    finally:
        try:
            sys.path.remove(kit_dir)
        except ValueError:
            pass
    sys.modules[name] = module
    return module


def _score(number, kit, output, error, findings, verbose):
    """The ItemGrade of one item (never raises)."""
    if output is None:
        grade = ItemGrade(number)
        grade.fail(error or "no result")
        for f in findings:
            grade.forbid(f)
        return grade
    try:
        grade = SCORE[number](kit.inputs(number), kit.expected(number), output, findings)
    except Exception as exc:  # noqa: BLE001 - malformed outputs from the untrusted child
        grade = ItemGrade(number)
        grade.fail(f"the outputs of your code could not be checked ({type(exc).__name__}: {exc})"[:500])
        if verbose:
            traceback.print_exc()
    if isinstance(output, dict) and output.get("error") and not grade.components and grade.failure is None:
        grade.fail(str(output["error"])[:600])
    return grade


def grade_submission(submission, kit, numbers=None, limits=None, supervisor=None, parallel_groups=None,
                     verbose=False, log=None):
    """Grade `submission` (folder or zip) -> `(results dict, status str)`."""
    t0 = time.monotonic()
    numbers = tuple(numbers or rubric.DISPLAY_ORDER)
    limits = limits or sandbox.Limits()
    supervisor = supervisor or sandbox.Supervisor()
    log = log if log is not None else (lambda msg: print(msg, file=sys.stderr) if verbose else None)
    notes = []
    try:
        source = read_source(submission)
        text = decode_source(source)
    except SubmissionError as exc:
        grades = failed_everywhere(numbers, str(exc))
        return build_results(grades, time.monotonic() - t0, [str(exc)]), f"not gradable: {exc}"
    error = static.syntax_error(text)
    if error:
        grades = failed_everywhere(numbers, f"student_code.py does not parse: {error}")
        return build_results(grades, time.monotonic() - t0, [error]), "syntax error"
    findings = static.forbidden_uses(text)
    files = dict(kit.files)
    files["student_code.py"] = source
    groups = rubric.groups_of(numbers)
    deadline = t0 + limits.submission_s
    outputs, errors = {}, {}
    lock = threading.Lock()

    def run(group, items):
        inputs_bytes = kit.inputs_bytes(items)
        log(f"[{group}] child for {','.join(items)}")
        outcome = sandbox.run_group(items, inputs_bytes, files, limits, supervisor=supervisor, deadline=deadline)
        for line in outcome.log:
            log(f"[{group}] {line}")
        if verbose and outcome.stderr.strip():
            log(f"[{group}] child stderr (tail):\n{outcome.stderr[-3000:]}")
        with lock:
            outputs.update(outcome.outputs)
            errors.update(outcome.errors)

    for number in numbers:  # cheap, and needed before the children start
        kit.inputs(number)
    workers = parallel_groups or int(os.environ.get("AUTOGRADE_PARALLEL", 0)) or min(len(groups), _cpus())
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run, g, items) for g, items in groups.items()]
        for number in numbers:  # reference outputs meanwhile, in this thread
            kit.expected(number)
        for fut in futures:
            fut.result()
    supervisor.sweep()
    grades = [_score(n, kit, outputs.get(n), errors.get(n), findings.get(n, []), verbose) for n in numbers]
    import_errors = {e for n, e in errors.items() if n not in outputs and e.startswith("import")}
    notes.extend(sorted(import_errors))
    status = "graded" if not errors else "graded; no result for " + ", ".join(rubric.ordered(
        [n for n in errors if n not in outputs]))
    return build_results(grades, time.monotonic() - t0, notes), status


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def batch_entries(folder):
    """`[(name, path)]`: subdirectories and .zip files of `folder`, sorted."""
    out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("."):
            continue
        if os.path.isdir(path) or name.lower().endswith(".zip"):
            stem = name[:-4] if name.lower().endswith(".zip") else name
            out.append((stem, path))
    return out


def grade_batch(folder, csv_path, kit, jobs=None, numbers=None, limits=None, supervisor=None, verbose=False):
    """Grade every submission in `folder`; write `csv_path` and `<csv dir>/<name>.results.json` each.
    Returns the CSV rows."""
    numbers = tuple(numbers or rubric.DISPLAY_ORDER)
    jobs = jobs or _cpus()
    supervisor = supervisor or sandbox.Supervisor()
    out_dir = os.path.dirname(os.path.abspath(csv_path))
    entries = batch_entries(folder)
    for n in numbers:  # the reference once, before the workers start
        kit.expected(n)

    def one(entry):
        name, path = entry
        try:
            results, status = grade_submission(path, kit, numbers, limits, supervisor, parallel_groups=1,
                                               verbose=verbose)
        except Exception as exc:  # noqa: BLE001 - one broken submission must not stop the batch
            results = build_results(failed_everywhere(numbers, f"grader error: {exc}"), 0.0)
            status = f"grader error: {type(exc).__name__}: {exc}"
        write_json_atomic(os.path.join(out_dir, f"{name}.results.json"), results)
        print(f"{name}: {results['score']:g} ({status})", file=sys.stderr)
        return csv_row(name, results, numbers, status)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(one, entries))
    write_csv(csv_path, csv_header(numbers), rows)
    return rows
