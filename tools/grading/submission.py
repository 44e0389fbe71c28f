"""Finding the submission's `student_code.py` and reading the kit's own given files (trusted, no execution).

A submission is a directory holding `student_code.py` (Gradescope's `/autograder/submission`, other files
ignored; a single `student_code.py` in a subfolder is accepted too) or a zip holding `student_code.py` at
its top (what `zip_submission.py` builds; a README or PDF beside it is ignored). Only `student_code.py` is
taken from the submission: every given file comes from the kit.
"""
import os
import zipfile

MAX_SOURCE_BYTES = 2 * 1024 * 1024  # a student_code.py larger than this is rejected
# kit file -> name inside the sandbox; all required
KIT_FILES = {
    "custom_blocks.py": "custom_blocks.py",
    "custom_augment.py": "custom_augment.py",
    "custom_dataloader.py": "custom_dataloader.py",
    os.path.join("tests", "forbidden.py"): "_grading_forbidden.py",
}
REFERENCE = "student_code.py"


class SubmissionError(Exception):
    """The submission has no usable `student_code.py` (the message says why; it is shown to the student)."""


class KitError(Exception):
    """The kit directory lacks a required file (grader misuse)."""


def read_kit(kit_dir):
    """`(given, reference_path)`: the bytes of every given file, keyed by its name inside the sandbox, and the
    path of the kit's reference `student_code.py`. Read once, up front, so that nothing a submission does to
    the disk later can change what the next sandbox receives."""
    kit_dir = os.path.abspath(kit_dir)
    given = {}
    for rel, name in KIT_FILES.items():
        path = os.path.join(kit_dir, rel)
        if not os.path.isfile(path):
            raise KitError(f"kit {kit_dir} has no {rel} (pass --kit with the repository or /autograder/source)")
        with open(path, "rb") as f:
            given[name] = f.read()
    reference = os.path.join(kit_dir, REFERENCE)
    if not os.path.isfile(reference):
        raise KitError(f"kit {kit_dir} has no reference {REFERENCE}")
    return given, reference


def _from_dir(path):
    top = os.path.join(path, "student_code.py")
    if os.path.isfile(top):
        return top
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        if "student_code.py" in files:
            found.append(os.path.join(root, "student_code.py"))
        if len(found) > 1:
            break
    if len(found) == 1:
        return found[0]
    if not found:
        raise SubmissionError("no student_code.py in the submission (upload the zip made by "
                              "`python zip_submission.py`, or student_code.py itself)")
    raise SubmissionError("several student_code.py files in the submission; upload exactly one")


def read_source(submission):
    """The submission's `student_code.py` as bytes. Raises `SubmissionError` with a student-facing reason."""
    if os.path.isdir(submission):
        path = _from_dir(submission)
        if os.path.islink(path) or not os.path.isfile(path):
            raise SubmissionError("student_code.py is not a regular file")
        if os.path.getsize(path) > MAX_SOURCE_BYTES:
            raise SubmissionError(f"student_code.py is larger than {MAX_SOURCE_BYTES // 1024} KiB")
        with open(path, "rb") as f:
            return f.read()
    if zipfile.is_zipfile(submission):
        with zipfile.ZipFile(submission) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            candidates = [n for n in names if n == "student_code.py"]
            if not candidates:  # accept one folder level (zip of a folder)
                candidates = [n for n in names if n.count("/") == 1 and n.endswith("/student_code.py")
                              and not n.startswith("__MACOSX/")]
            if len(candidates) != 1:
                raise SubmissionError("the zip must hold student_code.py at its top (make it with "
                                      "`python zip_submission.py`)")
            info = zf.getinfo(candidates[0])
            if info.file_size > MAX_SOURCE_BYTES:
                raise SubmissionError(f"student_code.py is larger than {MAX_SOURCE_BYTES // 1024} KiB")
            with zf.open(info) as f:
                data = f.read(MAX_SOURCE_BYTES + 1)
            if len(data) > MAX_SOURCE_BYTES:
                raise SubmissionError(f"student_code.py is larger than {MAX_SOURCE_BYTES // 1024} KiB")
            return data
    if os.path.isfile(submission) and os.path.basename(submission) == "student_code.py":
        with open(submission, "rb") as f:
            data = f.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise SubmissionError(f"student_code.py is larger than {MAX_SOURCE_BYTES // 1024} KiB")
        return data
    raise SubmissionError(f"{os.path.basename(submission)} is neither a folder nor a zip holding "
                          f"student_code.py")


def decode_source(data):
    """Bytes -> text (UTF-8, BOM allowed). Raises `SubmissionError` for other encodings."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"student_code.py is not UTF-8 text ({exc})") from None
