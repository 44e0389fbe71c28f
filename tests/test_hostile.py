"""Hostile submissions must still yield a complete, truthful results.json in bounded time (staff only).

Each submission is the reference `student_code.py` with one hostile change (tests/grading_fixtures/
variants.py): endless loops at import and in one function, a function that sleeps forever (wall-clock
cap), `sys.exit` / `os._exit` at import and inside
functions, a segfault, a memory bomb, monkeypatching torch (with a wrong convolution), planting fake
results files (also from an escaped grandchild), huge output, an exception at import, a syntax error and
missing names. They are graded concurrently with short time limits (`timeout_scale`) and only the items
named in `PARTS`, and each test checks the scores and the reasons given. Two of them run through the command
line: the fake-results one (as a child of this user, and, when running as root with a system Python 3.11
that can load this environment's torch, as `nobody`).

Run: python -m pytest tests/test_hostile.py  (about a minute of CPU; the submissions run in parallel)
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import pytest

from grading_fixtures import shared, variants

from grading import rubric, sandbox  # noqa: E402 (path set by grading_fixtures.shared)
from grading.grade import grade_submission  # noqa: E402

AUTOGRADE = os.path.join(shared.ROOT, "tools", "autograde.py")
# name -> (items graded, timeout scale)
PARTS = {
    "import_loop": ("2a", 0.1),
    "function_loop": ("3a,3b", 0.1),
    "sleep_in_function": ("2a", 0.1),
    "sys_exit_import": ("2a", 1.0),
    "os_exit_import": ("2a", 1.0),
    "exits_in_functions": ("2a,2b", 1.0),
    "segfault": ("3a,3b", 1.0),
    "memory_bomb": ("1b-iii", 1.0),
    "monkeypatch": ("1a", 1.0),
    "huge_output": ("2a", 1.0),
    "raise_at_import": ("2a", 1.0),
    "syntax_error": (None, 1.0),
    "missing_names": ("2a,2b", 1.0),
}
pytestmark = pytest.mark.slow  # about 90 s of CPU in all (some 20 sandboxes, each importing torch)
MEMORY_MB = 5000  # address-space limit for the memory bomb (torch alone needs about 4 GB of address space)
SYSTEM_PYTHON = "/usr/bin/python3.11"


class QuickWallLimits(sandbox.Limits):
    """Wall-clock caps with 2 s of slack instead of 20 (for the submission that sleeps)."""

    WALL_SLACK_S = 2.0


def _grade(folder, parts, scale):
    name = os.path.basename(folder)
    mem = MEMORY_MB if name == "memory_bomb" else None
    limits = (QuickWallLimits if name == "sleep_in_function" else sandbox.Limits)(timeout_scale=scale, mem_mb=mem)
    t0 = time.monotonic()
    results, _ = grade_submission(folder, shared.kit(), rubric.parse_parts(parts), limits)
    return results, time.monotonic() - t0


def _can_drop_with_system_python():
    return (hasattr(os, "geteuid") and os.geteuid() == 0 and os.path.exists(SYSTEM_PYTHON)
            and sys.version_info[:2] == (3, 11) and sandbox._probe_drop(SYSTEM_PYTHON)[0] is not None)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Grade every hostile submission (in-process grader, 3 at a time) and the fake-results one through the
    command line (as this user, and as nobody when possible), all concurrently."""
    tmp = tmp_path_factory.mktemp("hostile")
    cli = {}
    fake = variants.write_submission(str(tmp / "fake_results"), variants.hostile("fake_results"))
    modes = {"same_user": {"AUTOGRADE_NO_DROP": "1"}}
    if _can_drop_with_system_python():
        modes["nobody"] = {"AUTOGRADE_CHILD_PYTHON": SYSTEM_PYTHON}
    for mode, env in modes.items():
        results = tmp / mode / "results" / "results.json"
        results.parent.mkdir(parents=True)
        proc = subprocess.Popen([sys.executable, AUTOGRADE, fake, "--results", str(results), "--parts", "2a"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env}, cwd=str(tmp / mode))
        cli[mode] = (proc, results, time.monotonic())
    shared.kit()
    out = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {}
        for name, (parts, scale) in PARTS.items():
            folder = variants.write_submission(str(tmp / name), variants.hostile(name))
            futures[name] = pool.submit(_grade, folder, parts, scale)
        for name, fut in futures.items():
            out[name] = fut.result()
    for mode, (proc, results, t0) in cli.items():
        rc = proc.wait(timeout=600)
        out["cli_" + mode] = (rc, proc.stderr.read(), results, time.monotonic() - t0, tmp / mode)
    time.sleep(3.0)  # an escaped planter would have rewritten the results by now
    return out


