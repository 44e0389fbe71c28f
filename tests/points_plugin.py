"""Pytest plugin: a per-part points summary at the end of a run of the public tests (the student self-check).

Registered by `tests/conftest.py` (`pytest_plugins = ["points_plugin"]`); nothing to do but run

    python -m pytest tests

Every test is mapped to a rubric item (SPEC section 4: 1a, 1b-i ... 3b) by, in order:
1. a marker `@pytest.mark.part("2a")` on the test, its class or its module (`pytestmark`);
2. the rules of `RULES`: the test file's name and, where a file covers several items, the test's name.
Tests of given code (blocks, data, runner) map to no item and are summed up on one line.

The summary lists, per item, the public tests that passed / failed / were skipped and the item's points
when *every* public test of the item passed (0 otherwise: a few public tests check given pieces and pass
even on the stubs). That is an estimate: the grader runs other, hidden checks with partial credit per
component, so "every public test passes" is necessary, not sufficient.
Works with pytest-xdist (the item travels in each report's `user_properties`).

Two report styles, chosen by the ini option `points_report` (the student release's pytest.ini sets
`short`; the staff repository keeps pytest's own `full` report):
- `short` (without `-v`): no tracebacks and no pytest summary lists; at the very end one line per failing
  check (a test function, all its parametrized cases together) with its hint (the first line of the
  failure's message), the points table, and a last line `tests: N passed, N failed, N skipped`;
- `full`, or `short` with `-v`: pytest's usual output, then the points table.
`--part 1a` (repeatable, or `--part 1a,2b`) runs only the tests of those rubric items.
The optional Part 4 (4a-4d) is listed when the course ships it (`course_parts.json` next to `main.py`
names Part 4; its points come from there too) or when its tests ran.
"""
import fnmatch
import json
import os
import re

import pytest


# (item, points, bonus, what)
RUBRIC = (
    ("1a", 2.0, False, "CustomConv2DFunction: forward and backward"),
    ("1b-i", 1.0, False, "SimpleNet trains with your CustomConv2d"),
    ("1b-ii", 1.0, False, "SimpleNet: CustomConv2d equals nn.Conv2d"),
    ("1b-iii", 1.0, False, "default_cnn_model"),
    ("1b-iv", 1.0, False, "ResNet-18 on your CustomConv2d"),
    ("2a", 2.0, False, "Attention"),
    ("2b", 2.0, False, "TransformerBlock, SimpleViT, default_vit_model"),
    ("3a", 2.0, False, "PGDAttack, default_attack, GradAttention"),
    ("3b", 2.0, True, "adversarial_training_step (bonus)"),
)
# the optional Part 4: (item, what); points from course_parts.json
OPTIONAL_RUBRIC = (
    ("4a", "SmoothGrad"),
    ("4b", "GradCAM, GradCAMPlusPlus"),
    ("4c", "IntegratedGradients"),
    ("4d", "attention_rollout"),
)
COURSE_PARTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "course_parts.json")
ITEMS = tuple(item for item, _, _, _ in RUBRIC) + tuple(item for item, _ in OPTIONAL_RUBRIC)
# (test file glob, regex on the test name or None, item); first match wins
RULES = (
    ("test_conv*.py", None, "1a"),
    ("test_custom_conv*.py", None, "1a"),
    ("test_cnn*.py", r"resnet", "1b-iv"),
    ("test_cnn*.py", r"default_cnn|budget|design|residual", "1b-iii"),
    ("test_cnn*.py", r"train|learn|overfit|loss", "1b-i"),
    ("test_cnn*.py", r"simplenet|custom", "1b-ii"),
    ("test_simplenet*.py", r"train|learn|overfit|loss", "1b-i"),
    ("test_simplenet*.py", None, "1b-ii"),
    ("test_default_cnn*.py", None, "1b-iii"),
    ("test_resnet*.py", None, "1b-iv"),
    ("test_attention*.py", None, "2a"),
    ("test_vit*.py", None, "2b"),
    ("test_transformer*.py", None, "2b"),
    ("test_attack*.py", None, "3a"),
    ("test_pgd*.py", None, "3a"),
    ("test_saliency*.py", None, "3a"),
    ("test_adv*train*.py", None, "3b"),
)
PROPERTY = "rubric_part"


