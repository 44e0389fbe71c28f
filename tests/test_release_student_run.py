"""Staff test: a student's first steps in a freshly built release, as the handout describes them.

One `tools/make_release.py OUT --no-grade` build, then inside `OUT/release`: Part 1a filled with the reference
answer (`tools/first_hour.py fill_parts`), the self-check of that part (`python -m pytest tests --part 1a`:
short report, points table last, 1a full marks), a training run that needs Part 1a and not Part 3 (exit 0),
`-a`, which needs Part 3a (exit 3 before any training, naming the part), and `python zip_submission.py`
(a 0644 zip holding student_code.py). Minutes on 2 cores, hence `slow`.

Run: python -m pytest tests/test_release_student_run.py -m slow
"""
import os
import subprocess
import sys
import zipfile

import pytest

import custom_dataloader
from _staff import ROOT, TOOLS, reference_source

import first_hour  # noqa: E402 (tools/ is on sys.path through _staff)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A fresh release whose student_code.py has Part 1a solved and every other part still a stub, and a
    tiny dataset folder next to it."""
    out = tmp_path_factory.mktemp("student_run")
    proc = subprocess.run([sys.executable, os.path.join(TOOLS, "make_release.py"), str(out), "--no-grade"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, f"make_release failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    rel = out / "release"
    assert first_hour.fill_parts(reference_source(), []) == (rel / "student_code.py").read_text(encoding="utf-8"), \
        "fill_parts with no part filled must give the release's own stub"
    (rel / "student_code.py").write_text(first_hour.fill_parts(reference_source(), ["1a"]), encoding="utf-8")
    custom_dataloader.build_synthetic_dataset(out / "data", seed=1, num_classes=4, train_per_class=8,
                                              val_per_class=4, test_per_class=1)
    return rel


def run(rel, *cmd, timeout=900):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, *cmd], cwd=rel, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def test_self_check_of_the_filled_part(release):
    proc = run(release, "-m", "pytest", "tests", "--part", "1a", "-p", "no:cacheprovider")
    lines = proc.stdout.rstrip("\n").splitlines()
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert lines[-1].startswith("tests: ") and " 0 failed" in lines[-1], lines[-5:]
    row = next(line for line in lines if line.startswith("1a "))
    assert row.split()[1] == "2/2", row
    assert "failing checks" not in proc.stdout and "short test summary" not in proc.stdout


def test_training_that_needs_only_the_filled_part_finishes(release):
    data = str(release.parent / "data")
    common = ["--img-size", "32", "-b", "8", "-j", "0", "--epochs", "1", "--log-dir", str(release.parent / "logs")]
    proc = run(release, "main.py", data, "--use-simplenet", "--use-custom-conv", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "******Acc@1" in proc.stdout
    proc = run(release, "main.py", data, "-a", *common)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "not implemented yet: Part 1b-iii" in proc.stderr and "Part 3a" in proc.stderr, proc.stderr
    assert "epoch 1/1" not in proc.stdout


def test_zip_of_the_partial_work(release):
    proc = run(release, "zip_submission.py", "--out", "submission.zip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = release / "submission.zip"
    assert os.stat(path).st_mode & 0o777 == 0o644
    with zipfile.ZipFile(path) as zf:
        assert "student_code.py" in zf.namelist()
        assert zf.read("student_code.py") == (release / "student_code.py").read_bytes()
