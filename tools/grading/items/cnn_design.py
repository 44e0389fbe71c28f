"""1b-iii (1 point): `default_cnn_model`, the student's own design: property checks, decided here.

The child only builds and runs the student's model and returns raw facts (output shapes, the parameter
count, per submodule whether it was built with the `conv_op` given or is another convolution class, the
trainable parameter names and their gradients, the losses of 30 Adam steps); every verdict is computed in
this (grading) process: output `(N, num_classes)` on three sizes, at most 2M parameters, every convolution
built with `conv_op` and every trainable parameter receiving a finite gradient, and the loss at least
halving on a fixed batch.
"""
import torch

from ..compare import case_error, generator, randn
from ..results import ItemGrade

NUMBER = "1b-iii"
TITLE = "1b-iii default_cnn_model"
POINTS = 1.0
BONUS = False
GROUP = "cnn"
BUDGET_S = 90.0
REQUIRES = ("default_cnn_model",)
F32 = torch.float32

# ---------------------------------------------------------------------------------------------------------
# 1b-iii: default_cnn_model (the student's design): property checks
# ---------------------------------------------------------------------------------------------------------
BUDGET = 2_000_000



def inputs(ref):
    gen = generator(131)
    sizes = ((10, 2, 32, 32), (37, 2, 64, 48), (3, 1, 40, 56))
    return {"shape_classes": [s[0] for s in sizes],
            "shape_inputs": [randn(gen, n, 3, h, w, dtype=F32) for _, n, h, w in sizes],
            "budget_classes": 100, "x": randn(gen, 8, 3, 32, 32, dtype=F32),
            "y": torch.randint(0, 10, (8,), generator=gen), "steps": 30, "lr": 1e-3}



