"""1b-ii (1 point): SimpleNet with the student's `CustomConv2d` gives the outputs and gradients (input and
every parameter) of SimpleNet on `nn.Conv2d` with the same weights, in float64. Convolution routines are
forbidden (`static.CONV_MODULE`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import static
from ..compare import case_error, close, close_dict, generator, randn
from ..results import ItemGrade
from ._common import perturbed_state, seeded_module

F64, F32 = torch.float64, torch.float32

NUMBER = "1b-ii"
TITLE = "1b-ii SimpleNet: CustomConv2d equals nn.Conv2d"
POINTS = 1.0
BONUS = False
GROUP = "conv"
BUDGET_S = 40.0
REQUIRES = ("SimpleNet", "CustomConv2d")
FORBIDDEN = static.CONV_MODULE


# ---------------------------------------------------------------------------------------------------------
# 1b-ii: SimpleNet(CustomConv2d) == SimpleNet(nn.Conv2d), float64
# ---------------------------------------------------------------------------------------------------------
def inputs(ref):
    gen = generator(121)
    model = seeded_module(lambda: ref.SimpleNet(conv_op=nn.Conv2d, num_classes=7), 122).double()
    return {"num_classes": 7, "state": perturbed_state(model, 123, scale=0.01),
            "x": randn(gen, 2, 3, 40, 36), "gout": randn(gen, 2, 7)}



def run(sc, inp, lib):
    model = sc.SimpleNet(conv_op=sc.CustomConv2d, num_classes=inp["num_classes"]).double()
    model.load_state_dict(inp["state"])
    x = inp["x"].clone().requires_grad_(True)
    out = model(x)
    res = {"out": lib.plain(out)}
    out.backward(inp["gout"])
    res["gx"] = lib.plain(x.grad)
    res["grads"] = lib.grads(model)
    return res


def expected(ref, inp):
    model = ref.SimpleNet(conv_op=nn.Conv2d, num_classes=inp["num_classes"]).double()
    model.load_state_dict(inp["state"])
    x = inp["x"].clone().requires_grad_(True)
    out = model(x)
    out.backward(inp["gout"])
    return {"out": out.detach(), "gx": x.grad, "grads": {n: p.grad for n, p in model.named_parameters()}}



def score(inp, exp, out):
    grade = ItemGrade("1b-ii")
    err = case_error(out)
    if "out" not in out:
        grade.fail(f"SimpleNet(conv_op=CustomConv2d) raised {err}" if err else "no outputs came back")
        return grade
    ok, msg = close(out.get("out"), exp["out"], what="logits")
    grade.add("outputs equal SimpleNet on nn.Conv2d (same weights, float64)", 0.5, ok, msg)
    if err is not None and "gx" not in out:
        ok, msg = False, f"backward raised {err}"
    else:
        ok, msg = close(out.get("gx"), exp["gx"], what="gradient of the input")
        if ok:
            ok, msg = close_dict(out.get("grads"), exp["grads"], "gradient")
    grade.add("gradients of the input and every parameter equal those with nn.Conv2d", 0.5, ok, msg)
    return grade

