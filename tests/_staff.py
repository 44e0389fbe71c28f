"""Helpers shared by the staff-only tests (release builder, mutation suite, grader, submission packaging).

Importing it puts the staff `tools` folder on `sys.path`. It never ships to students (it names that folder,
see tools/release/files.py `staff_only_test`).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
for _path in (ROOT, TOOLS):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def reference_source():
    """The reference `student_code.py` of this repository, as text."""
    with open(os.path.join(ROOT, "student_code.py"), encoding="utf-8") as fh:
        return fh.read()

