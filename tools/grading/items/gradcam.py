"""4b (optional Part 4; default 1 point): `GradCAM` and `GradCAMPlusPlus` on the fixed `childlib.SmallCNN`
(float64, train mode as found): `layer_cam` at two layers, for the predicted and for given classes,
against Grad-CAM / Grad-CAM++ written out with a hook and autograd here; `explain`'s shape and range; the
model left exactly as found with no hook left behind, detached results.
"""
import torch
import torch.nn as nn  # noqa: F401 (run() uses the sandbox globals torch, nn)

from ._explain import (FORBIDDEN, OPTIONAL_PART, compare_case, frozen_model, manual_cam, pristine,  # noqa: F401
                       setup_and_images)
from ..compare import summarize
from ..results import ItemGrade

NUMBER = "4b"
TITLE = "4b GradCAM, GradCAMPlusPlus"
POINTS = 1.0
BONUS = False
GROUP = "explain"
BUDGET_S = 40.0
REQUIRES = ("GradCAM", "GradCAMPlusPlus")
CASES = (("GradCAM", "bn2", False), ("GradCAM", "conv1", True), ("GradCAMPlusPlus", "bn2", False),
         ("GradCAMPlusPlus", "bn1", True))  # (class, layer, given target)


def inputs(ref):
    inp = setup_and_images(411, n=3, h=12, w=10)
    inp["cases"] = [{"cls": c, "layer": layer, "given": g} for c, layer, g in CASES]
    inp["target"] = torch.tensor([3, 0, 7])
    return inp


def run(sc, inp, lib):
    model = lib.SmallCNN().double()
    res = []
    for c in inp["cases"] + [{"cls": "GradCAM", "layer": "bn2", "given": False, "explain": True}]:
        r = {}
        try:
            lib.load_model_state(model, inp["setup"])
            layer = dict(model.named_modules())[c["layer"]]
            cam = getattr(sc, c["cls"])(model, layer)
            target = inp["target"].clone() if c["given"] else None
            out = cam.explain(inp["x"].clone(), target) if c.get("explain") else cam.layer_cam(inp["x"].clone(), target)
            r["hooks"] = sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
                             for m in model.modules())
            r["requires_grad"] = bool(getattr(out, "requires_grad", False))
            r["out"] = lib.plain(out)
            r["model"] = lib.model_snapshot(model)
        except BaseException as exc:  # noqa: B902
            r["error"] = lib.describe(exc)
        res.append(r)
    return {"cases": res}


def expected(ref, inp):
    maps = []
    for c in inp["cases"]:
        model = frozen_model(inp)
        maps.append(manual_cam(model, dict(model.named_modules())[c["layer"]], inp["x"],
                               inp["target"] if c["given"] else None, c["cls"] == "GradCAMPlusPlus"))
    return {"maps": maps, "pristine": pristine(inp)}


def score(inp, exp, out):
    grade = ItemGrade(NUMBER)
    cases = out.get("cases") if isinstance(out, dict) else None
    if not isinstance(cases, list) or len(cases) != len(CASES) + 1:
        grade.fail("no Grad-CAM results came back")
        return grade
    problems = {"GradCAM": [], "GradCAMPlusPlus": []}
    side = []
    for c, want, r in zip(inp["cases"], exp["maps"], cases):
        what = f"{c['cls']}(model, model.{c['layer']}).layer_cam(x, {'target' if c['given'] else 'None'})"
        m, s = compare_case(r, want, what, exp["pristine"])
        problems[c["cls"]] += [m] if m else []
        side += [s] if s else []
    last = cases[-1] if isinstance(cases[-1], dict) else {}
    shown = last.get("out")
    if not isinstance(shown, torch.Tensor) or tuple(shown.shape) != (3, 1, 12, 10) or \
            not bool(torch.isfinite(shown).all()) or float(shown.min()) < -1e-9 or float(shown.max()) > 1 + 1e-9:
        side.append("GradCAM.explain must give (N, 1, H, W) maps in [0, 1]"
                    + (f" ({last['error']})" if last.get("error") else ""))
    grade.add("Grad-CAM layer_cam = relu(sum_k mean_hw(dscore/dA_k) A_k)", 0.4, not problems["GradCAM"],
              summarize(problems["GradCAM"], 2, "cases"))
    grade.add("Grad-CAM++ weights (closed-form alpha, relu of the gradient)", 0.4, not problems["GradCAMPlusPlus"],
              summarize(problems["GradCAMPlusPlus"], 2, "cases"))
    grade.add("model left exactly as found, hooks removed, results detached, explain upsampled to [0, 1]", 0.2,
              not side, summarize(side, len(CASES) + 1, "checks"))
    return grade
