"""Check your `student_code.py` and package it into the zip you upload (run it from the kit folder).

    python zip_submission.py                      # writes submission.zip next to this script
    python zip_submission.py --name jdoe          # writes submission_jdoe.zip (name also in the zip comment)
    python zip_submission.py --out my.zip --include report.pdf

Checks, in order (any failure prints the reason and exits with status 1; nothing is written):
1. `student_code.py` is present, is UTF-8 text and smaller than 1 MB;
2. it parses (syntax errors are shown with their line);
3. it defines every graded name at top level (`GRADED_NAMES`);
4. it imports, in a separate Python process with a 60 s limit, from a temporary copy next to the kit's
   given files (`custom_*.py`), and the graded names have the right kinds (classes, functions);
5. optional extra files (a short report) come only from an allow-list (`ALLOWED_EXTRAS`, top-level files
   of the kit folder); data, logs, checkpoints, caches, images and archives never go in;
6. the zip stays below 5 MB and reads back intact.

The zip holds `student_code.py` at its top level (plus the extras): exactly what the autograder takes.
It notes (without failing) the parts whose stubs still raise `NotImplementedError`.
Only the Python standard library is used here; the import check runs your code with the same Python.
"""
import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

STUDENT_FILE = "student_code.py"
GRADED_NAMES = ("CustomConv2DFunction", "custom_conv2d", "CustomConv2d", "SimpleNet", "default_cnn_model",
                "Attention", "TransformerBlock", "SimpleViT", "default_vit_model", "PGDAttack",
                "default_attack", "GradAttention", "default_attention", "default_visfunction",
                "adversarial_training_step", "get_train_transforms", "get_val_transforms")
MODULE_CLASSES = ("CustomConv2d", "SimpleNet", "Attention", "TransformerBlock", "SimpleViT")
ALLOWED_EXTRAS = ("report.pdf", "report.md", "report.txt", "README.md")
AUTO_EXTRAS = ("report.pdf", "report.md", "report.txt")  # included without --include when present
FORBIDDEN = (  # (pattern, reason) for files that must never be submitted
    (r"\.(pth|pth\.tar|pt|ckpt|safetensors|bin|onnx|h5)$", "a model checkpoint"),
    (r"\.(npy|npz|pkl|pickle|csv|tfevents.*)$|events\.out\.tfevents", "data or logs"),
    (r"\.(png|jpe?g|gif|bmp|tiff?|webp)$", "an image"),
    (r"\.(zip|tar|gz|tgz|bz2|xz|7z|rar)$", "an archive"),
    (r"\.(pyc|pyo)$", "a Python cache"),
)
FORBIDDEN_DIRS = ("logs", "data", "__pycache__", ".venv", "venv", ".git", "tests", ".pytest_cache")
MAX_CODE_BYTES = 1_000_000
MAX_EXTRA_BYTES = 4_000_000
MAX_ZIP_BYTES = 5_000_000
IMPORT_TIMEOUT_S = 60
STUB_RE = re.compile(r"raise\s+NotImplementedError\(\s*[\"']Part\s+([0-9][a-z](?:-[ivx]+)?)\s*:")

IMPORT_CHECK = r"""
import json, sys
sys.dont_write_bytecode = True
sys.path.insert(0, '.')
import student_code as m
import torch, torch.nn as nn
names, module_classes = json.loads(sys.argv[1])
problems = []
for name in names:
    if not hasattr(m, name):
        problems.append(f"{name} is missing after import")
    elif not callable(getattr(m, name)):
        problems.append(f"{name} is not callable")
if isinstance(getattr(m, "CustomConv2DFunction", None), type) and \
        not issubclass(m.CustomConv2DFunction, torch.autograd.Function):
    problems.append("CustomConv2DFunction must subclass torch.autograd.Function")
for name in module_classes:
    obj = getattr(m, name, None)
    if obj is not None and not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        problems.append(f"{name} must be a subclass of torch.nn.Module")
print("ZIP_SUBMISSION_RESULT " + json.dumps(problems))
"""


class SubmissionError(Exception):
    """A problem that stops the packaging; its message is shown to the student."""