def _tests(hostile, name):
    results, seconds = hostile[name]
    assert seconds < 240, f"{name} took {seconds:.0f} s"
    numbers = rubric.parse_parts(PARTS[name][0])
    tests = shared.by_number(results)
    assert list(tests) == list(numbers), f"{name}: every graded item is listed"
    assert results["score"] == sum(t["score"] for t in tests.values())
    json.dumps(results)
    return tests


def test_endless_loop_at_import_fails_every_item_in_bounded_time(hostile):
    t = _tests(hostile, "import_loop")["2a"]
    assert t["score"] == 0 and "importing student_code.py did not finish" in t["output"], t["output"]


def test_endless_loop_in_one_function_fails_only_that_item(hostile):
    tests = _tests(hostile, "function_loop")
    assert tests["3a"]["score"] == 0 and "did not finish within its time limit" in tests["3a"]["output"]
    assert tests["3b"]["score"] == 2, tests["3b"]["output"]


def test_code_that_waits_forever_hits_the_wall_clock_cap(hostile):
    t = _tests(hostile, "sleep_in_function")["2a"]
    assert t["score"] == 0 and "wall-clock time" in t["output"], t["output"]
    assert hostile["sleep_in_function"][1] < 120


@pytest.mark.parametrize("name, words", [
    ("sys_exit_import", "SystemExit"),
    ("os_exit_import", "exited with code 0"),
    ("raise_at_import", "RuntimeError: boom at import (student_code.py line"),
])
def test_failing_import_is_reported(hostile, name, words):
    t = _tests(hostile, name)["2a"]
    assert t["score"] == 0 and "importing student_code.py" in t["output"] and words in t["output"], t["output"]


def test_exits_inside_functions_cost_only_their_items(hostile):
    tests = _tests(hostile, "exits_in_functions")
    assert tests["2a"]["score"] == 0 and "exited with code 0" in tests["2a"]["output"], tests["2a"]["output"]
    # 2b runs on a correct Attention; only its default_vit_model (sys.exit) component is lost
    assert tests["2b"]["score"] == 1.5 and "SystemExit" in tests["2b"]["output"], tests["2b"]["output"]


def test_segfault_fails_its_item_and_the_rest_is_graded(hostile):
    tests = _tests(hostile, "segfault")
    assert tests["3a"]["score"] == 0 and "segmentation fault" in tests["3a"]["output"], tests["3a"]["output"]
    assert tests["3b"]["score"] == 2, tests["3b"]["output"]


def test_memory_bomb_hits_the_memory_limit(hostile):
    t = _tests(hostile, "memory_bomb")["1b-iii"]
    assert t["score"] == 0 and "MemoryError" in t["output"], t["output"]


def test_monkeypatching_torch_does_not_help(hostile):
    t = _tests(hostile, "monkeypatch")["1a"]
    assert t["score"] == 0 and "max abs diff" in t["output"], t["output"]


def test_huge_output_is_harmless(hostile):
    t = _tests(hostile, "huge_output")["2a"]
    assert t["score"] == 2, t["output"]


def test_syntax_error_fails_every_item_without_running_anything(hostile):
    results, seconds = hostile["syntax_error"]
    tests = shared.by_number(results)
    assert list(tests) == list(rubric.DISPLAY_ORDER) and results["score"] == 0
    assert all("SyntaxError" in t["output"] and "line" in t["output"] for t in tests.values())
    assert seconds < 5, "no sandbox is started for a file that does not parse"


def test_missing_names_fail_only_their_items(hostile):
    tests = _tests(hostile, "missing_names")
    assert tests["2a"]["score"] == 0 and "no attribute 'Attention'" in tests["2a"]["output"], tests["2a"]["output"]
    assert tests["2b"]["score"] == 2, tests["2b"]["output"]


@pytest.mark.parametrize("mode", ["same_user", "nobody"])
def test_fake_results_files_do_not_matter(hostile, mode):
    if "cli_" + mode not in hostile:
        pytest.skip(f"needs root and {SYSTEM_PYTHON} able to load this environment's torch")
    rc, stderr, results, seconds, _ = hostile["cli_" + mode]
    assert rc == 0, stderr
    res = json.loads(results.read_text())
    assert res["score"] == 2 and [t["number"] for t in res["tests"]] == ["2a"], res
    assert "FAKE" not in json.dumps(res)
    assert seconds < 240