def part_of(nodeid, marker_part=None):
    """The rubric item of the test `nodeid` (`tests/test_x.py::test_y[param]`), or `None`."""
    if marker_part is not None:
        return marker_part
    path, _, name = nodeid.partition("::")
    filename = os.path.basename(path)
    name = name.split("[")[0].lower()
    for pattern, regex, item in RULES:
        if fnmatch.fnmatch(filename, pattern) and (regex is None or re.search(regex, name)):
            return item
    return None


SHORT_KEY = pytest.StashKey[list]()  # the short report's lines, printed at pytest_unconfigure
HINT_CHARS = 160


def pytest_addoption(parser):
    parser.addoption("--part", action="append", default=[], metavar="ITEM",
                     help=f"run only the tests of these rubric items ({', '.join(ITEMS)}); repeat or "
                          f"separate with commas")
    parser.addini("points_report", "short: failing checks, points table and totals only (-v: full); "
                                   "full: pytest's own report, then the points table", default="full")


def short_report(config):
    """True when this run prints the short report (ini `points_report = short` and no `-v`)."""
    return config.getini("points_report").strip() == "short" and config.option.verbose <= 0


def pytest_configure(config):
    config.addinivalue_line("markers", "part(item): the rubric item (1a, 1b-i, ..., 3b) a test belongs to")
    wanted = [p.strip() for value in config.getoption("part", []) for p in value.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in ITEMS]
    if unknown:
        raise pytest.UsageError(f"--part {', '.join(unknown)}: unknown rubric item; choose from {', '.join(ITEMS)}")
    config.points_parts = wanted
    if short_report(config):
        if config.option.tbstyle == "auto":
            config.option.tbstyle = "no"  # the hint line stands for the traceback (-v or --tb=short for it)
        if not any(str(a).startswith("-r") for a in config.invocation_params.args):
            config.option.reportchars = ""  # no second list of every failure


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("part")
        marker_part = marker.args[0] if marker is not None and marker.args else None
        part = part_of(item.nodeid, marker_part)
        if part is not None:
            item.user_properties.append((PROPERTY, part))
    wanted = getattr(config, "points_parts", None)
    if wanted:
        keep = [i for i in items if dict(i.user_properties).get(PROPERTY) in wanted]
        dropped = [i for i in items if dict(i.user_properties).get(PROPERTY) not in wanted]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def outcomes(stats):
    """`{nodeid: (outcome, item)}` from the terminal reporter's stats; outcome is the worst of the test's
    phases: failed (or error) > skipped > passed."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    out = {}
    for reports in stats.values():
        for rep in reports:
            nodeid, when = getattr(rep, "nodeid", None), getattr(rep, "when", None)
            if not nodeid or when is None:
                continue
            outcome = rep.outcome
            if hasattr(rep, "wasxfail"):
                outcome = "skipped"
            item = dict(getattr(rep, "user_properties", ()) or ()).get(PROPERTY) or part_of(nodeid)
            prev = out.get(nodeid)
            if prev is None or rank[outcome] > rank[prev[0]]:
                out[nodeid] = (outcome, item if prev is None else prev[1] or item)
    return out


def course_config(path=COURSE_PARTS):
    """`(parts shipped, {optional item: points})` from `course_parts.json` (Parts 1-3 without it)."""
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        return ("1", "2", "3"), {}
    return tuple(config.get("parts", ("1", "2", "3"))), {k: float(v) for k, v in config.get("part4_points", {}).items()}


def rubric_for(results, config=None):
    """The rows to show: the core rubric, plus Part 4's when the course ships it or its tests ran."""
    parts, points = config if config is not None else course_config()
    seen = {item for _, item in results.values()}
    optional = tuple((item, points.get(item, 1.0), False, what) for item, what in OPTIONAL_RUBRIC
                     if "4" in parts or item in seen)
    return RUBRIC + optional


