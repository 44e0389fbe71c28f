"""1b-iv (1 point): torchvision's ResNet-18 on the student's `CustomConv2d` equals it on `nn.Conv2d`.

The ResNet-18 path of `main.py` is kit code (torchvision's architecture with a fresh head; pretrained weights
are not available offline while grading). The item grades the part of that path the student writes: the
ResNet-18 (randomly initialized, seeded, random BatchNorm statistics) with every `nn.Conv2d` replaced by the
student's `CustomConv2d` carrying the same weights must give the outputs (eval and train mode) and the
gradients (input and every parameter, compared through `childlib.grad_sketch`) of the `nn.Conv2d` model:
bias-free 1x1 stride-2 projections on odd grids and 3x3 stride-2 convolutions, i.e. `--use-resnet18
--use-custom-conv`. Convolution routines are forbidden (`static.CONV_MODULE`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import static
from ..compare import case_error, close, close_dict, generator, randn
from ..results import ItemGrade
from .. import childlib

F64, F32 = torch.float64, torch.float32

NUMBER = "1b-iv"
TITLE = "1b-iv ResNet-18 on your CustomConv2d"
POINTS = 1.0
BONUS = False
GROUP = "conv"
BUDGET_S = 60.0
REQUIRES = ("CustomConv2d",)
FORBIDDEN = static.CONV_MODULE


# ---------------------------------------------------------------------------------------------------------
# 1b-iv: torchvision ResNet-18 on CustomConv2d == on nn.Conv2d
# ---------------------------------------------------------------------------------------------------------
def inputs(ref):
    gen = generator(141)
    return {"num_classes": 5, "seed": 142, "x": randn(gen, 2, 3, 48, 40), "gout": randn(gen, 2, 5)}



def run(sc, inp, lib):
    model = lib.swap_convs(lib.build_resnet18(inp["num_classes"], inp["seed"]), sc.CustomConv2d)
    model.eval()
    x = inp["x"].clone().requires_grad_(True)
    out = model(x)
    res = {"out_eval": lib.plain(out)}
    out.backward(inp["gout"])
    res["gx"] = lib.plain(x.grad)
    sketches = []
    for i, (name, p) in enumerate(model.named_parameters()):
        sketches.append(lib.grad_sketch(i, p.grad) if p.grad is not None
                        else torch.full((4,), float("nan"), dtype=torch.float64))
    res["sketches"] = lib.plain(torch.stack(sketches))  # (P, 4)
    res["names"] = [n for n, _ in model.named_parameters()]
    model.train()
    with torch.no_grad():
        res["out_train"] = lib.plain(model(inp["x"]))
    return res


def expected(ref, inp):
    model = childlib.build_resnet18(inp["num_classes"], inp["seed"])
    model.eval()
    x = inp["x"].clone().requires_grad_(True)
    out = model(x)
    out.backward(inp["gout"])
    sketches = torch.stack([childlib.grad_sketch(i, p.grad) for i, (_, p) in enumerate(model.named_parameters())])
    names = [n for n, _ in model.named_parameters()]
    model.train()
    with torch.no_grad():
        out_train = model(inp["x"])
    return {"out_eval": out.detach(), "gx": x.grad, "sketches": sketches, "names": names, "out_train": out_train}



def score(inp, exp, out):
    grade = ItemGrade("1b-iv")
    err = case_error(out)
    if "out_eval" not in out:
        grade.fail(f"ResNet-18 with CustomConv2d raised {err}" if err else "no outputs came back")
        return grade
    ok, msg = close(out.get("out_eval"), exp["out_eval"], what="eval-mode logits")
    if ok:
        ok, msg = close(out.get("out_train"), exp["out_train"], what="train-mode logits")
    grade.add("outputs (eval and train mode) equal ResNet-18 on nn.Conv2d", 0.5, ok, msg)
    if err is not None and "gx" not in out:
        ok, msg = False, f"backward raised {err}"
    else:
        ok, msg = close(out.get("gx"), exp["gx"], what="gradient of the input")
        sk = out.get("sketches")
        if ok and (not isinstance(sk, torch.Tensor) or sk.shape != exp["sketches"].shape or sk.dtype != F64):
            ok, msg = False, "parameter gradients missing"
        elif ok:
            for i, name in enumerate(exp["names"]):
                ok, msg = close(sk[i], exp["sketches"][i], what=f"gradient of {name}", tol=(1e-12, 1e-7))
                if not ok:
                    msg = f"gradient of {name} differs" if bool(torch.isfinite(sk[i]).all()) else \
                        f"no gradient reached {name}"
                    break
    grade.add("gradients of the input and every parameter equal ResNet-18 on nn.Conv2d", 0.5, ok, msg)
    return grade

