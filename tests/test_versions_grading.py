"""The grader on the public corpus of every template version (tests/grading_fixtures/versions/): each
version's correct submission gets full marks on every automatically graded item, the template as handed out
gets 0, and each planted mistake costs its item (and at most the items listed in its `also`), graded by
the real grader (sandboxes, tools/grading/grade.py) and recognised as its version.

Tiers: the default tier grades the Fall 2024 correct submission and one planted mistake on Part 3 (two
sandboxes); the slow tier (`-m slow`, run by .ci/run) grades the whole corpus. A mutant is graded on the
sandbox groups of the items it may cost (every item of those groups is checked: the others must stay at
full marks); the items of the other groups run code the mutant does not touch, and their full marks are
checked on the correct submission.

    python -m pytest tests/test_versions_grading.py -q              # default tier
    python -m pytest tests/test_versions_grading.py -q -m slow      # the whole corpus
"""
import concurrent.futures
import os

import pytest

import _staff  # noqa: F401 (puts tools/ on sys.path)
from grading_fixtures import shared
from grading_fixtures import versions as corpus

from grading import rubric, sandbox  # noqa: E402 (path set by grading_fixtures.shared)
from grading.grade import grade_submission  # noqa: E402
from grading.versions import PROFILES  # noqa: E402

GRADER_FAULTS = ("could not be checked", "grader error", "Traceback", "sandbox did not start")


_SUPERVISOR = []


def _supervisor():
    """One Supervisor for every submission graded here: its uid slots are what keeps concurrent sandboxes
    apart (two Supervisors would hand out the same uids)."""
    if not _SUPERVISOR:
        _SUPERVISOR.append(sandbox.Supervisor())
    return _SUPERVISOR[0]


def _grade(tmp_path, name, text, parts=None):
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "student_code.py").write_text(text)
    results, status = grade_submission(str(folder), shared.kit(), parts, sandbox.Limits(), supervisor=_supervisor(),
                                       parallel_groups=1)
    return results, status


def _by_number(results):
    return {t["number"]: t for t in results["tests"]}


def _parts_for(version, names):
    """The items of every sandbox group holding one of `names` (in the version's items)."""
    profile = PROFILES[version]
    groups = {rubric.BY_NUMBER[n].group for n in names}
    return tuple(n for n in rubric.DISPLAY_ORDER if profile.item(n) is not None and rubric.BY_NUMBER[n].group in groups)


def _check_full(version, results, numbers, what):
    profile = PROFILES[version]
    tests = _by_number(results)
    assert results.get("version") == version, f"{what}: recognised as {results.get('version')}"
    for n in numbers:
        spec = profile.item(n)
        t = tests[n]
        assert not any(f in t["output"] for f in GRADER_FAULTS), f"{what} {n}: {t['output'][:800]}"
        if spec.manual:
            assert t["score"] == 0.0 and "staff" in t["output"]
        else:
            assert t["score"] == spec.max_score, f"{what} {n}: {t['score']}/{spec.max_score}\n{t['output'][:1500]}"


def _check_mutant(version, mutant, results, numbers):
    tests = _by_number(results)
    profile = PROFILES[version]
    what = f"{version}/{mutant['name']} ({mutant['mistake']})"
    assert results.get("version") == version, f"{what}: recognised as {results.get('version')}"
    for n in numbers:
        t, spec = tests[n], profile.item(n)
        assert not any(f in t["output"] for f in GRADER_FAULTS), f"{what} {n}: {t['output'][:800]}"
        if n == mutant["costs"]:
            assert t["score"] < spec.max_score, f"{what}: {n} kept full marks\n{t['output'][:1500]}"
        elif n not in mutant["also"] and not spec.manual:
            assert t["score"] == spec.max_score, f"{what}: {n} lost points {t['score']}/{spec.max_score}\n" \
                                                 f"{t['output'][:1500]}"


# ------------------------------------------------------------------------------------------ default tier
def test_2024_graded_as_its_runner_called_it(tmp_path):
    correct, _ = _grade(tmp_path, "correct", corpus.correct_text("2024"), ("3a", "3b"))
    _check_full("2024", correct, ("3a", "3b"), "2024 correct")
    assert "Fall 2024" in correct["output"] and correct["extra_data"]["staff"]["version"]["name"] == "2024"
    m = corpus.mutant("2024", "pgd_ascent")
    wrong, _ = _grade(tmp_path, "ascent", corpus.mutant_text("2024", "pgd_ascent"), ("3a",))
    _check_mutant("2024", m, wrong, ("3a",))
    assert "descend" in _by_number(wrong)["3a"]["output"]


# ------------------------------------------------------------------------------------------ slow tier
def _jobs():
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


@pytest.mark.slow
@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_whole_corpus(version, tmp_path):
    profile = PROFILES[version]
    numbers = tuple(n for n in rubric.DISPLAY_ORDER if profile.item(n) is not None)
    jobs = [("correct", corpus.correct_text(version), None, numbers)]
    if version != "kit":  # the kit's release scoring 0 is tests/test_autograde.py's
        jobs.append(("stub", corpus.stub_text(version), None, numbers))
    for m in corpus.manifest(version)["mutants"]:
        names = [m["costs"]] + list(m["also"]) if m["costs"] else numbers
        jobs.append((m["name"], corpus.mutant_text(version, m["name"]), m, _parts_for(version, names)))
    from grading.versions import items as version_items

    for n in version_items.graded_numbers(profile, numbers):  # the references once, before the threads start
        shared.kit().expected(n, version_items.module_for(profile, n))  # (as grade_batch does)
    with concurrent.futures.ThreadPoolExecutor(max_workers=_jobs()) as pool:
        futures = {pool.submit(_grade, tmp_path, name, text, parts): (name, m, parts)
                   for name, text, m, parts in jobs}
        failures = []
        for fut in concurrent.futures.as_completed(futures):
            name, m, parts = futures[fut]
            results, _ = fut.result()
            try:
                if name == "correct":
                    _check_full(version, results, parts, f"{version} correct")
                elif name == "stub":
                    assert results.get("version") == version, f"stub recognised as {results.get('version')}"
                    assert results["score"] == 0.0, [(t["number"], t["score"]) for t in results["tests"]]
                else:
                    _check_mutant(version, m, results, parts)
            except AssertionError as exc:
                failures.append(str(exc)[:2500])
    assert not failures, "\n\n".join(failures)