def summary_lines(results, config=None):
    """The summary table (list of strings) for `{nodeid: (outcome, item)}`; `config` as `course_config()`."""
    per = {item: {"passed": 0, "failed": 0, "skipped": 0} for item in ITEMS}
    other = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome, item in results.values():
        (per[item] if item in per else other)[outcome] += 1
    lines = [f"{'item':<7} {'points':>11}  {'public tests':<32} what"]
    total = bonus = 0.0
    max_total = max_bonus = 0.0
    for item, points, is_bonus, what in rubric_for(results, config):
        c = per[item]
        ran = c["passed"] + c["failed"]
        if is_bonus:
            max_bonus += points
        else:
            max_total += points
        if ran == 0:
            shown = f"{'-':>5}/{points:g}"
            counts = "not run" if not c["skipped"] else f"{c['skipped']} skipped"
        else:
            est = points if c["failed"] == 0 else 0.0  # some public tests pass even on the stubs
            if is_bonus:
                bonus += est
            else:
                total += est
            shown = f"{est:>5g}/{points:g}"
            counts = f"{c['passed']} passed" + (f", {c['failed']} FAILED" if c["failed"] else "") + \
                (f", {c['skipped']} skipped" if c["skipped"] else "")
        lines.append(f"{item:<7} {shown:>11}  {counts:<32} {what}")
    if sum(other.values()):
        counts = f"{other['passed']} passed, {other['failed']} failed, {other['skipped']} skipped"
        lines.append(f"{'(other)':<7} {'':>11}  {counts:<32} tests of the given code and the runner (not graded)")
    lines.append(f"estimate {total:g}/{max_total:g} + bonus {bonus:g}/{max_bonus:g}: points of the items whose public "
                 f"tests all pass; the grader also runs hidden checks (partial credit per component).")
    return lines


def hint_of(rep):
    """The first line of a failure's message (`AssertionError: max diff 0.3 ...`), at most HINT_CHARS long."""
    crash = getattr(getattr(rep, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(getattr(rep, "longrepr", "") or "")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "failed")
    return first if len(first) <= HINT_CHARS else first[:HINT_CHARS - 3] + "..."


def failing_checks(stats, results):
    """`[(item, check, failed cases, cases, hint)]`: each failing test function (its parametrized cases
    together; item and hint of its first failing case), in rubric order, given-code tests last."""
    first_hint = {}
    for key in ("failed", "error"):
        for rep in stats.get(key, []):
            nodeid = getattr(rep, "nodeid", "")
            first_hint.setdefault(nodeid, hint_of(rep))
    checks = {}
    for nodeid, (outcome, item) in results.items():
        check = nodeid.split("[")[0]
        entry = checks.setdefault(check, {"item": None, "failed": 0, "cases": 0, "hint": None})
        entry["cases"] += 1
        if outcome == "failed":
            entry["failed"] += 1
            if entry["hint"] is None:  # cases of one test may belong to different items: the failing one's
                entry["item"], entry["hint"] = item, first_hint.get(nodeid, "failed")
    order = {item: i for i, item in enumerate(ITEMS)}
    rows = [(e["item"], check, e["failed"], e["cases"], e["hint"]) for check, e in checks.items() if e["failed"]]
    return sorted(rows, key=lambda r: (order.get(r[0], len(ITEMS)), r[1]))


def short_lines(stats, results):
    """The short report: failing checks, the points table, the totals line (last)."""
    lines = []
    rows = failing_checks(stats, results)
    if rows:
        lines.append(f"failing checks ({len(rows)}; details: python -m pytest TEST -v, e.g. "
                     f"python -m pytest \"{rows[0][1]}\" -v):")
        for item, check, failed, cases, hint in rows:
            cases_text = f" [{failed} of {cases} cases]" if cases > 1 else ""
            lines.append(f"  {item or 'given':<7} {check}{cases_text}: {hint}")
        lines.append("")
    lines.append("points summary (public tests, estimate):")
    if any(item in ITEMS for _, item in results.values()):
        lines += summary_lines(results)
    else:
        lines.append("no test of a graded part ran")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome, _ in results.values():
        counts[outcome] += 1
    lines.append(f"tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = outcomes(terminalreporter.stats)
    if short_report(config):  # printed after pytest's own last line, at pytest_unconfigure
        config.stash[SHORT_KEY] = short_lines(terminalreporter.stats, results)
        return
    if not any(item in ITEMS for _, item in results.values()):
        return
    terminalreporter.section("points summary (public tests, estimate)")
    for line in summary_lines(results):
        terminalreporter.write_line(line)


def pytest_unconfigure(config):
    lines = config.stash.get(SHORT_KEY, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if lines and reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
