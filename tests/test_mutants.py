"""Staff tests of the mutation suite (`tools/mutants.py`, `tools/release/mutant_list.py`, `mutate.py`).

Fast tier: every planted bug still applies exactly once inside its function's solution blocks (a mutant that
silently stopped applying would inflate the kill rate), the list is large and covers every graded part, the
applier rejects ambiguous or missing substitutions, and a handful of representative mutants (two items,
one grader batch) lose points while the unmodified reference keeps full marks. Slow tier (`-m slow`): the
whole suite reaches a kill rate of at least 95 %.

Run: python -m pytest tests/test_mutants.py            (slow tier: add -m slow)
"""
import ast

import pytest

from _staff import ROOT, reference_source

import mutants  # noqa: E402
from release import grade, markers, mutate  # noqa: E402
from release.mutant_list import MUTANTS, Mutant  # noqa: E402

REPRESENTATIVE = ("attn_softmax_wrong_axis", "attn_head_merge_order", "advtrain_two_steps",
                  "advtrain_fraction_ignored")


def test_suite_is_large_distinct_and_covers_every_part():
    names = [m.name for m in MUTANTS]
    assert len(names) >= 30 and len(set(names)) == len(names)
    _, blocks = markers.strip_source(reference_source())
    assert {m.part for m in MUTANTS} == {b.part for b in blocks}
    assert len({(m.where, m.old, m.new) for m in MUTANTS}) == len(MUTANTS), "two mutants plant the same bug"


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_applies_exactly_once_inside_its_block(mutant):
    ref = reference_source()
    mutated = mutate.apply(ref, mutant)
    ast.parse(mutated)
    # only the solution blocks changed: the stripped student files are identical
    assert markers.strip_source(mutated)[0] == markers.strip_source(ref)[0]
    blocks = markers.parse_blocks(ref)
    owner = "" if mutant.where == "<module>" else mutant.where
    assert any(b.qualname == owner and b.part == mutant.part for b in blocks), \
        f"{mutant.name}: part {mutant.part} does not match the block of {mutant.where}"


def test_apply_rejects_missing_ambiguous_and_misplaced_substitutions():
    ref = reference_source()
    with pytest.raises(mutate.MutantError, match="occurs 0 times"):
        mutate.apply(ref, Mutant("x", "2a", "Attention.forward", "no such text anywhere", "y", ""))
    with pytest.raises(mutate.MutantError, match=r"occurs ([2-9]|\d\d+) times"):
        mutate.apply(ref, Mutant("x", "2a", "Attention.forward", "x = ", "x  = ", ""))
    with pytest.raises(mutate.MutantError, match="occurs 0 times"):  # outside the markers does not count
        mutate.apply(ref, Mutant("x", "2a", "Attention.forward", "self.scale = head_dim ** -0.5", "", ""))
    with pytest.raises(mutate.MutantError, match="no solution block"):
        mutate.apply(ref, Mutant("x", "2a", "Attention.__init__", "dim", "dim", ""))
    with pytest.raises(mutate.MutantError, match="does not parse"):
        mutate.apply(ref, Mutant("x", "2a", "Attention.forward", "attn = attn.softmax(dim=-1)", "attn = (", ""))


def test_selection_and_listing(capsys):
    assert [m.name for m in mutants.select(["attn_missing_proj"])] == ["attn_missing_proj"]
    assert {m.part for m in mutants.select(part="3b")} == {"3b"}
    with pytest.raises(SystemExit, match="unknown mutant"):
        mutants.select(["no_such_mutant"])
    assert mutants.main(["--list", "--part", "2a"]) == 0
    out = capsys.readouterr().out
    assert "attn_softmax_wrong_axis" in out and "[3b]" not in out


def test_representative_mutants_lose_points():
    """One grader batch (items 2a and 3b): the reference at full marks, each mutant below it on its item."""
    ref = reference_source()
    chosen = [m for m in MUTANTS if m.name in REPRESENTATIVE]
    submissions = {m.name: mutate.apply(ref, m) for m in chosen}
    submissions[mutants.BASELINE] = ref
    parts = sorted({m.part for m in chosen})
    graded = grade.run_batch(mutants.GRADER, submissions, kit=ROOT, parts=parts, jobs=2)
    score, max_score, tests = grade.summarize(graded[mutants.BASELINE])
    assert max_score == 4.0 and score == max_score, f"reference: {grade.lost_points(tests)}"
    for m in chosen:
        item = next(t for t in graded[m.name]["tests"] if t["number"] == m.part)
        assert item["score"] < item["max_score"], f"{m.name} ({m.why}) kept {item['score']}/{item['max_score']}"


@pytest.mark.slow
def test_full_suite_kill_rate():
    problems, results = mutants.run_suite(list(MUTANTS), jobs=2, log=lambda s: None)
    assert not problems, problems
    killed = [r for r in results if r["killed"]]
    survivors = [f"{r['name']} ({r['why']})" for r in results if not r["killed"]]
    assert len(killed) / len(results) >= 0.95, f"survivors: {survivors}"
