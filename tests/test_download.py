"""download_dataset.sh, run offline against fake `gdown` and `curl`.

The script runs with a PATH holding only symlinks to the system tools it needs
plus fake `gdown` / `curl` scripts that serve a tiny archive and tiny lists
built here and log every call.  Run: pytest tests/test_download.py
"""
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "download_dataset.sh"
SYSTEM_TOOLS = ("bash", "env", "tar", "gzip", "find", "wc", "mkdir", "mv", "rm", "rmdir", "cp", "cat", "cut",
                "tr", "sort", "mktemp", "md5sum", "dirname", "basename", "ls", "sed", "head")
COUNTS = {"train": 3, "val": 2, "test": 2}
ARCHIVE_URL = "https://example.invalid/miniplaces/data.tar.gz"

FAKE_GDOWN = r"""#!/usr/bin/env bash
echo "gdown $*" >>"$FAKE_LOG"
[ "${FAKE_GDOWN_FAIL:-0}" = 1 ] && { echo "gdown: simulated failure" >&2; exit 1; }
out=""
while [ $# -gt 0 ]; do case "$1" in -O) out="$2"; shift 2;; *) shift;; esac; done
cp "$FAKE_FILES/gdown.tar.gz" "$out"
"""

FAKE_CURL = r"""#!/usr/bin/env bash
echo "curl $*" >>"$FAKE_LOG"
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in -o|-C|--retry) [ "$1" = -o ] && out="$2"; shift 2;; -*) shift;; *) url="$1"; shift;; esac
done
src="$FAKE_FILES/${url##*/}"
[ -f "$src" ] || { echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; }
cp "$src" "$out"
"""


def _md5(data):
    return hashlib.md5(data).hexdigest()