def run(sc, inp, lib):
    res = {}

    def shapes():
        shapes = []
        for nc, x in zip(inp["shape_classes"], inp["shape_inputs"]):
            torch.manual_seed(0)
            model = sc.default_cnn_model(num_classes=int(nc))
            model.eval()
            with torch.no_grad():
                shapes.append(torch.tensor(list(model(x).shape)))
        return {"shapes": shapes}

    def budget():
        torch.manual_seed(0)
        model = sc.default_cnn_model(num_classes=inp["budget_classes"])
        return {"n_params": int(sum(p.numel() for p in model.parameters()))}

    def conv_op():
        torch.manual_seed(0)
        model = sc.default_cnn_model(conv_op=lib.RecordingConv, num_classes=10)
        custom = getattr(sc, "CustomConv2d", None)
        kinds = []  # per submodule: (built with conv_op, another convolution class)
        for m in model.modules():
            other = isinstance(m, nn.modules.conv._ConvNd) or (isinstance(custom, type) and isinstance(m, custom))
            kinds.append([isinstance(m, lib.RecordingConv), bool(other)])
        model.eval()
        with torch.no_grad():
            shape = torch.tensor(list(model(inp["x"]).shape))
        return {"kinds": torch.tensor(kinds, dtype=torch.bool).reshape(-1, 2), "shape": shape}

    def grads():
        torch.manual_seed(0)
        model = sc.default_cnn_model(num_classes=10)
        model.train()
        F.cross_entropy(model(inp["x"]), inp["y"]).backward()
        return {"trainable": [n for n, p in model.named_parameters() if p.requires_grad],
                "grads": lib.grads(model)}

    def overfit():
        torch.manual_seed(0)
        model = sc.default_cnn_model(num_classes=10)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=inp["lr"])
        losses = []
        for _ in range(inp["steps"]):
            loss = F.cross_entropy(model(inp["x"]), inp["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return {"losses": torch.tensor(losses, dtype=torch.float64)}

    for name, fn in (("shapes", shapes), ("budget", budget), ("conv_op", conv_op), ("grads", grads),
                     ("overfit", overfit)):
        lib.stage(res, name, fn)
    return res


def expected(ref, inp):
    return {"shapes": [(x.shape[0], nc) for nc, x in zip(inp["shape_classes"], inp["shape_inputs"])]}



def _stage(out, name):
    value = out.get(name) if isinstance(out, dict) else None
    if not isinstance(value, dict):
        return None, "did not run"
    err = case_error(value)
    return value, (f"raised {err}" if err else None)



def score(inp, exp, out):
    grade = ItemGrade("1b-iii")
    sizes = ", ".join(f"num_classes={nc} on {tuple(x.shape[2:])}"
                      for nc, x in zip(inp["shape_classes"], inp["shape_inputs"]))
    st, err = _stage(out, "shapes")
    ok, detail = err is None, err or ""
    if ok:
        got = st.get("shapes")
        want = exp["shapes"]
        if not isinstance(got, list) or len(got) != len(want):
            ok, detail = False, "no output shapes came back"
        else:
            for g, w in zip(got, want):
                if not isinstance(g, torch.Tensor) or g.tolist() != list(w):
                    ok = False
                    detail = f"output shape {g.tolist() if isinstance(g, torch.Tensor) else g}, expected {list(w)}"
                    break
    grade.add(f"output (N, num_classes) for {sizes}", 0.25, ok, detail)

    st, err = _stage(out, "budget")
    n = st.get("n_params") if st else None
    ok = err is None and isinstance(n, int) and 0 < n <= BUDGET
    detail = err or (f"{n:,} parameters (budget {BUDGET:,})" if isinstance(n, int) else "no count came back")
    grade.add("at most 2M parameters (num_classes=100)", 0.25, ok, detail)

    st, err = _stage(out, "conv_op")
    ok, detail = err is None, err or ""
    if ok:
        kinds, shape = st.get("kinds"), st.get("shape")
        if not isinstance(kinds, torch.Tensor) or kinds.dtype != torch.bool or kinds.dim() != 2:
            ok, detail = False, "no convolution was built with conv_op"
        elif int(kinds[:, 0].sum()) < 1:
            ok, detail = False, "no convolution was built with conv_op"
        elif int((kinds[:, 1] & ~kinds[:, 0]).sum()) != 0:
            ok, detail = False, f"{int((kinds[:, 1] & ~kinds[:, 0]).sum())} convolution(s) were not built with conv_op"
        elif not isinstance(shape, torch.Tensor) or shape.tolist() != [inp["x"].shape[0], 10]:
            ok, detail = False, "the model built with conv_op gives the wrong output shape"
    st, err = _stage(out, "grads")
    if ok:
        trainable = st.get("trainable") if st else None
        got = st.get("grads") if st else None
        if err is not None:
            ok, detail = False, f"training step {err}"
        elif not isinstance(trainable, list) or not isinstance(got, dict) or not trainable:
            ok, detail = False, "the model has no trainable parameters"
        else:
            missing = [n for n in trainable if not isinstance(got.get(n), torch.Tensor)]
            bad = [n for n in trainable if n not in missing and not bool(torch.isfinite(got[n]).all())]
            if missing:
                ok, detail = False, f"no gradient reached {', '.join(map(str, missing[:3]))}"
            elif bad:
                ok, detail = False, f"non-finite gradient in {', '.join(map(str, bad[:3]))}"
    grade.add("every convolution built with conv_op; every parameter gets a finite gradient", 0.25, ok, detail)

    st, err = _stage(out, "overfit")
    losses = st.get("losses") if st else None
    ok, detail = False, err or "no loss values came back"
    if err is None and isinstance(losses, torch.Tensor) and tuple(losses.shape) == (inp["steps"],):
        if not bool(torch.isfinite(losses).all()):
            detail = "the loss became NaN or inf"
        else:
            first, best_late = float(losses[0]), float(losses[-5:].min())
            ok = best_late < 0.5 * first
            detail = (f"loss {first:.3f} -> {float(losses[-1]):.3f} in {inp['steps']} Adam steps (lr "
                      f"{inp['lr']:g}) on a fixed batch of {inp['x'].shape[0]}" + ("" if ok else ": it should at "
                                                                                   "least halve"))
    grade.add("fits a small fixed batch", 0.25, ok, detail)
    return grade