def check_source(path):
    """Read, size-check and parse `student_code.py`; returns `(source, tree)`."""
    if not os.path.isfile(path):
        raise SubmissionError(f"{STUDENT_FILE} not found in {os.path.dirname(path) or '.'} "
                              f"(run this script from your kit folder, or pass --dir)")
    size = os.path.getsize(path)
    if size > MAX_CODE_BYTES:
        raise SubmissionError(f"{STUDENT_FILE} is {size:,} bytes; the limit is {MAX_CODE_BYTES:,} "
                              f"(did you paste data or weights into it?)")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{STUDENT_FILE} is not UTF-8 text ({exc})") from None
    try:
        tree = ast.parse(source, filename=STUDENT_FILE)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        text = (exc.text or "").rstrip()
        raise SubmissionError(f"{STUDENT_FILE} has a syntax error at {where}: {exc.msg}"
                              + (f"\n    {text}" if text else "")) from None
    return source, tree


def top_level_names(tree):
    """Names bound at the top level of a module (defs, classes, assignments, imports)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):
            sub = ast.Module(body=node.body + getattr(node, "orelse", []), type_ignores=[])
            names |= top_level_names(sub)
    return names


def check_names(tree):
    missing = [n for n in GRADED_NAMES if n not in top_level_names(tree)]
    if missing:
        raise SubmissionError(f"{STUDENT_FILE} does not define these graded names at top level: "
                              f"{', '.join(missing)} (do not rename or remove them)")


def unfinished_parts(source):
    """Sorted part labels whose stubs still raise `NotImplementedError("Part X: ...")`."""
    return sorted(set(STUB_RE.findall(source)))


def given_files(kit_dir):
    return sorted(f for f in os.listdir(kit_dir) if f.startswith("custom_") and f.endswith(".py"))


def check_import(kit_dir, timeout=IMPORT_TIMEOUT_S):
    """Import a copy of `student_code.py` next to the kit's given files in a fresh interpreter."""
    given = given_files(kit_dir)
    if not given:
        raise SubmissionError(f"no given files (custom_*.py) found in {kit_dir}: run this script from your "
                              f"kit folder, or pass --dir")
    with tempfile.TemporaryDirectory(prefix="zip_submission_") as tmp:
        for name in given + [STUDENT_FILE]:
            shutil.copyfile(os.path.join(kit_dir, name), os.path.join(tmp, name))
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        cmd = [sys.executable, "-c", IMPORT_CHECK, json.dumps([list(GRADED_NAMES), list(MODULE_CLASSES)])]
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=(os.name == "posix"))
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise SubmissionError(f"importing {STUDENT_FILE} took longer than {timeout} s: move any training, "
                                  f"downloading or other long work out of module level (into functions)") \
                from None
    result = [line for line in out.splitlines() if line.startswith("ZIP_SUBMISSION_RESULT ")]
    if proc.returncode != 0 or not result:
        tail = "\n".join(("    " + l) for l in err.strip().splitlines()[-15:])
        raise SubmissionError(f"importing {STUDENT_FILE} failed (exit status {proc.returncode}):\n{tail}")
    problems = json.loads(result[-1].split(" ", 1)[1])
    if problems:
        raise SubmissionError(f"{STUDENT_FILE} imports, but: " + "; ".join(problems))


def _kill(proc):
    if os.name == "posix":
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            pass
    proc.kill()
    proc.communicate()


def forbidden_reason(name):
    """Why `name` (a path relative to the kit folder) may not be submitted, or `None`."""
    parts = name.replace("\\", "/").split("/")
    for d in parts[:-1]:
        if d in FORBIDDEN_DIRS:
            return f"files under {d}/ are never submitted"
    if len(parts) > 1:
        return "only top-level files of the kit folder can be included"
    for pattern, what in FORBIDDEN:
        if re.search(pattern, name, re.IGNORECASE):
            return f"it is {what}"
    if name in FORBIDDEN_DIRS:
        return "folders are never submitted"
    if name not in ALLOWED_EXTRAS:
        return f"extra files are limited to {', '.join(ALLOWED_EXTRAS)}"
    return None