def _make_archive(prefix, counts=COUNTS):
    """A tar.gz with `<prefix>train/a/abbey/0000000i.jpg`, `<prefix>val/...`, `<prefix>test/...`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split, n in counts.items():
            for i in range(n):
                sub = "a/abbey/" if split == "train" else ""
                data = f"fake jpeg {split} {i}".encode()
                info = tarfile.TarInfo(f"{prefix}{split}/{sub}{i + 1:08d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Env:
    """A sandbox: fake tools on PATH, served files, a call log, and DEST."""

    def __init__(self, tmp_path, prefix="images/", with_gdown=True, with_curl=True):
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.files = tmp_path / "served"
        self.log = tmp_path / "calls.log"
        self.dest = tmp_path / "data"
        self.bin.mkdir()
        self.files.mkdir()
        self.log.touch()
        for tool in SYSTEM_TOOLS:
            found = shutil.which(tool)
            if found:
                (self.bin / tool).symlink_to(found)
        for name, text, wanted in (("gdown", FAKE_GDOWN, with_gdown), ("curl", FAKE_CURL, with_curl)):
            if wanted:
                (self.bin / name).write_text(text)
                (self.bin / name).chmod(0o755)
        self.train_list = b"train/a/abbey/00000001.jpg 0\ntrain/a/abbey/00000002.jpg 0\n"
        self.val_list = b"val/00000001.jpg 0\nval/00000002.jpg 0\n"
        (self.files / "train.txt").write_bytes(self.train_list)
        (self.files / "val.txt").write_bytes(self.val_list)
        archive = _make_archive(prefix)
        (self.files / "gdown.tar.gz").write_bytes(archive)
        (self.files / "data.tar.gz").write_bytes(archive)
        self.env = {
            "PATH": str(self.bin), "HOME": str(tmp_path), "LC_ALL": "C",
            "FAKE_LOG": str(self.log), "FAKE_FILES": str(self.files),
            "MINIPLACES_ARCHIVE_URL": ARCHIVE_URL,
            "MINIPLACES_LISTS_URL": "https://example.invalid/lists",
            "MINIPLACES_TRAIN_MD5": _md5(self.train_list), "MINIPLACES_VAL_MD5": _md5(self.val_list),
            "MINIPLACES_EXPECT_TRAIN": str(COUNTS["train"]), "MINIPLACES_EXPECT_VAL": str(COUNTS["val"]),
            "MINIPLACES_EXPECT_TEST": str(COUNTS["test"]),
        }

    def run(self, **overrides):
        env = dict(self.env, **overrides)
        return subprocess.run([shutil.which("bash"), str(SCRIPT), str(self.dest)], env=env, cwd=self.tmp,
                              capture_output=True, text=True, timeout=60)

    def calls(self, tool):
        return [line for line in self.log.read_text().splitlines() if line.startswith(tool + " ")]


def _describe(proc):
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _last_error(proc):
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def _assert_complete(dest):
    for split, n in COUNTS.items():
        got = len([p for p in (dest / "images" / split).rglob("*.jpg")])
        assert got == n, f"{split}: {got} images, expected {n}"
    assert (dest / "train.txt").is_file() and (dest / "val.txt").is_file()
    test_lines = (dest / "test.txt").read_text().split()
    assert test_lines == ["test/00000001.jpg", "test/00000002.jpg"], test_lines
    leftovers = [p.name for p in dest.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left in DEST: {leftovers}"


def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} is not executable"


@pytest.mark.parametrize("prefix", ["images/", "data/images/", ""])
def test_success_for_each_archive_layout(tmp_path, prefix):
    env = Env(tmp_path, prefix=prefix)
    proc = env.run()
    assert proc.returncode == 0, _describe(proc)
    _assert_complete(env.dest)
    assert len(env.calls("gdown")) == 1, env.log.read_text()
    assert not any(ARCHIVE_URL in c for c in env.calls("curl")), "curl fallback used although gdown worked"


def test_rerun_is_idempotent(tmp_path):
    env = Env(tmp_path)
    first = env.run()
    assert first.returncode == 0, _describe(first)
    (env.dest / "categories.txt").write_text("/a/abbey 0\n")  # so the re-run has nothing at all to fetch
    n_curl = len(env.calls("curl"))
    second = env.run()
    assert second.returncode == 0, _describe(second)
    assert "nothing to do" in second.stdout, _describe(second)
    assert len(env.calls("gdown")) == 1, f"gdown called again:\n{env.log.read_text()}"
    assert len(env.calls("curl")) == n_curl, f"curl called again:\n{env.log.read_text()}"
    _assert_complete(env.dest)


def test_incomplete_images_are_replaced(tmp_path):
    env = Env(tmp_path)
    stale = env.dest / "images" / "train"
    stale.mkdir(parents=True)
    (stale / "00000099.jpg").write_bytes(b"old")
    proc = env.run()
    assert proc.returncode == 0, _describe(proc)
    _assert_complete(env.dest)
    assert not (stale / "00000099.jpg").exists()


@pytest.mark.parametrize("gdown_mode", ["failing", "missing"])
def test_curl_fallback(tmp_path, gdown_mode):
    env = Env(tmp_path, with_gdown=(gdown_mode == "failing"))
    proc = env.run(FAKE_GDOWN_FAIL="1")
    assert proc.returncode == 0, _describe(proc)
    _assert_complete(env.dest)
    assert any(ARCHIVE_URL in c for c in env.calls("curl")), env.log.read_text()


@pytest.mark.parametrize("var,name", [("MINIPLACES_TRAIN_MD5", "train.txt"), ("MINIPLACES_VAL_MD5", "val.txt")])
def test_checksum_mismatch(tmp_path, var, name):
    env = Env(tmp_path)
    proc = env.run(**{var: "0" * 32})
    assert proc.returncode != 0, _describe(proc)
    err = _last_error(proc)
    assert err.startswith("error: checksum mismatch") and name in err, _describe(proc)
    assert not (env.dest / name).exists(), f"{name} with a bad checksum was kept"


def test_corrupt_archive(tmp_path):
    env = Env(tmp_path)
    (env.files / "gdown.tar.gz").write_bytes(b"<html>quota exceeded</html>")
    (env.files / "data.tar.gz").write_bytes(b"\x1f\x8b truncated gzip")
    proc = env.run()
    assert proc.returncode != 0, _describe(proc)
    assert _last_error(proc).startswith("error:") and "corrupt" in _last_error(proc), _describe(proc)
    assert not (env.dest / "images").exists(), "images/ created from a corrupt archive"


@pytest.mark.parametrize("split", ["TRAIN", "VAL", "TEST"])
def test_wrong_counts(tmp_path, split):
    env = Env(tmp_path)
    proc = env.run(**{f"MINIPLACES_EXPECT_{split}": "5"})
    assert proc.returncode != 0, _describe(proc)
    assert _last_error(proc).startswith("error: wrong image counts"), _describe(proc)
    assert not (env.dest / "images").exists(), "images/ created despite wrong counts"
    assert not [p for p in env.dest.iterdir() if p.name.startswith(".extract")], "half-extracted folder left"


def test_download_failure(tmp_path):
    env = Env(tmp_path)
    proc = env.run(FAKE_GDOWN_FAIL="1", MINIPLACES_ARCHIVE_URL="https://example.invalid/missing.tar.gz")
    assert proc.returncode != 0, _describe(proc)
    assert _last_error(proc).startswith("error: could not download the image archive"), _describe(proc)


def test_list_download_failure(tmp_path):
    env = Env(tmp_path)
    (env.files / "val.txt").unlink()
    proc = env.run()
    assert proc.returncode != 0, _describe(proc)
    assert _last_error(proc).startswith("error: could not download") and "val.txt" in _last_error(proc), \
        _describe(proc)


def test_missing_curl(tmp_path):
    env = Env(tmp_path, with_curl=False)
    proc = env.run()
    assert proc.returncode != 0, _describe(proc)
    assert _last_error(proc).startswith("error: 'curl' is required"), _describe(proc)


def test_bad_count_override(tmp_path):
    env = Env(tmp_path)
    proc = env.run(MINIPLACES_EXPECT_VAL="ten")
    assert proc.returncode != 0, _describe(proc)
    assert _last_error(proc).startswith("error: MINIPLACES_EXPECT_VAL"), _describe(proc)
