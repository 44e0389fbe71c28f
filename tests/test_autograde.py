"""Tests of the autograder (staff only; never shipped): `tools/autograde.py` and `tools/grading/`.

- unit checks (no sandbox): `--parts` parsing, the rubric, the trusted static scan, reading submissions
  (folder / zip), the safe output loader, tensor comparison, results.json rendering;
- the reference solution earns full marks (12 + 2 bonus) and the stripped release (every solution block
  replaced by `raise NotImplementedError`) earns 0 without a grader error, over every item;
- planted bugs lose exactly the component they break (partial credit), forbidden API use zeroes the item;
- the command line: zip and folder submissions, `--batch` with a CSV, bad arguments.

Hostile submissions are in tests/test_hostile.py. Run: python -m pytest tests/test_autograde.py
(about 40 s of CPU: the reference and the stub are each graded once, in parallel sandboxes).
"""
import concurrent.futures
import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest
import torch

from grading_fixtures import shared, variants

from grading import compare, outputs, rubric, sandbox, static  # noqa: E402 (path set by grading_fixtures.shared)
from grading import grade as grade_mod  # noqa: E402
from grading.items import pgd, vit as vit_item  # noqa: E402
from grading.grade import grade_submission  # noqa: E402
from grading.results import ItemGrade, build_results  # noqa: E402
from grading.submission import SubmissionError, read_source  # noqa: E402

SOLUTION_BEGIN = "BEGIN" + " SOLUTION"  # in two pieces: this file holds no solution marker of its own

AUTOGRADE = os.path.join(shared.ROOT, "tools", "autograde.py")
EXPECTED_MAX = {"1a": 2, "1b-i": 1, "1b-ii": 1, "1b-iii": 1, "1b-iv": 1, "2a": 2, "2b": 2, "3a": 2, "3b": 2}
GRADER_FAULTS = ("could not be checked", "grader error", "Traceback")


# ------------------------------------------------------------------------------------------------------
# unit checks
# ------------------------------------------------------------------------------------------------------
def test_rubric_matches_the_spec():
    assert {i.number: i.max_score for i in rubric.ITEMS} == EXPECTED_MAX
    assert rubric.TOTAL == 12 and rubric.BONUS == 2
    assert [i.number for i in rubric.ITEMS if i.bonus] == ["3b"]
    assert "bonus" in rubric.BY_NUMBER["3b"].name
    assert sorted(rubric.DISPLAY_ORDER) == sorted(EXPECTED_MAX)
    grouped = [n for items in rubric.groups_of(rubric.DISPLAY_ORDER).values() for n in items]
    assert sorted(grouped) == sorted(EXPECTED_MAX), "every item belongs to exactly one sandbox group"


@pytest.mark.parametrize("text, expected", [
    (None, tuple(rubric.DISPLAY_ORDER)),
    ("2a,1a", ("1a", "2a")),
    ("1", ("1a", "1b-i", "1b-ii", "1b-iii", "1b-iv")),
    ("1b, 3", ("1b-i", "1b-ii", "1b-iii", "1b-iv", "3a", "3b")),
    ("3B", ("3b",)),
    ("4", ("4a", "4b", "4c", "4d")),
    ("4c,1a", ("1a", "4c")),
])
def test_parse_parts(text, expected):
    assert rubric.parse_parts(text) == expected


def test_parse_parts_rejects_unknown_items():
    with pytest.raises(ValueError, match="5a"):
        rubric.parse_parts("1a,5a")


def test_optional_part4_follows_the_kits_course_parts(tmp_path):
    """Part 4 is graded by default only when course_parts.json ships it, with the course's points (every
    component scaled); without the file Parts 1-3 only."""
    assert [i.number for i in rubric.OPTIONAL_ITEMS] == list(rubric.OPTIONAL_ORDER)
    assert grade_mod.read_course_parts(str(tmp_path)) == (("1", "2", "3"), {})
    (tmp_path / "course_parts.json").write_text(json.dumps(
        {"parts": ["1", "2", "3", "4"], "part4_points": {"4a": 1.5, "4b": 1.5, "4c": 1.5, "4d": 1.5}}))
    parts, points = grade_mod.read_course_parts(str(tmp_path))
    assert parts == ("1", "2", "3", "4") and points["4c"] == 1.5
    g = ItemGrade("4c")
    g.add("a", 0.7, True)
    g.add("b", 0.3, False)
    g.rescale(1.5)
    assert g.item.max_score == 1.5 and abs(g.score - 1.05) < 1e-9
    (tmp_path / "course_parts.json").write_text("{not json")
    with pytest.raises(grade_mod.KitError):
        grade_mod.read_course_parts(str(tmp_path))


