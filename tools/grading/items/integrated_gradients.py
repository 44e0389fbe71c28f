"""4c (optional Part 4; default 1 point): `IntegratedGradients.attribute` on the fixed `childlib.SmallCNN`
(float64, train mode as found): zero and image baselines, predicted and given classes, against the midpoint
rule written out with autograd here; the model left exactly as found, detached results.
"""
import torch
import torch.nn as nn  # noqa: F401 (run() uses the sandbox globals torch, nn)

from ._explain import FORBIDDEN, OPTIONAL_PART, compare_case, frozen_model, manual_ig, pristine, setup_and_images  # noqa: F401
from ..compare import generator, summarize
from ..results import ItemGrade
from .. import childlib

NUMBER = "4c"
TITLE = "4c IntegratedGradients"
POINTS = 1.0
BONUS = False
GROUP = "explain"
BUDGET_S = 40.0
REQUIRES = ("IntegratedGradients",)
CASES = ((False, False, 6), (True, True, 5), (True, False, 3))  # (image baseline, given target, steps)


def inputs(ref):
    inp = setup_and_images(421, n=2, h=10, w=12)
    inp["baseline"] = childlib.seeded_images(generator(422), 1, 10, 12)
    inp["target"] = torch.tensor([5, 2])
    inp["cases"] = [{"baseline": b, "given": g, "steps": s} for b, g, s in CASES]
    return inp


def run(sc, inp, lib):
    model = lib.SmallCNN().double()
    res = []
    for c in inp["cases"]:
        r = {}
        try:
            lib.load_model_state(model, inp["setup"])
            ig = sc.IntegratedGradients(model, baseline=inp["baseline"].clone() if c["baseline"] else None,
                                        steps=c["steps"])
            out = ig.attribute(inp["x"].clone(), inp["target"].clone() if c["given"] else None)
            r["requires_grad"] = bool(getattr(out, "requires_grad", False))
            r["out"] = lib.plain(out)
            r["model"] = lib.model_snapshot(model)
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res.append(r)
    return {"cases": res}


def expected(ref, inp):
    model = frozen_model(inp)
    x = inp["x"]
    attrs = [manual_ig(model, x, inp["baseline"].expand_as(x) if c["baseline"] else torch.zeros_like(x),
                       inp["target"] if c["given"] else None, c["steps"]) for c in inp["cases"]]
    return {"attrs": attrs, "pristine": pristine(inp)}


def score(inp, exp, out):
    grade = ItemGrade(NUMBER)
    cases = out.get("cases") if isinstance(out, dict) else None
    if not isinstance(cases, list) or len(cases) != len(CASES):
        grade.fail("no IntegratedGradients results came back")
        return grade
    match, side = [], []
    for c, want, r in zip(inp["cases"], exp["attrs"], cases):
        what = f"IntegratedGradients(steps={c['steps']}, {'an image' if c['baseline'] else 'zero'} baseline)" \
               f".attribute(x, {'target' if c['given'] else 'None'})"
        m, s = compare_case(r, want, what, exp["pristine"])
        match += [m] if m else []
        side += [s] if s else []
    grade.add("attributions = (x - x') * mean of the gradients at a_k = (k + 0.5) / steps", 0.7, not match,
              summarize(match, len(CASES), "cases"))
    grade.add("model left exactly as found, results detached", 0.3, not side, summarize(side, len(CASES), "cases"))
    return grade
