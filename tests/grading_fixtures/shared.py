"""One `grading.grade.Kit` per test process (the kit's reference outputs are computed once and shared by
tests/test_autograde.py and tests/test_hostile.py), and the import path of the staff tools."""
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)


@functools.lru_cache(maxsize=None)
def kit():
    """The kit of this repository (reference module loaded; per-item inputs/outputs cached in it)."""
    from grading import grade

    return grade.Kit(ROOT)


def by_number(results):
    """`{item number: test entry}` of a results dict."""
    return {t["number"]: t for t in results["tests"]}
