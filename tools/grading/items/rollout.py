"""4d (optional Part 4; default 1 point): `attention_rollout` on seeded attention maps (float64): rows that
sum to 1 and rows that do not (the padded windows of a windowed block), one and three layers, against the
rollout written out here (head mean + identity, rows renormalized, last layer first).
"""
import torch
import torch.nn as nn  # noqa: F401 (run() uses the sandbox globals torch, nn)

from ._explain import FORBIDDEN, OPTIONAL_PART, compare_case, manual_rollout  # noqa: F401
from ..compare import generator, summarize
from ..results import ItemGrade

NUMBER = "4d"
TITLE = "4d attention_rollout"
POINTS = 1.0
BONUS = False
GROUP = "explain"
BUDGET_S = 20.0
REQUIRES = ("attention_rollout",)


def inputs(ref):
    gen = generator(431)
    cases = []
    for layers, scale in ((1, 1.0), (3, 1.0), (3, 0.6)):
        cases.append([scale * torch.randn(2, 3, 6, 6, generator=gen, dtype=torch.float64).softmax(-1)
                      for _ in range(layers)])
    return {"cases": cases}


def run(sc, inp, lib):
    res = []
    for maps in inp["cases"]:
        r = {}
        try:
            out = sc.attention_rollout([m.clone() for m in maps])
            r["requires_grad"] = bool(getattr(out, "requires_grad", False))
            r["out"] = lib.plain(out)
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res.append(r)
    return {"cases": res}


def expected(ref, inp):
    return {"rollouts": [manual_rollout(maps) for maps in inp["cases"]]}


def score(inp, exp, out):
    grade = ItemGrade(NUMBER)
    cases = out.get("cases") if isinstance(out, dict) else None
    if not isinstance(cases, list) or len(cases) != 3:
        grade.fail("no attention_rollout results came back")
        return grade
    what = ("attention_rollout of one layer", "attention_rollout of three layers",
            "attention_rollout of three layers whose rows do not sum to 1")
    problems = [compare_case(r, want, w)[0] for r, want, w in zip(cases, exp["rollouts"], what)]
    grade.add("one layer: (head mean + I), rows renormalized", 0.3, not problems[0], problems[0])
    grade.add("three layers: A_3 @ A_2 @ A_1, rows renormalized after adding I", 0.7, not any(problems[1:]),
              summarize([p for p in problems[1:] if p], 2, "cases"))
    return grade
