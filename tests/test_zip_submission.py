"""Staff tests of `zip_submission.py` (the student's packaging script) and of its contract with the grader.

Good and bad kits are built in a temporary folder (a copy of the given files plus a `student_code.py`):
the reference is packaged and the zip holds exactly `student_code.py` (plus an allowed report); a missing
file, a syntax error, an import error, a missing or mistyped graded name, an import that hangs, an oversized
file, and forbidden extra files (checkpoints, logs, images, unknown names) each exit 1 with the reason and
write nothing. The grader's reader takes our student_code.py out of the zip; slow tier (`-m slow`): the zip
of the reference is graded by `tools/autograde.py` at full marks.

Run: python -m pytest tests/test_zip_submission.py
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from _staff import ROOT, TOOLS, reference_source

import zip_submission  # noqa: E402
from release import grade  # noqa: E402

GIVEN = ("custom_blocks.py", "custom_augment.py", "custom_dataloader.py")


@pytest.fixture
def kit(tmp_path):
    """A kit folder: the given files, zip_submission.py and the reference student_code.py."""
    for name in GIVEN + ("zip_submission.py", "student_code.py"):
        shutil.copyfile(os.path.join(ROOT, name), tmp_path / name)
    return tmp_path


def run(kit, *args):
    """`zip_submission.main` in this process (the import check still runs in a child); (code, out, err)."""
    return zip_submission.main(["--dir", str(kit), *args])


def assert_rejected(capsys, code, *needles, kit=None):
    out, err = capsys.readouterr()
    assert code == 1, f"expected exit 1, got {code}\n{out}\n{err}"
    assert "No zip was written" in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in the message:\n{err}"
    if kit is not None:
        assert not list(kit.glob("submission*.zip")), "a zip was written despite the error"
    return err


def test_reference_is_packaged(kit, capsys):
    (kit / "report.pdf").write_bytes(b"%PDF-1.4 tiny")
    (kit / "logs").mkdir()
    (kit / "logs" / "model_best.pth.tar").write_bytes(b"x" * 100)
    (kit / "notes.png").write_bytes(b"\x89PNG")
    code = run(kit, "--name", "Jane Doe")
    out, err = capsys.readouterr()
    assert code == 0, err
    zip_path = kit / "submission_Jane_Doe.zip"
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ["report.pdf", "student_code.py"]
        assert zf.read("student_code.py") == (kit / "student_code.py").read_bytes()
        assert zf.comment == b"submission of Jane Doe"
    assert "student_code.py" in out and "report.pdf" in out and "submission_Jane_Doe.zip" in out
    assert "still raise NotImplementedError" not in out


def test_zip_is_readable_by_others(kit, capsys, monkeypatch):
    """The zip gets mode 0644 like any document (not the 0600 of its temporary file)."""
    monkeypatch.setattr(zip_submission, "check_import", lambda *a, **k: None)  # tested elsewhere; saves time
    assert run(kit, "--out", str(kit / "a.zip")) == 0
    mode = os.stat(kit / "a.zip").st_mode & 0o777
    assert mode == 0o644, f"zip mode {mode:o}, expected 644"


def test_output_is_deterministic(kit, capsys, monkeypatch):
    monkeypatch.setattr(zip_submission, "check_import", lambda *a, **k: None)  # tested elsewhere; saves time
    assert run(kit, "--out", str(kit / "a.zip")) == 0
    assert run(kit, "--out", str(kit / "b.zip")) == 0
    assert (kit / "a.zip").read_bytes() == (kit / "b.zip").read_bytes()


def test_stubbed_release_is_packaged_with_a_note(kit, capsys):
    from release import markers

    stub, _ = markers.strip_source(reference_source())
    (kit / "student_code.py").write_text(stub, encoding="utf-8")
    assert run(kit, "--out", str(kit / "s.zip")) == 0
    out, _ = capsys.readouterr()
    # every stub of the reference, the optional Part 4 ones (4a-4d) included when the reference has them
    assert re.search(r"Part 1a, 1b-iii, 2a, 2b, 3a, 3b(, 4[a-z])* still raise NotImplementedError", out), out


def test_missing_student_code(kit, capsys):
    (kit / "student_code.py").unlink()
    assert_rejected(capsys, run(kit), "student_code.py not found", kit=kit)


def test_syntax_error_names_the_line(kit, capsys):
    src = reference_source().replace("        nh, hd = self.num_heads, C // self.num_heads",
                                     "        nh, hd = self.num_heads, C // (self.num_heads", 1)
    (kit / "student_code.py").write_text(src, encoding="utf-8")
    lineno = src.splitlines().index("        nh, hd = self.num_heads, C // (self.num_heads") + 1
    err = assert_rejected(capsys, run(kit), "syntax error", kit=kit)
    assert f"line {lineno}" in err or f"line {lineno + 1}" in err, err


def test_import_error_shows_the_traceback(kit, capsys):
    src = "import module_that_does_not_exist_anywhere\n" + reference_source()
    (kit / "student_code.py").write_text(src, encoding="utf-8")
    assert_rejected(capsys, run(kit), "importing student_code.py failed", "module_that_does_not_exist_anywhere",
                    kit=kit)


def test_import_that_hangs_times_out(kit, capsys):
    (kit / "student_code.py").write_text("import time\ntime.sleep(60)\n" + reference_source(), encoding="utf-8")
    assert_rejected(capsys, run(kit, "--timeout", "3"), "longer than 3", kit=kit)


def test_missing_graded_name(kit, capsys):
    src = reference_source().replace("def default_attention(loss_fn):", "def my_attention(loss_fn):", 1)
    (kit / "student_code.py").write_text(src, encoding="utf-8")
    assert_rejected(capsys, run(kit), "default_attention", "do not rename", kit=kit)


def test_graded_class_of_the_wrong_kind(kit, capsys):
    src = reference_source() + "\n\nSimpleViT = default_vit_model\n"
    (kit / "student_code.py").write_text(src, encoding="utf-8")
    assert_rejected(capsys, run(kit), "SimpleViT must be a subclass of torch.nn.Module", kit=kit)


def test_huge_student_code(kit, capsys):
    src = reference_source() + "\nWEIGHTS = '" + "0" * zip_submission.MAX_CODE_BYTES + "'\n"
    (kit / "student_code.py").write_text(src, encoding="utf-8")
    assert_rejected(capsys, run(kit), "the limit is", kit=kit)


def test_not_utf8(kit, capsys):
    (kit / "student_code.py").write_bytes(reference_source().encode("utf-8") + b"\n# caf\xe9\n")
    assert_rejected(capsys, run(kit), "not UTF-8", kit=kit)


@pytest.mark.parametrize("name,reason", [
    ("model_best.pth.tar", "checkpoint"),
    ("weights.pt", "checkpoint"),
    ("logs/run/events.out.tfevents.1", "under logs/"),
    ("adv.png", "an image"),
    ("data.npz", "data or logs"),
    ("__pycache__/student_code.cpython-312.pyc", "under __pycache__/"),
    ("helper.py", "limited to"),
    ("old.zip", "an archive"),
    ("../outside.pdf", "outside the kit folder"),
])
def test_forbidden_extra_files(kit, capsys, name, reason):
    path = kit / name
    if not name.startswith(".."):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert_rejected(capsys, run(kit, "--include", name), f"cannot include {name}", reason, kit=kit)


def test_oversized_report(kit, capsys):
    (kit / "report.pdf").write_bytes(b"%" * (zip_submission.MAX_EXTRA_BYTES + 1))
    assert_rejected(capsys, run(kit), "report.pdf is", "at most", kit=kit)


def test_bad_out_name(kit, capsys):
    assert_rejected(capsys, run(kit, "--out", str(kit / "submission.tar")), "must end in .zip", kit=kit)


def test_command_line_exit_status(kit):
    """As students run it: from the kit folder, no arguments."""
    (kit / "student_code.py").write_text("def oops(:\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "zip_submission.py"], cwd=kit, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "syntax error" in proc.stderr and not (kit / "submission.zip").exists()


def test_zip_is_what_the_grader_reads(kit, capsys, monkeypatch):
    """The grader's own submission reader takes exactly our student_code.py out of the zip (report aside)."""
    from grading import submission

    monkeypatch.setattr(zip_submission, "check_import", lambda *a, **k: None)

    (kit / "report.md").write_text("notes")
    assert run(kit, "--out", str(kit / "submission.zip")) == 0
    assert submission.read_source(str(kit / "submission.zip")) == (kit / "student_code.py").read_bytes()


@pytest.mark.slow
def test_zip_is_graded_full_marks(kit, capsys):
    """The zip of the reference, graded by tools/autograde.py: full marks on every item."""
    assert run(kit, "--out", str(kit / "submission.zip")) == 0
    results = grade.run_autograde(os.path.join(TOOLS, "autograde.py"), str(kit / "submission.zip"), kit=ROOT)
    score, max_score, tests = grade.summarize(results)
    assert len(tests) == 9 and max_score == 14.0
    assert score == max_score, f"{grade.lost_points(tests)}\n{results.get('output')}"
