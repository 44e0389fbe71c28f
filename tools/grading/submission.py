"""Finding the submission's `student_code.py` and reading the kit's own given files (trusted, no execution).

A submission is a directory holding `student_code.py` (Gradescope's `/autograder/submission`, other files
ignored; a single `student_code.py` in a subfolder is accepted too) or a zip holding `student_code.py` at
its top (what `zip_submission.py` builds; a README or PDF beside it is ignored). Only `student_code.py` is
taken from the submission: every given file comes from the kit.

`read_submission` also lists what is odd about the upload (staff output and the batch CSV; grading stays
lenient): `student_code.py` nested in a folder (`my_hw/student_code.py`), other files carried along
(e.g. a `data/` folder of JPEGs), and the grader reports graded names the file does not define
(`grade.py`).
"""
import collections
import dataclasses
import os
import zipfile

MAX_SOURCE_BYTES = 2 * 1024 * 1024  # a student_code.py larger than this is rejected
# kit file -> name inside the sandbox; all required
KIT_FILES = {
    "custom_blocks.py": "custom_blocks.py",
    "custom_augment.py": "custom_augment.py",
    "custom_dataloader.py": "custom_dataloader.py",
}
HARMLESS = (".md", ".pdf", ".txt", ".rst")  # extra files a submission may carry without a remark
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


@dataclasses.dataclass
class Submission:
    """The bytes of `student_code.py` and the oddities of the upload (staff-facing lines)."""
    source: bytes
    oddities: list


def _describe_extras(paths, sizes, prefix=""):
    """One line about files carried along besides student_code.py (None if only harmless ones); paths are
    grouped by their first folder below `prefix` (the folder holding student_code.py)."""
    paths = [p[len(prefix):] if prefix and p.startswith(prefix) else p for p in paths]
    odd = [(p, s) for p, s in zip(paths, sizes) if not p.lower().endswith(HARMLESS)
           and not os.path.basename(p).lower().startswith("readme")]
    if not odd:
        return None
    kinds = collections.Counter()
    for p, _ in odd:
        top = p.split("/", 1)[0] + "/" if "/" in p else ""
        ext = os.path.splitext(p)[1].lower() or "(no extension)"
        kinds[f"{top}*{ext}"] += 1
    shown = ", ".join(f"{n} x {k}" for k, n in kinds.most_common(4))
    total = sum(s for _, s in odd)
    return (f"the upload carries {len(odd)} other file(s) ({total / 1e6:.1f} MB: {shown}); only "
            f"student_code.py is graded")


def read_submission(submission):
    """A `Submission`; raises `SubmissionError` (student-facing reason) when there is no usable file."""
    source = read_source(submission)
    oddities, paths, sizes, where = [], [], [], ""
    if os.path.isdir(submission):
        where = os.path.relpath(_from_dir(submission), submission)
        for root, dirs, names in os.walk(submission):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "__MACOSX") and not d.startswith(".")]
            for n in names:
                full = os.path.join(root, n)
                rel = os.path.relpath(full, submission).replace(os.sep, "/")
                if rel != where.replace(os.sep, "/") and not n.startswith("."):
                    paths.append(rel)
                    sizes.append(os.path.getsize(full) if os.path.isfile(full) else 0)
                if len(paths) > 100000:
                    break
    elif zipfile.is_zipfile(submission):
        with zipfile.ZipFile(submission) as zf:
            infos = [i for i in zf.infolist() if not i.filename.endswith("/")
                     and not i.filename.startswith("__MACOSX/") and not os.path.basename(i.filename).startswith(".")]
            names = [i.filename for i in infos]
            where = "student_code.py" if "student_code.py" in names else next(
                (n for n in names if n.endswith("/student_code.py") and n.count("/") == 1), "student_code.py")
            for i in infos:
                if i.filename != where:
                    paths.append(i.filename)
                    sizes.append(i.file_size)
    where = where.replace(os.sep, "/")
    if where != "student_code.py" and "/" in where:
        oddities.append(f"student_code.py is nested in {where.rsplit('/', 1)[0]}/ (not at the top of the upload)")
    extras = _describe_extras(paths, sizes, where.rsplit("/", 1)[0] + "/" if "/" in where else "")
    if extras:
        oddities.append(extras)
    return Submission(source, oddities)


def decode_source(data):
    """Bytes -> text (UTF-8, BOM allowed). Raises `SubmissionError` for other encodings."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"student_code.py is not UTF-8 text ({exc})") from None