def test_static_scan_forbids_the_attribution_libraries():
    begin = f"        # {SOLUTION_BEGIN} (Part 4c)\n"
    src = variants.reference_text().replace(begin, begin + "        import captum.attr\n", 1)
    assert "attribution" in static.forbidden_uses(src)
    src = "from pytorch_grad_cam import GradCAM as G\n\n\nclass GradCAM(G):\n    pass\n"
    assert "attribution" in static.forbidden_uses(src)


def test_static_scan_finds_nothing_in_the_reference():
    assert static.forbidden_uses(variants.reference_text()) == {}
    assert static.syntax_error(variants.reference_text()) is None


FORBIDDEN_SOURCES = {
    "F.conv2d in forward": ("conv", "import torch.nn.functional as F\nclass CustomConv2DFunction:\n"
                                  "    def forward(ctx, x, w, b, s=1, p=0):\n        return F.conv2d(x, w, b, s, p)\n"),
    "aliased import": ("conv", "from torch.nn.functional import conv2d as c2\nclass CustomConv2DFunction:\n"
                             "    def forward(ctx, x, w, b, s=1, p=0):\n        return c2(x, w)\n"),
    "getattr with a string": ("conv", "import torch\nclass CustomConv2DFunction:\n    def forward(ctx, x, w):\n"
                                    "        return getattr(torch, 'conv2d')(x, w)\n"),
    "helper function": ("conv", "import torch\ndef helper(x, w):\n    return torch.nn.grad.conv2d_input(x.shape, w, x)\n"
                              "class CustomConv2DFunction:\n    def backward(ctx, g):\n        return helper(g, g)\n"),
    "sdpa in Attention": ("attention", "import torch.nn.functional as F\nclass Attention:\n    def forward(self, x):\n"
                                "        return F.scaled_dot_product_attention(x, x, x)\n"),
    "MultiheadAttention in Attention": ("attention", "import torch.nn as nn\nclass Attention:\n    def __init__(self):\n"
                                              "        self.m = nn.MultiheadAttention(8, 2)\n"),
}


@pytest.mark.parametrize("case", sorted(FORBIDDEN_SOURCES))
def test_static_scan_detects_forbidden_apis(case):
    item, source = FORBIDDEN_SOURCES[case]
    found = static.forbidden_uses(source)
    expected = ["conv", "conv_module"] if item == "conv" else [item]  # 1b's scope includes 1a's
    assert list(found) == expected, f"{case}: found {found}"
    assert "line" in found[item][0]


def test_static_scan_ignores_forbidden_names_outside_the_graded_scope():
    source = ("import torch.nn as nn\nimport torch.nn.functional as F\n"
              "def default_cnn_model(conv_op=nn.Conv2d):\n    return conv_op(3, 8, 3)\n"
              "class CustomConv2DFunction:\n    '''Do not call F.conv2d here.'''\n"
              "    def forward(ctx, x, w):\n        return F.unfold(x, 3)\n")
    assert static.forbidden_uses(source) == {}


def test_syntax_error_names_the_line():
    msg = static.syntax_error("x = 1\ndef f(:\n    pass\n")
    assert msg.startswith("SyntaxError") and "line 2" in msg


def test_read_source_from_folder_and_zip(tmp_path):
    text = "print('hi')\n"
    folder = variants.write_submission(str(tmp_path / "sub"), text)
    assert read_source(folder) == text.encode()
    nested = tmp_path / "nested" / "inner"
    variants.write_submission(str(nested), text)
    assert read_source(str(tmp_path / "nested")) == text.encode()
    zpath = variants.write_zip(str(tmp_path / "s.zip"), text)
    assert read_source(zpath) == text.encode()