def select_extras(kit_dir, include):
    """`[name]` of the extra files to add: the requested ones (validated) and any auto-included report."""
    extras = []
    for name in include:
        rel = os.path.relpath(os.path.abspath(os.path.join(kit_dir, name)), kit_dir).replace(os.sep, "/")
        if rel == STUDENT_FILE:
            continue
        if rel.startswith("../"):
            raise SubmissionError(f"cannot include {name}: it is outside the kit folder")
        why = forbidden_reason(rel)
        if why:
            raise SubmissionError(f"cannot include {name}: {why}")
        extras.append(rel)
    for name in AUTO_EXTRAS:
        if name not in extras and os.path.isfile(os.path.join(kit_dir, name)):
            extras.append(name)
    for name in extras:
        path = os.path.join(kit_dir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            raise SubmissionError(f"cannot include {name}: not a regular file")
        size = os.path.getsize(path)
        if size > MAX_EXTRA_BYTES:
            raise SubmissionError(f"{name} is {size:,} bytes; an extra file may have at most {MAX_EXTRA_BYTES:,}")
    return extras


def write_zip(out_path, kit_dir, names, comment=""):
    """Write the zip atomically (deterministic entries) and read it back; returns `[(name, size)]`."""
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".submission_", suffix=".zip", dir=out_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(names):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with open(os.path.join(kit_dir, name), "rb") as fh:
                    zf.writestr(info, fh.read())
            zf.comment = comment.encode("utf-8")[:1000]
        size = os.path.getsize(tmp)
        if size > MAX_ZIP_BYTES:
            raise SubmissionError(f"the zip would be {size:,} bytes; the limit is {MAX_ZIP_BYTES:,}")
        with zipfile.ZipFile(tmp) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise SubmissionError(f"the zip did not read back intact ({bad})")
            listing = [(i.filename, i.file_size) for i in zf.infolist()]
        os.chmod(tmp, 0o644)  # mkstemp made it 0600: the zip is to be uploaded and shared, like any document
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return listing


def safe_name(name):
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("._")
    if not cleaned:
        raise SubmissionError(f"--name {name!r} has no usable characters (use letters, digits, '_', '-', '.')")
    return cleaned[:64]


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Check student_code.py and build the submission zip.")
    parser.add_argument("--out", help="zip to write (default: submission.zip, or submission_NAME.zip with "
                                      "--name, in the kit folder)")
    parser.add_argument("--name", help="your name or student ID: recorded in the zip comment and the default "
                                       "file name")
    parser.add_argument("--include", action="append", default=[], metavar="FILE",
                        help=f"extra file to add (allowed: {', '.join(ALLOWED_EXTRAS)}); "
                             f"{', '.join(AUTO_EXTRAS)} are added automatically when present")
    parser.add_argument("--dir", default=os.path.dirname(os.path.abspath(__file__)),
                        help="kit folder holding student_code.py and the given files (default: this script's "
                             "folder)")
    parser.add_argument("--timeout", type=float, default=IMPORT_TIMEOUT_S, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kit_dir = os.path.abspath(args.dir)
    try:
        name = safe_name(args.name) if args.name is not None else None
        out = args.out or os.path.join(kit_dir, f"submission_{name}.zip" if name else "submission.zip")
        if not out.endswith(".zip"):
            raise SubmissionError(f"--out {out} must end in .zip")
        source, tree = check_source(os.path.join(kit_dir, STUDENT_FILE))
        print(f"[ok] {STUDENT_FILE} parses ({len(source.encode('utf-8')):,} bytes)")
        check_names(tree)
        print(f"[ok] defines the {len(GRADED_NAMES)} graded names")
        extras = select_extras(kit_dir, args.include)
        check_import(kit_dir, timeout=args.timeout)
        print("[ok] imports in a fresh Python process next to the given files")
        listing = write_zip(out, kit_dir, [STUDENT_FILE] + extras,
                            comment=f"submission of {args.name}" if args.name else "")
    except SubmissionError as exc:
        print(f"zip_submission: ERROR: {exc}", file=sys.stderr)
        print("No zip was written.", file=sys.stderr)
        return 1
    print(f"Wrote {out} ({os.path.getsize(out):,} bytes) with:")
    for entry, size in listing:
        print(f"    {entry:<24} {size:>10,} bytes")
    todo = unfinished_parts(source)
    if todo:
        print(f"Note: stubs of Part {', '.join(todo)} still raise NotImplementedError (those parts will score 0).")
    print("Upload this zip as your submission.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
