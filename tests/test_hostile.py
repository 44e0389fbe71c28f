"""Hostile submissions must still yield a complete, truthful results.json in bounded time (staff only).

Each submission is the reference `student_code.py` (or the stripped release) with one hostile change
(tests/grading_fixtures/variants.py): endless loops at import and in one function, a function that sleeps
forever (wall-clock cap), `sys.exit` / `os._exit` at import and inside functions, a segfault, a memory bomb,
monkeypatching torch, planting fake results files (also from an escaped grandchild), killing the grader
and every process it can see, stealing the reference (from /proc/<ppid>/cmdline's --kit, the repository
path, /autograder/source), reading hidden tests into error messages, a stride-0 output that would expand
to gigabytes in the grader, forbidden operators run in a worker thread or as a decomposed ATen operator,
a forbidden call hidden by a `# coding: utf-7` line, `CustomConv2d = nn.Conv2d`, replacing the sandbox's
runner (by name, and found without naming it), one submission of a batch attacking the others, huge
output, an exception at import, a syntax error and missing names. They are graded concurrently with short
time limits (`timeout_scale`) and only the items named in `PARTS`; each test checks the scores and the
reasons given. The fake-results / kill / steal attacks also run through the command line and through the
bundle's `run_autograder` (its text from tools/release/gradescope.py, with /autograder moved to a temp
folder).

Run: python -m pytest tests/test_hostile.py -m slow  (a few minutes of CPU; submissions run in parallel)
"""
import concurrent.futures
import csv
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
    "steal_reference": ("1a,1b-iii,2a,3b", 1.0),
    "hidden_text": ("2a", 1.0),
    "thread_dodge": ("1a", 1.0),
    "aten_decomposed": ("2a", 1.0),
    "utf7": ("1a", 1.0),
    "conv_alias": ("1a,1b-i,1b-ii,1b-iv", 1.0),
    "replace_runner": ("1b-iii", 1.0),
    "replace_runner_hidden": ("1b-iii", 1.0),
    "hang_in_part_1": ("1a,3b", 0.1),
}
pytestmark = pytest.mark.slow  # about 90 s of CPU in all (some 20 sandboxes, each importing torch)
MEMORY_MB = 5000  # address-space limit for the memory bomb (torch alone needs about 4 GB of address space)
GRADER_MEM_MB = 8000  # the grading process's own limit in the command-line runs (the stride-0 output)
HIDDEN_MARKER = "def test_"  # in every hidden test file; must never reach an output


class QuickWallLimits(sandbox.Limits):
    """Wall-clock caps with 2 s of slack instead of 20 (for the submission that sleeps)."""

    WALL_SLACK_S = 2.0


def _grade(folder, parts, scale, supervisor):
    name = os.path.basename(folder)
    mem = MEMORY_MB if name == "memory_bomb" else None
    limits = (QuickWallLimits if name == "sleep_in_function" else sandbox.Limits)(timeout_scale=scale, mem_mb=mem)
    t0 = time.monotonic()
    results, _ = grade_submission(folder, shared.kit(), rubric.parse_parts(parts), limits, supervisor,
                                  parallel_groups=1 if name == "hang_in_part_1" else None)
    return results, time.monotonic() - t0


def _text(name):
    if name == "utf7":
        return variants.utf7_hidden(variants.inject(variants.reference_text(), "CustomConv2DFunction", "forward",
                                                    "return F.conv2d(input_feats, weight, bias, stride, padding)"),
                                    "F.conv2d")
    if name == "hang_in_part_1":
        return variants.inject(variants.reference_text(), "CustomConv2DFunction", "forward", "while True:\n    pass")
    return variants.hostile(name)


def _write(folder, text):
    variants.write_submission(folder, text if isinstance(text, str) else "")
    if not isinstance(text, str):
        with open(os.path.join(folder, "student_code.py"), "wb") as f:
            f.write(text)
    return folder


