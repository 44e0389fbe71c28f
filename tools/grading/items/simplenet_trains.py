"""1b-i (1 point): the given SimpleNet, built with the student's `CustomConv2d`, trains end to end.

`SimpleNet` itself is given code, so the item trains it with `conv_op=CustomConv2d` (as `--use-custom-conv`
does): the parameter count must be the given network's, six SGD steps on a fixed batch must lower the loss,
and the loss trajectory must equal the same network's on `nn.Conv2d` (float32 tolerance). Convolution
routines are forbidden here too (`static.CONV_MODULE`): `CustomConv2d = nn.Conv2d` earns nothing.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import static
from ..compare import case_error, close, close_dict, generator, randn
from ..results import ItemGrade
from ._common import perturbed_state, seeded_module

F64, F32 = torch.float64, torch.float32

NUMBER = "1b-i"
TITLE = "1b-i SimpleNet trains with your CustomConv2d"
POINTS = 1.0
BONUS = False
GROUP = "conv"
BUDGET_S = 40.0
REQUIRES = ("SimpleNet", "CustomConv2d")
FORBIDDEN = static.CONV_MODULE


# ---------------------------------------------------------------------------------------------------------
# 1b-i: SimpleNet with CustomConv2d trains
# ---------------------------------------------------------------------------------------------------------
def inputs(ref):
    gen = generator(111)
    model = seeded_module(lambda: ref.SimpleNet(conv_op=nn.Conv2d, num_classes=10), 112)
    return {"num_classes": 10, "state": {k: v.clone() for k, v in model.state_dict().items()},
            "x": randn(gen, 4, 3, 32, 32, dtype=F32), "y": torch.randint(0, 10, (4,), generator=gen),
            "steps": 6, "lr": 0.05, "momentum": 0.9}



def run(sc, inp, lib):
    out = {}
    model = sc.SimpleNet(conv_op=sc.CustomConv2d, num_classes=inp["num_classes"])
    out["n_params"] = int(sum(p.numel() for p in model.parameters()))
    losses = []
    try:
        try:
            model.load_state_dict(inp["state"])
        except BaseException as exc:  # noqa: B902 - a changed SimpleNet: its layers differ from the given
            out["load_error"] = lib.describe(exc)
            raise
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=inp["lr"], momentum=inp["momentum"])
        for step in range(inp["steps"]):
            loss = F.cross_entropy(model(inp["x"]), inp["y"])
            opt.zero_grad()
            loss.backward()
            if step == 0:
                out["no_grad"] = [n for n, p in model.named_parameters() if p.grad is None]
            opt.step()
            losses.append(float(loss.detach()))
    except BaseException as exc:  # noqa: B902
        out["error"] = lib.describe(exc)
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    return out


def expected(ref, inp):
    model = ref.SimpleNet(conv_op=nn.Conv2d, num_classes=inp["num_classes"])
    n_params = sum(p.numel() for p in model.parameters())
    model.load_state_dict(inp["state"])
    opt = torch.optim.SGD(model.parameters(), lr=inp["lr"], momentum=inp["momentum"])
    losses = []
    for _ in range(inp["steps"]):
        loss = F.cross_entropy(model(inp["x"]), inp["y"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"n_params": n_params, "losses": torch.tensor(losses, dtype=F64)}



def score(inp, exp, out):
    grade = ItemGrade("1b-i")
    err = case_error(out)
    n_params = out.get("n_params") if isinstance(out, dict) else None
    if not isinstance(n_params, int):
        grade.fail(f"SimpleNet(conv_op=CustomConv2d) could not be built and loaded: {err}")
        return grade
    if n_params != exp["n_params"] or out.get("load_error"):
        what = (f"SimpleNet has {n_params} parameters; the given network has {exp['n_params']}"
                if n_params != exp["n_params"] else "the given SimpleNet's weights do not fit your SimpleNet")
        grade.fail(f"{what}: SimpleNet is given code, restore it (build your own network in default_cnn_model)")
        return grade
    losses = out.get("losses")
    steps = inp["steps"]
    trains = (isinstance(losses, torch.Tensor) and losses.dtype == F64 and tuple(losses.shape) == (steps,)
              and bool(torch.isfinite(losses).all()) and float(losses[-1]) < float(losses[0]))
    no_grad = out.get("no_grad")
    if trains and isinstance(no_grad, list) and no_grad:
        trains = False
        detail = f"no gradient reached {', '.join(map(str, no_grad[:3]))}"
    elif trains:
        detail = f"loss {float(losses[0]):.4f} -> {float(losses[-1]):.4f} in {steps} SGD steps"
    elif err is not None:
        detail = f"training raised {err}"
    elif isinstance(losses, torch.Tensor) and losses.numel() == steps:
        detail = f"the loss did not decrease ({', '.join(f'{float(v):.4f}' for v in losses)})"
    else:
        detail = "no loss values came back"
    grade.add(f"SimpleNet with CustomConv2d trains ({steps} SGD steps on a fixed batch lower the loss)", 0.5,
              trains, detail)
    if trains:
        ok, msg = close(losses, exp["losses"], what="loss trajectory", tol=(1e-4, 1e-3))
    else:
        ok, msg = False, "not trained"
    grade.add("the loss trajectory equals SimpleNet on nn.Conv2d with the same weights", 0.5, ok, msg)
    return grade