@pytest.mark.parametrize("entries, reason", [
    ({"README.md": "x"}, "student_code.py at its top"),
    ({"a/student_code.py": "x", "b/student_code.py": "y"}, "student_code.py at its top"),
    ({"student_code.py": "#" * (3 * 1024 * 1024)}, "larger than"),
])
def test_read_source_rejects_bad_zips(tmp_path, entries, reason):
    zpath = tmp_path / "s.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    with pytest.raises(SubmissionError, match=reason):
        read_source(str(zpath))


def test_read_source_rejects_an_empty_folder(tmp_path):
    with pytest.raises(SubmissionError, match="no student_code.py"):
        read_source(str(tmp_path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/autograde-pwned",))


def test_output_loader_accepts_only_plain_regular_files(tmp_path):
    good = {"out": torch.ones(2), "names": ["a"], "n": 3}
    torch.save(good, tmp_path / "good.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": _Evil()}, f, protocol=2)
    (tmp_path / "text.pt").write_text("not a pickle")
    os.symlink(tmp_path / "good.pt", tmp_path / "link.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        obj, why = outputs.load(fd, "good.pt")
        assert why is None and torch.equal(obj["out"], good["out"]) and obj["n"] == 3
        for name, reason in (("evil.pt", "malformed"), ("text.pt", "malformed"), ("link.pt", "unreadable"),
                             ("fifo.pt", "not a regular file"), ("list.pt", "not a dict"),
                             ("absent.pt", "missing")):
            obj, why = outputs.load(fd, name)
            assert obj is None and reason in why, f"{name}: {why}"
    finally:
        os.close(fd)
    assert not os.path.exists("/tmp/autograde-pwned"), "the loader executed a pickle payload"


def test_close_reports_the_reason():
    e = torch.zeros(3, dtype=torch.float64)
    assert compare.close(e.clone(), e) == (True, "")
    for actual, words in ((None, "missing"), ("x", "not a tensor"), (torch.zeros(4, dtype=torch.float64), "shape"),
                          (torch.zeros(3), "dtype"), (torch.tensor([0, float("nan"), 0], dtype=torch.float64), "NaN"),
                          (torch.tensor([0, 0.5, 0], dtype=torch.float64), "max abs diff 5.00e-01")):
        ok, msg = compare.close(actual, e, what="forward")
        assert not ok and words in msg, msg


def test_default_attack_budget_check():
    """`default_attack` must carry the default budget: a larger epsilon changes nothing a 10-step attack of
    0.01 can reach, so only the attributes reveal it."""
    want = torch.tensor([10, 0.01, 0.1, 0.0], dtype=torch.float64)  # num_steps, step_size, epsilon, random_start
    assert pgd._budget_problem({"budget": want.clone()}, want) == ""
    wide = want.clone()
    wide[2] = 0.3
    assert "epsilon=0.3" in pgd._budget_problem({"budget": wide}, want)
    assert "unreadable" in pgd._budget_problem({"budget": None}, want)


def test_drop_path_rate_one_checks():
    """At rate 1 stochastic depth is deterministic: a block is the identity, a depth-2 ViT skips its last block."""
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    vit = torch.randn(2, 5, dtype=torch.float64)
    inp, exp = {"props": {"drop_one": {"block_x": x}}}, {"drop_vit": vit}
    assert vit_item._drop_rate_problems(inp, exp, {"block_out": x.clone(), "vit_out": vit.clone()}) == []
    problems = vit_item._drop_rate_problems(inp, exp, {"block_out": x + 1, "vit_out": vit + 1})
    assert len(problems) == 2 and "MLP branch" in problems[0] and "rise linearly" in problems[1], problems
    assert "raised" in vit_item._drop_rate_problems(inp, exp, {"error": "ValueError: x"})[0]


def test_results_json_format():
    g1, g2 = ItemGrade("1a"), ItemGrade("3b")
    g1.add("forward", 0.5, True)
    g1.add("grad_input", 1.5, False, "max abs diff 1e-1")
    g2.add("everything", 2.0, True)
    g2.forbid("used something")
    res = build_results([g2, g1], 1.234)
    assert res["score"] == 0.5 and res["execution_time"] == 1.23
    assert [t["number"] for t in res["tests"]] == ["1a", "3b"]
    t1, t2 = res["tests"]
    assert t1["score"] == 0.5 and t1["max_score"] == 2 and t1["status"] == "failed"
    assert "[FAIL 0/1.5] grad_input: max abs diff 1e-1" in t1["output"]
    assert t2["score"] == 0 and "forbidden" in t2["output"]
    for key in ("visibility", "stdout_visibility", "output"):
        assert key in res
    json.dumps(res)


# ------------------------------------------------------------------------------------------------------
# grading whole submissions (sandboxed children)
# ------------------------------------------------------------------------------------------------------
def _grade(tmp_path_factory, name, text, parts=None, scale=1.0):
    folder = variants.write_submission(str(tmp_path_factory.mktemp(name)), text)
    numbers = rubric.parse_parts(parts)
    results, status = grade_submission(folder, shared.kit(), numbers, sandbox.Limits(timeout_scale=scale))
    return results


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The reference and the stripped release, graded over every item, plus planted bugs (parts only)."""
    ref = variants.reference_text()
    jobs = {
        "reference": (ref, None),
        "stub": (variants.strip_solutions(ref), None),
        # planted bugs, each breaking one component
        "grad_weight_off": (ref + variants.textwrap.dedent('''
            _reference_backward = CustomConv2DFunction.backward
            def _backward(ctx, grad_output):
                gi, gw, gb, a, b = _reference_backward(ctx, grad_output)
                return gi, (None if gw is None else gw * 1.01), gb, a, b
            CustomConv2DFunction.backward = staticmethod(_backward)
            '''), "1a"),
        "attention_shifted": (ref + variants.textwrap.dedent('''
            _reference_forward = Attention.forward
            Attention.forward = lambda self, x: _reference_forward(self, x) + 1e-3
            '''), "2a"),
        "conv_calls_f_conv2d": (variants.inject(ref, "CustomConv2DFunction", "forward",
                                                "return F.conv2d(input_feats, weight, bias, stride, padding)"), "1a"),
        "crafts_in_train_mode": (ref + variants.textwrap.dedent('''
            def adversarial_training_step(model, input, target, criterion, optimizer, attacker, adv_fraction=1.0):
                n = int(round(adv_fraction * input.shape[0]))
                if n > 0:
                    input = torch.cat([attacker.perturb(model, input[:n], target[:n]), input[n:]])
                output = model(input)
                loss = criterion(output, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                return loss.detach(), output.detach()
            '''), "3b"),
    }
    shared.kit()  # load the reference once, before the threads
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_grade, tmp_path_factory, name, text, parts)
                   for name, (text, parts) in jobs.items()}
        return {name: fut.result() for name, fut in futures.items()}


def test_reference_gets_full_marks(graded):
    res = graded["reference"]
    tests = shared.by_number(res)
    assert list(tests) == list(rubric.DISPLAY_ORDER), "every item listed, in assignment order"
    lost = {n: t["output"] for n, t in tests.items() if t["score"] != t["max_score"]}
    assert not lost, f"the reference lost points: {lost}"
    assert res["score"] == 14
    assert {n: t["max_score"] for n, t in tests.items()} == EXPECTED_MAX
    assert all(t["status"] == "passed" and t["visibility"] == "visible" for t in tests.values())
    assert isinstance(res["execution_time"], (int, float)) and res["execution_time"] > 0
    assert res["visibility"] == "visible" and res["stdout_visibility"] == "visible"
    assert "12/12" in res["output"] and "bonus 2/2" in res["output"]


def test_stripped_release_gets_zero_without_grader_errors(graded):
    res = graded["stub"]
    tests = shared.by_number(res)
    assert list(tests) == list(rubric.DISPLAY_ORDER)
    assert res["score"] == 0, {n: (t["score"], t["output"]) for n, t in tests.items() if t["score"]}
    for number, t in tests.items():
        assert t["status"] == "failed" and t["max_score"] == EXPECTED_MAX[number]
        assert "NotImplementedError" in t["output"], f"{number}: {t['output']}"
        assert not any(f in t["output"] for f in GRADER_FAULTS), f"{number}: {t['output']}"


def test_wrong_grad_weight_loses_only_that_component(graded):
    t = shared.by_number(graded["grad_weight_off"])["1a"]
    assert t["score"] == 1.5, t["output"]
    assert "[FAIL 0/0.5] grad_weight" in t["output"] and "max abs diff" in t["output"]
    assert "stride=1, padding=1" in t["output"], "a public case is named with its configuration"


def test_shifted_attention_output_loses_the_forward_component(graded):
    t = shared.by_number(graded["attention_shifted"])["2a"]
    assert t["score"] == 1.0, t["output"]
    assert "[FAIL 0/1] output" in t["output"] and "max abs diff 1.00e-03" in t["output"]


def test_forbidden_convolution_zeroes_the_item(graded):
    t = shared.by_number(graded["conv_calls_f_conv2d"])["1a"]
    assert t["score"] == 0 and "forbidden" in t["output"], t["output"]
    assert "F.conv2d" in t["output"], "the trusted static scan names the call"


def test_crafting_in_train_mode_fails_adversarial_training(graded):
    t = shared.by_number(graded["crafts_in_train_mode"])["3b"]
    assert t["score"] == 0, t["output"]
    assert "BatchNorm" in t["output"] and "train mode" in t["output"]


# ------------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------------
def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, AUTOGRADE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=shared.ROOT)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """One single-submission run (a zip with a README and a PDF) and one batch run, concurrently."""
    tmp = tmp_path_factory.mktemp("cli")
    ref = variants.reference_text()
    zpath = variants.write_zip(str(tmp / "submission.zip"), ref)
    batch = tmp / "batch"
    batch.mkdir()
    variants.write_zip(str(batch / "alice.zip"), ref)
    variants.write_submission(str(batch / "bob"), ref + "\ndef broken(:\n")
    (batch / "notes.txt").write_text("not a submission\n")
    with zipfile.ZipFile(batch / "carol.zip", "w") as zf:  # nested in a folder, with a data/ folder of JPEGs
        zf.writestr("my_hw/student_code.py", ref)
        for i in range(50):
            zf.writestr(f"my_hw/data/img_{i:02d}.jpg", b"\xff\xd8\xff" + bytes(1000))
    variants.write_submission(str(batch / "dave"), variants.rename_class(ref, "Attention", "AttentionRenamed"))
    results = tmp / "out" / "results.json"
    csv_path = tmp / "grades" / "grades.csv"
    cmds = {"single": [AUTOGRADE, zpath, "--results", str(results), "--parts", "3b", "--kit", shared.ROOT],
            "batch": [AUTOGRADE, "--batch", str(batch), "--csv", str(csv_path), "-j", "2", "--parts", "3b,2a"]}
    procs = {k: subprocess.Popen([sys.executable, *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in cmds.items()}
    out = {k: (p.wait(timeout=600), p.stderr.read()) for k, p in procs.items()}
    return {"out": out, "results": results, "csv": csv_path}


def test_cli_grades_a_zip_with_extra_files(cli_runs):
    rc, err = cli_runs["out"]["single"]
    assert rc == 0, err
    res = json.loads(cli_runs["results"].read_text())
    assert [t["number"] for t in res["tests"]] == ["3b"]
    assert res["score"] == 2, res


def test_cli_batch_writes_a_csv_and_results(cli_runs):
    rc, err = cli_runs["out"]["batch"]
    assert rc == 0, err
    with open(cli_runs["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["alice", "bob", "carol", "dave"], "subfolders and zips, other files ignored"
    alice, bob, carol, dave = rows
    assert (alice["total"], alice["2a"], alice["3b"]) == ("4", "2", "2"), alice
    assert alice["status"] == "graded", alice
    assert (bob["total"], bob["2a"], bob["3b"]) == ("0", "0", "0") and bob["status"] == "syntax error", bob
    # odd uploads are graded leniently, and each oddity is reported in the status column
    assert carol["total"] == "4" and "nested in my_hw/" in carol["status"], carol
    assert "50 other file(s)" in carol["status"] and "data/*.jpg" in carol["status"], carol
    assert dave["2a"] == "0" and dave["3b"] == "2" and "missing graded names: Attention" in dave["status"], dave
    for name, score in (("alice", 4), ("bob", 0), ("carol", 4), ("dave", 2)):
        res = json.loads((cli_runs["csv"].parent / f"{name}.results.json").read_text())
        assert res["score"] == score
        assert res["extra_data"]["staff"]["isolation"] in ("bwrap", "uid")
    staff = json.loads((cli_runs["csv"].parent / "dave.results.json").read_text())
    assert "missing graded names: Attention" in staff["extra_data"]["staff"]["oddities"]
    assert "does not define: Attention" in staff["output"]
    for row in rows:  # one number format in every score column
        for key in ("total", "2a", "3b"):
            assert row[key] == "" or row[key] == f"{float(row[key]):g}", row


@pytest.mark.parametrize("args, words", [
    ([], "give SUBMISSION"),
    (["x"], "give SUBMISSION"),
    ([".", "--results", "r.json", "--parts", "9z"], "unknown part"),
    (["--batch", "."], "needs --csv"),
    (["/no/such/submission", "--results", "r.json"], "no such file"),
    ([".", "--results", "r.json", "--timeout-scale", "0"], "must be > 0"),
])
def test_cli_rejects_bad_arguments(args, words):
    proc = _cli(*args, timeout=60)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr


def test_cli_rejects_a_kit_without_the_given_files(tmp_path):
    proc = _cli(".", "--results", str(tmp_path / "r.json"), "--kit", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "kit" in proc.stderr, proc.stderr
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------------------------------
# the redesign's guarantees, unit by unit (no sandbox unless said)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, words", [
    (lambda: torch.zeros(1, dtype=torch.float64).expand(2 ** 30), "not contiguous"),
    (lambda: torch.zeros(10).as_strided((6,), (0,)), "not contiguous"),
    (lambda: torch.arange(10.0)[3:], "not contiguous"),  # a storage offset
    (lambda: torch.arange(10.0)[:4], "storage"),  # owns more storage than its elements
    (lambda: torch.zeros(3, dtype=torch.complex64), "dtype"),
])
def test_output_loader_refuses_views_that_could_expand(tmp_path, make, words):
    torch.save({"x": make()}, tmp_path / "o.pt")
    size = (tmp_path / "o.pt").stat().st_size
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        obj, why = outputs.load(fd, "o.pt")
    finally:
        os.close(fd)
    assert obj is None and words in why, why
    assert size < 1_000_000


def test_output_loader_bounds_the_number_of_elements(tmp_path):
    torch.save({"x": [torch.zeros(1_000_000, dtype=torch.bool)] * 20}, tmp_path / "o.pt")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        obj, why = outputs.load(fd, "o.pt")
    finally:
        os.close(fd)
    assert obj is None and "too many elements" in why, why


EVASIONS = {
    "concatenated name": "import torch\nclass CustomConv2DFunction:\n    def forward(ctx, x, w):\n"
                         "        return getattr(torch.nn.functional, 'con' + 'v2d')(x, w)\n",
    "computed getattr on torch": "import torch.nn.functional as F\nclass CustomConv2DFunction:\n"
                                 "    def forward(ctx, x, w, name):\n        return getattr(F, name)(x, w)\n",
    "torch.ops": "import torch\nclass CustomConv2DFunction:\n    def forward(ctx, x, w):\n"
                 "        return torch.ops.aten.convolution(x, w, None, 1, 0, 1, False, 0, 1)\n",
    "eval": "class CustomConv2DFunction:\n    def forward(ctx, x, w):\n        return eval('F.' + 'conv2d')(x, w)\n",
    "patched in after the class": "import torch.nn.functional as F\nclass CustomConv2DFunction:\n    pass\n"
                                  "def _go(ctx, x, w):\n    return F.conv2d(x, w)\n"
                                  "CustomConv2DFunction.forward = staticmethod(_go)\n",
}


@pytest.mark.parametrize("case", sorted(EVASIONS))
def test_static_scan_catches_evasions(case):
    found = static.forbidden_uses(EVASIONS[case])
    assert "conv" in found, f"{case}: {found}"


def test_static_scan_reads_the_coding_line():
    source = variants.inject(variants.reference_text(), "CustomConv2DFunction", "forward",
                             "return F.conv2d(input_feats, weight, bias, stride, padding)")
    from grading_fixtures.variants import utf7_hidden

    data = utf7_hidden(source, "F.conv2d")
    assert b"F.conv2d" not in data
    text, encoding = static.decode(data)
    assert encoding == "utf-7" and "conv" in static.forbidden_uses(text)


def test_conv_module_alias_is_a_1b_finding_only():
    found = static.forbidden_uses(variants.reference_text() + "\nCustomConv2d = nn.Conv2d\n")
    assert list(found) == ["conv_module"], found


def test_tampering_and_review_flags():
    assert static.tampering("import _grading_child\n")
    assert static.tampering("x = sys.modules['RUNNERS']\n")
    assert not static.tampering(variants.reference_text())
    flags = dict(static.review_flags("import sys as _s, threading\n_s.modules['x'] = 1\n"))
    assert "sys.modules / dynamic imports" in flags and "threads / processes" in flags, flags
    assert static.review_flags("model.modules()\n# sys.modules in a comment\n") == []


def test_runner_source_holds_no_answer_and_compiles():
    """The sandbox's runners are built from the items' `run` functions only: no reference code, no
    expected values, no attention or PGD answer."""
    from grading import items

    src = items.runner_source(rubric.DISPLAY_ORDER)
    compile(src, "runners", "exec")
    for word in ("scaled_dot_product_attention(", "def expected", "def score", "reference_attention",
                 "F.conv2d(", SOLUTION_BEGIN):
        assert word not in src, word
    lib = open(os.path.join(shared.ROOT, "tools", "grading", "childlib.py")).read()
    assert ".softmax(" not in lib and "autograd.grad(" not in lib, "childlib carries no attention / attack answer"


def test_remove_tree_never_touches_the_folder_above(tmp_path):
    outer = tmp_path / "outer"
    box = outer / "box"
    (box / "locked").mkdir(parents=True)
    (box / "locked" / "f").write_text("x")
    os.chmod(box / "locked", 0o500)
    os.chmod(outer, 0o755)
    assert sandbox.remove_tree(str(box))
    assert (outer.stat().st_mode & 0o777) == 0o755 and not box.exists()


def test_csv_scores_use_one_format():
    from grading.results import fmt_score

    assert [fmt_score(v) for v in (0, 0.0, 1.5, 14.0, 0.25, None)] == ["0", "0", "1.5", "14", "0.25", ""]


def test_cli_refuses_without_isolation(tmp_path):
    """AUTOGRADE_ISOLATION forces a level; one that cannot work here refuses with one line (exit 3)."""
    env = dict(os.environ, AUTOGRADE_ISOLATION="uid")
    if os.geteuid() == 0:
        env["AUTOGRADE_UID_BASE"] = "61000"
    folder = variants.write_submission(str(tmp_path / "s"), variants.reference_text())
    proc = subprocess.run([sys.executable, AUTOGRADE, folder, "--results", str(tmp_path / "r.json"), "--parts", "3b"],
                          capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode == 0:  # this machine can run the uid level: then it must say so
        res = json.loads((tmp_path / "r.json").read_text())
        assert res["extra_data"]["staff"]["isolation"] == "uid"
        return
    assert proc.returncode == 3 and not (tmp_path / "r.json").exists(), proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("autograde.py: error: cannot isolate"), proc.stderr


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (Debian package bubblewrap)")
def test_bwrap_sees_an_environment_below_the_temp_folder():
    """A virtual environment made under /tmp (CI's `mktemp -d`) stays visible next to the private /tmp."""
    host = tempfile.mkdtemp(prefix="autograde-test-env-", dir="/tmp")
    scratch = host + "-scratch"
    base = sandbox.make_sandbox({}, b"", sandbox.NOBODY if os.geteuid() == 0 else None)
    try:
        with open(os.path.join(host, "marker.txt"), "w") as fh:
            fh.write("venv here\n")
        os.chmod(host, 0o700)  # as mktemp makes it: the bind must not need the host folder's permissions
        cmd = sandbox.bwrap_command(base, [(host, host)], os.geteuid() == 0) + ["/bin/sh", "-c", (
            f"cat {host}/marker.txt && touch {scratch} && echo tmp-writable")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["venv", "here", "tmp-writable"], proc.stdout
        assert not os.path.exists(scratch), "the sandbox's /tmp must be private"
    finally:
        sandbox.remove_tree(base)
        shutil.rmtree(host, ignore_errors=True)
