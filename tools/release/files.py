"""Which files go into the student release and into the autograder bundle, and deterministic zips.

Student release (`release_files`): the top-level kit files (every top-level `*.py` and `*.sh`,
`requirements*.txt`, `.gitignore`, pytest configuration, licence), `README.md` taken from `HANDOUT.md`,
`logs/.gitkeep`, and the public tests: `tests/` without `tests/hidden/` and without staff-only test files
(those named in `STAFF_TEST_PATTERNS`, any file that imports or names the staff tools, and any sub-folder
of tests/ holding such a file). Never `tools/`.

Autograder bundle (`bundle_files`): the same kit with the reference `student_code.py`, all tests
(public and hidden, staff-only ones aside), `tools/autograde.py` and `tools/grading/`, plus `setup.sh` and
`run_autograder` (Gradescope's entry points, written by `make_release.py`).

Optional parts (tools/release/parts.py): a file whose first lines say `# OPTIONAL PART 4` (Part 4's tests,
`requirements-oracles.txt`) is left out of both unless the course ships that part (`parts`).

Zips are deterministic: entries sorted, timestamps fixed at 1980-01-01, permissions normalized
(0755 for scripts, 0644 otherwise), no directory entries.
"""
import fnmatch
import os
import re
import zipfile

from . import parts as course_parts

REQUIRED_TOP_LEVEL = ("main.py", "student_code.py", "custom_blocks.py", "custom_augment.py",
                      "custom_dataloader.py", "download_dataset.sh", "zip_submission.py", "requirements.txt",
                      ".gitignore")
TOP_LEVEL_PATTERNS = ("*.py", "*.sh", "requirements*.txt", ".gitignore", "pytest.ini", "setup.cfg",
                      "pyproject.toml", "tox.ini", "LICENSE*")
HANDOUT = "HANDOUT.md"
STAFF_TEST_PATTERNS = ("test_release*", "test_mutants*", "test_autograde*", "test_hostile*",
                       "test_zip_submission*", "test_grading*", "test_make_release*")
STAFF_IMPORT_RE = re.compile(r"^\s*(from|import)\s+(tools|grading|release|autograde|mutants|make_release|_staff)\b"
                             r"|[\"']tools[\"']", re.MULTILINE)
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_FILE_PATTERNS = ("*.pyc", "*.pyo", "*~", ".DS_Store", "*.swp")
EXECUTABLE_PATTERNS = ("*.sh", "run_autograder", "zip_submission.py", "main.py")
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


class ManifestError(RuntimeError):
    """A required file is missing or a file would leak where it must not."""


def _matches(name, patterns):
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def staff_only_test(path):
    """Why `path` (a file under tests/) is staff-only, or `None` when it may ship to students."""
    name = os.path.basename(path)
    if _matches(name, STAFF_TEST_PATTERNS):
        return "staff-only test (name)"
    if name.endswith(".py"):
        with open(path, encoding="utf-8", errors="replace") as fh:
            if STAFF_IMPORT_RE.search(fh.read()):
                return "uses the staff tools"
    return None


def _walk(root, rel_dir):
    """Relative paths of the regular files under `root/rel_dir`, sorted, caches skipped."""
    out = []
    base = os.path.join(root, rel_dir)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            if _matches(f, SKIP_FILE_PATTERNS) or not os.path.isfile(full) or os.path.islink(full):
                continue
            out.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return out


def _optional_left_out(path, parts):
    part = course_parts.file_part(path)
    return part is not None and part not in parts


def top_level_files(root, parts=course_parts.REQUIRED):
    """`(shipped, skipped)`: top-level kit files that ship, and the other top-level files (for the log)."""
    shipped, skipped = [], []
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        if not os.path.isfile(full) or os.path.islink(full):
            continue
        if name != "README.md" and _matches(name, TOP_LEVEL_PATTERNS) and not _optional_left_out(full, parts):
            shipped.append(name)
        else:
            skipped.append(name)
    missing = [f for f in REQUIRED_TOP_LEVEL if f not in shipped]
    if not os.path.isfile(os.path.join(root, HANDOUT)):
        missing.append(HANDOUT)
    if missing:
        raise ManifestError(f"missing kit files in {root}: {', '.join(missing)}")
    return shipped, skipped


