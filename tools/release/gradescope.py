"""The two Gradescope entry points of the autograder bundle, as text (written by `make_release.py`).

- `setup.sh` runs once when the autograder image is built: bubblewrap (the grader's sandbox), a virtual
  environment at /autograder/venv with the kit's pinned requirements (CPU wheels of torch: Gradescope
  machines have no GPU).
- `run_autograder` runs per submission: the grader reads /autograder/submission (the student's upload,
  `student_code.py` at its top) and writes /autograder/results/results.json, taking the given files and
  the tests from its own copies in /autograder/source (`--kit`), never from the submission. It first makes
  /autograder/source private to root (the reference and the grader must be unreadable to the sandbox's
  unprivileged uid when bwrap cannot create namespaces and the grader falls back to `uid` isolation).
"""

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope: build the grading environment once (the bundle is unpacked in /autograder/source).
set -euo pipefail
cd /autograder/source
if ! python3 -m venv --help >/dev/null 2>&1 || ! command -v bwrap >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-pip bubblewrap
fi
python3 -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --no-cache-dir --upgrade pip
/autograder/venv/bin/python -m pip install --no-cache-dir \\
    --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
/autograder/venv/bin/python -c "import torch, torchvision, cv2, numpy, pytest; print('torch', torch.__version__)"
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope: grade one submission. tools/autograde.py always writes a complete results.json.
cd /autograder/source
PY=/autograder/venv/bin/python
[ -x "$PY" ] || PY=python3
mkdir -p /autograder/results
chmod -R go-rwx /autograder/source 2>/dev/null || true
exec "$PY" tools/autograde.py /autograder/submission --results /autograder/results/results.json \\
    --kit /autograder/source
"""
