"""4a (optional Part 4; default 1 point): `SmoothGrad` on the fixed `childlib.SmallCNN` (float64, train mode
as found, random BatchNorm statistics): the map against SmoothGrad written out with autograd here (same
seeded noise), for a mean- and a sum-reduced loss; the model left exactly as found, the global RNG
untouched (the noise comes from a seeded generator), a detached result.
"""
import torch
import torch.nn as nn  # noqa: F401 (run() uses the sandbox globals torch, nn)

from ._explain import (FORBIDDEN, LOSSES, OPTIONAL_PART, compare_case, frozen_model, manual_smoothgrad,  # noqa: F401
                       pristine, setup_and_images)
from ..compare import summarize
from ..results import ItemGrade

NUMBER = "4a"
TITLE = "4a SmoothGrad"
POINTS = 1.0
BONUS = False
GROUP = "explain"
BUDGET_S = 40.0
REQUIRES = ("SmoothGrad",)
CASES = (("mean", 4, 0.2, 5), ("sum", 3, 0.5, 9))  # (loss reduction, num_samples, noise_std, seed)


def inputs(ref):
    inp = setup_and_images(401)
    inp["cases"] = [{"reduction": r, "num_samples": n, "noise_std": s, "seed": seed} for r, n, s, seed in CASES]
    return inp


def run(sc, inp, lib):
    model = lib.SmallCNN().double()
    res = []
    for c in inp["cases"]:
        r = {}
        try:
            lib.load_model_state(model, inp["setup"])
            loss_fn = nn.CrossEntropyLoss(reduction=c["reduction"])
            state = torch.get_rng_state()
            out = sc.SmoothGrad(loss_fn, num_samples=c["num_samples"], noise_std=c["noise_std"],
                                seed=c["seed"]).explain(model, inp["x"].clone())
            r["rng_changed"] = not torch.equal(state, torch.get_rng_state())
            r["requires_grad"] = bool(getattr(out, "requires_grad", False))
            r["out"] = lib.plain(out)
            r["model"] = lib.model_snapshot(model)
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res.append(r)
    return {"cases": res}


def expected(ref, inp):
    model = frozen_model(inp)
    maps = [manual_smoothgrad(model, inp["x"], LOSSES[c["reduction"]], c["num_samples"], c["noise_std"],
                              c["seed"]) for c in inp["cases"]]
    return {"maps": maps, "pristine": pristine(inp)}


def score(inp, exp, out):
    grade = ItemGrade(NUMBER)
    cases = out.get("cases") if isinstance(out, dict) else None
    if not isinstance(cases, list) or len(cases) != len(CASES):
        grade.fail("no SmoothGrad results came back")
        return grade
    match, side = [], []
    for c, want, r in zip(inp["cases"], exp["maps"], cases):
        what = f"SmoothGrad(num_samples={c['num_samples']}, noise_std={c['noise_std']}, seed={c['seed']}) " \
               f"with a {c['reduction']}-reduced loss"
        m, s = compare_case(r, want, what, exp["pristine"])
        match += [m] if m else []
        side += [s] if s else []
    grade.add("the map equals the noise-averaged |gradient| (seeded noise (N, S, 3, H, W), max over channels)",
              0.7, not match, summarize(match, len(CASES), "cases"))
    grade.add("model left exactly as found, global RNG untouched, result detached", 0.3, not side,
              summarize(side, len(CASES), "cases"))
    return grade