def _bundle(tmp):
    """A Gradescope layout under `tmp/autograder` (source = the grader + kit files) and its run_autograder
    script with /autograder moved there."""
    import shutil

    from release import gradescope

    root = tmp / "autograder"
    source = root / "source"
    shutil.copytree(os.path.join(shared.ROOT, "tools", "grading"), source / "tools" / "grading",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(shared.ROOT, "tools", "autograde.py"), source / "tools" / "autograde.py")
    for name in ("student_code.py", "custom_blocks.py", "custom_augment.py", "custom_dataloader.py"):
        shutil.copy(os.path.join(shared.ROOT, name), source / name)
    (root / "venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, root / "venv" / "bin" / "python")
    script = root / "run_autograder"
    script.write_text(gradescope.RUN_AUTOGRADER.replace("/autograder", str(root)).replace(
        f"{root}/venv/bin/python", sys.executable))
    return root, script


SYSTEM_PYTHON = "/usr/bin/python3.11"  # for the uid level: an interpreter other uids may run


def _uid_level_possible():
    """Root, and a system Python of this version that can load this environment's torch as the grader's
    dedicated uid (an environment inside a private folder, such as a `mktemp -d`, is out of its reach)."""
    if os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON) or sys.version_info[:2] != (3, 11):
        return False
    proc = subprocess.run([SYSTEM_PYTHON, "-I", "-c", f"import sys; sys.path.append({sandbox.torch_site()!r}); "
                           "import torch"], capture_output=True, timeout=120, cwd="/",
                          user=sandbox.UID_BASE, group=sandbox.UID_BASE, extra_groups=[],
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"})
    return proc.returncode == 0


def _cli_attack_text():
    """Fake results files at import (and from an escaped grandchild), then SIGKILL for everyone in 3a."""
    return variants.inject(variants.hostile("fake_results"), "PGDAttack", "perturb", variants.KILL_EVERYONE)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Grade every hostile submission (in-process grader, 2 at a time), the fake-results + kill-everyone one
    through the command line and through the bundle's run_autograder, a stride-0 output through the command
    line with the grader's memory capped, and a batch where one submission attacks the others."""
    tmp = tmp_path_factory.mktemp("hostile")
    # one sandbox at a time per command-line run: a dozen torch processes at once would crowd a small machine
    env = {**os.environ, "AUTOGRADE_GRADER_MEM_MB": str(GRADER_MEM_MB), "AUTOGRADE_PARALLEL": "1"}
    procs = {}
    attack = _write(str(tmp / "cli_attack"), _cli_attack_text())
    results = tmp / "cli" / "results" / "results.json"
    results.parent.mkdir(parents=True)
    procs["cli"] = (subprocess.Popen([sys.executable, AUTOGRADE, attack, "--results", str(results), "--parts",
                                      "3a,3b"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env, cwd=str(tmp / "cli")), results)
    root, script = _bundle(tmp)
    _write(str(root / "submission"), _cli_attack_text())
    procs["bundle"] = (subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env), root / "results" / "results.json")
    if _uid_level_possible():  # the fallback where bwrap has no namespaces: a dedicated uid, kit private
        root_u, script_u = _bundle(tmp / "uid")
        _write(str(root_u / "submission"), _cli_attack_text())
        procs["bundle_uid"] = (subprocess.Popen(["bash", str(script_u)], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True,
                                                env={**env, "AUTOGRADE_ISOLATION": "uid",
                                                     "AUTOGRADE_CHILD_PYTHON": SYSTEM_PYTHON}),
                               root_u / "results" / "results.json")
    stride = _write(str(tmp / "stride_zero"), variants.hostile("stride_zero"))
    results = tmp / "stride" / "results.json"
    procs["stride"] = (subprocess.Popen([sys.executable, AUTOGRADE, stride, "--results", str(results), "--parts",
                                         "1a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env),
                       results)
    batch = tmp / "batch"
    _write(str(batch / "attacker"), variants.hostile("batch_attacker"))
    for name in ("honest_1", "honest_2"):
        _write(str(batch / name), variants.reference_text())
    procs["batch"] = (subprocess.Popen([sys.executable, AUTOGRADE, "--batch", str(batch), "--csv",
                                        str(tmp / "grades" / "grades.csv"), "-j", "2", "--parts", "2a"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env),
                      tmp / "grades" / "grades.csv")
    started = time.monotonic()
    shared.kit()
    supervisor = sandbox.Supervisor()
    out = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {}
        for name, (parts, scale) in PARTS.items():
            folder = _write(str(tmp / name), _text(name))
            futures[name] = pool.submit(_grade, folder, parts, scale, supervisor)
        for name, fut in futures.items():
            out[name] = fut.result()
    for mode, (proc, path) in procs.items():
        rc = proc.wait(timeout=900)
        out["cli_" + mode] = (rc, proc.stdout.read() + proc.stderr.read(), path, time.monotonic() - started)
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


@pytest.mark.parametrize("mode", ["cli", "bundle", "bundle_uid"])
def test_fake_results_and_killing_everyone_do_not_matter(hostile, mode):
    """Fake results.json files (also from an escaped grandchild) and SIGKILL to the parent, to -1 and to
    every pid: the grader ends normally with a complete, truthful results.json (bundle_uid: the same under
    the `uid` fallback level)."""
    if "cli_" + mode not in hostile:
        pytest.skip(f"the uid level needs root and {SYSTEM_PYTHON} able to load this environment's torch "
                    f"as uid {sandbox.UID_BASE}")
    rc, output, results, seconds = hostile["cli_" + mode]
    assert rc == 0, output
    res = json.loads(results.read_text())
    tests = shared.by_number(res)
    # the command line grades 3a,3b; run_autograder every item (the attack is appended to the reference)
    assert list(tests) == (["3a", "3b"] if mode == "cli" else list(rubric.DISPLAY_ORDER)), res
    # the signals reach nothing outside the sandbox; the (honest) attack itself still earns its points
    assert all(t["score"] == t["max_score"] for t in tests.values()), res
    assert "FAKE" not in json.dumps(res)
    assert res["extra_data"]["staff"]["isolation"] == ("uid" if mode == "bundle_uid" else "bwrap")
    assert seconds < 600


def test_stride_zero_output_cannot_blow_up_the_grader(hostile):
    rc, output, results, _ = hostile["cli_stride"]
    assert rc == 0, output  # the grader ran with its address space capped at GRADER_MEM_MB
    t = shared.by_number(json.loads(results.read_text()))["1a"]
    assert t["score"] in (0, 2), t["output"]  # the forged file was refused, or the real one read in time
    if t["score"] == 0:
        assert "malformed" in t["output"] and "contiguous" in t["output"], t["output"]


def test_one_submission_of_a_batch_cannot_touch_the_others(hostile):
    rc, output, csv_path, _ = hostile["cli_batch"]
    assert rc == 0, output
    with open(csv_path) as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert rows["honest_1"]["total"] == "2" and rows["honest_2"]["total"] == "2", rows
    assert rows["attacker"]["total"] == "0", rows


def test_the_reference_cannot_be_stolen(hostile):
    tests = _tests(hostile, "steal_reference")
    assert all(t["score"] == 0 for t in tests.values()), {n: t["output"] for n, t in tests.items()}
    for t in tests.values():
        assert "NotImplementedError" in t["output"], t["output"]


def test_no_hidden_or_grader_text_reaches_the_student(hostile):
    results, _ = hostile["hidden_text"]
    t = shared.by_number(results)["2a"]
    assert t["score"] == 0 and "LEAK:" in t["output"], t["output"]
    assert HIDDEN_MARKER not in json.dumps(results) and "def run(" not in json.dumps(results)


@pytest.mark.parametrize("name, item", [("thread_dodge", "1a"), ("aten_decomposed", "2a")])
def test_forbidden_operators_are_caught_in_threads_and_decomposed(hostile, name, item):
    results, _ = hostile[name]
    t = shared.by_number(results)[item]
    assert t["score"] == 0 and "forbidden operator" in t["output"], t["output"]
    review = " ".join(results["extra_data"]["staff"]["review"])
    assert "sys.modules" in review, review


def test_utf7_coding_line_does_not_hide_a_forbidden_call(hostile):
    results, _ = hostile["utf7"]
    t = shared.by_number(results)["1a"]
    assert t["score"] == 0 and "F.conv2d" in t["output"] and "line" in t["output"], t["output"]
    assert "utf-7" in " ".join(results["extra_data"]["staff"]["review"])


def test_conv_module_alias_earns_nothing_in_1b(hostile):
    tests = _tests(hostile, "conv_alias")
    assert tests["1a"]["score"] == 2, tests["1a"]["output"]  # its own custom_conv2d is honest
    for item in ("1b-i", "1b-ii", "1b-iv"):
        assert tests[item]["score"] == 0 and "forbidden" in tests[item]["output"], tests[item]["output"]


def test_replacing_the_runner_earns_nothing(hostile):
    t = _tests(hostile, "replace_runner")["1b-iii"]
    assert t["score"] == 0, t["output"]


def test_finding_the_runner_without_naming_it_earns_nothing_and_is_flagged(hostile):
    results, _ = hostile["replace_runner_hidden"]
    t = shared.by_number(results)["1b-iii"]
    assert t["score"] == 0, t["output"]  # the runners live in a module with a random name and no RUNNERS key
    assert "sys.modules" in " ".join(results["extra_data"]["staff"]["review"])


def test_a_hang_in_part_1_costs_no_points_elsewhere_on_one_cpu(hostile):
    tests = _tests(hostile, "hang_in_part_1")
    assert tests["1a"]["score"] == 0 and "time limit" in tests["1a"]["output"], tests["1a"]["output"]
    assert tests["3b"]["score"] == 2, tests["3b"]["output"]