def test_files(root, include_hidden, parts=course_parts.REQUIRED):
    """`(shipped, excluded)`: files under tests/ (hidden ones only with `include_hidden`), and
    `(path, reason)` for those left out. A sub-folder of tests/ (other than hidden/) holding a staff-only
    file is left out as a whole (e.g. fixtures shared by the grader's own tests)."""
    shipped_parts = parts  # `parts` is reused below for path components
    shipped, excluded = [], []
    all_files = _walk(root, "tests")
    staff = {rel: staff_only_test(os.path.join(root, rel)) for rel in all_files}
    staff_folders = {}
    for rel, why in staff.items():
        parts = rel.split("/")
        if why and len(parts) > 2 and parts[1] != "hidden":
            staff_folders.setdefault(parts[1], rel)
    for rel in all_files:
        parts = rel.split("/")
        if parts[1] == "hidden" and len(parts) > 2:
            if not include_hidden:
                excluded.append((rel, "hidden test"))
                continue
        elif len(parts) > 2 and parts[1] in staff_folders:
            excluded.append((rel, f"staff-only folder ({staff_folders[parts[1]]} is staff-only)"))
            continue
        if _optional_left_out(os.path.join(root, rel), shipped_parts):
            excluded.append((rel, f"optional Part {course_parts.file_part(os.path.join(root, rel))} not shipped"))
        elif staff[rel]:
            excluded.append((rel, staff[rel]))
        else:
            shipped.append(rel)
    return shipped, excluded


def release_files(root, parts=course_parts.REQUIRED):
    """`({dest_rel: source_abs or None}, notes)`: the student kit (None = empty file), the
    stubbed `student_code.py` included under its name (the caller replaces its content), and
    `course_parts.json` (the caller writes it)."""
    top, skipped = top_level_files(root, parts)
    files = {name: os.path.join(root, name) for name in top}
    files["README.md"] = os.path.join(root, HANDOUT)
    files["logs/.gitkeep"] = None
    files[course_parts.CONFIG] = None
    tests, excluded = test_files(root, include_hidden=False, parts=parts)
    for rel in tests:
        files[rel] = os.path.join(root, rel)
    notes = [f"not shipped (top level): {n}" for n in skipped] + [f"not shipped: {p} ({why})"
                                                                  for p, why in excluded]
    return files, notes


STUDENT_PYTEST_INI_KEY = "points_report = short"


def student_pytest_ini(text):
    """The release's pytest.ini from the staff one: `-ra` dropped from `addopts` (its list of every skip
    and failure would bury the points table) and `points_report = short` added under `[pytest]`
    (tests/points_plugin.py: failing checks with hints, the points table and the totals, last)."""
    out = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if key == "addopts":
            opts = [o for o in line.split("=", 1)[1].split() if o != "-ra"]
            line = "addopts = " + " ".join(opts) if opts else ""
        elif key == "points_report":
            continue
        if line or not out or out[-1]:
            out.append(line)
        if line.strip() == "[pytest]":
            out.append(STUDENT_PYTEST_INI_KEY)
    if STUDENT_PYTEST_INI_KEY not in out:
        out = ["[pytest]", STUDENT_PYTEST_INI_KEY] + out
    return "\n".join(out).rstrip("\n") + "\n"


def bundle_files(root, parts=course_parts.REQUIRED):
    """`{dest_rel: source_abs or None}` of the autograder bundle (without setup.sh / run_autograder; the
    caller writes `course_parts.json`)."""
    top, _ = top_level_files(root, parts)
    files = {name: os.path.join(root, name) for name in top}
    files["logs/.gitkeep"] = None
    files[course_parts.CONFIG] = None
    tests, _ = test_files(root, include_hidden=True, parts=parts)
    for rel in tests:
        files[rel] = os.path.join(root, rel)
    grader = os.path.join(root, "tools", "autograde.py")
    if not os.path.isfile(grader) or not os.path.isdir(os.path.join(root, "tools", "grading")):
        raise ManifestError("tools/autograde.py and tools/grading/ are needed for the autograder bundle")
    files["tools/autograde.py"] = grader
    for rel in _walk(root, os.path.join("tools", "grading")):
        files[rel] = os.path.join(root, rel)
    return files


def is_executable_name(rel):
    return _matches(os.path.basename(rel), EXECUTABLE_PATTERNS)


def write_zip(path, entries):
    """Write `entries` (`{arcname: bytes}`) to the zip `path` deterministically."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so that external_attr carries the permissions
            mode = 0o755 if is_executable_name(arcname) else 0o644
            info.external_attr = (0o100000 | mode) << 16  # regular file
            zf.writestr(info, entries[arcname], compresslevel=9)
