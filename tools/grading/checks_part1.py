"""Part 1 checks (trusted grading process): inputs, reference outputs and scoring of 1a, 1b-i..1b-iv.

Each item has `inputs_<item>()` (seeded tensors given to the child), `expected_<item>(ref, inp)` (computed
here from PyTorch's own ops and the kit's reference code, never from the submission) and
`score_<item>(inp, exp, out, findings) -> ItemGrade` where `out` is what the child returned (untrusted:
every value is validated) and `findings` the trusted static findings for the item.

Public-style cases name their exact configuration in messages; hidden ones name only the property.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import harness
from .compare import case_error, close, close_dict, generator, randn, summarize
from .results import ItemGrade

F64, F32 = torch.float64, torch.float32

# ---------------------------------------------------------------------------------------------------------
# 1a: custom_conv2d
# ---------------------------------------------------------------------------------------------------------
# (N, C_in, C_out, H, W, K, stride, padding, bias, dtype, public, hint)
CONV_CASES = (
    (2, 3, 4, 7, 9, 3, 1, 1, True, F64, True, ""),
    (2, 3, 4, 8, 8, 3, 2, 1, False, F64, True, ""),
    (1, 1, 2, 6, 5, 1, 1, 0, True, F64, True, ""),
    (1, 2, 3, 11, 8, 5, 2, 2, False, F64, True, ""),
    (2, 3, 4, 9, 7, 3, 1, 1, True, F32, True, ""),
    (2, 4, 3, 9, 7, 1, 2, 0, True, F64, False, "1x1 kernel with stride 2 on odd sizes"),
    (2, 2, 3, 7, 8, 1, 3, 1, False, F64, False, "1x1 kernel with padding and stride 3"),
    (1, 1, 1, 10, 12, 7, 3, 3, True, F64, False, "7x7 kernel, stride 3, one channel, batch 1"),
    (2, 3, 2, 6, 9, 2, 2, 0, True, F64, False, "even kernel size"),
    (3, 2, 2, 5, 4, 4, 1, 3, True, F64, False, "padding close to the kernel size"),
    (2, 3, 4, 10, 8, 3, 3, 0, True, F64, False, "a stride that leaves rows and columns unused"),
    (1, 3, 5, 6, 6, 6, 1, 0, True, F64, False, "kernel as large as the input (1x1 output)"),
    (4, 16, 8, 12, 10, 3, 1, 1, True, F32, False, "float32 with more channels"),
)
# edge cases (component 4): (base case index, kind, hint)
EDGE_CASES = (
    (0, "noncontig", "a non-contiguous input tensor"),
    (0, "relu", "an in-place ReLU applied to the output (the output must be a fresh tensor)"),
    (1, "no_x_grad", "an input that needs no gradient (see ctx.needs_input_grad)"),
)


def _case_text(case):
    n, ci, co, h, w, k, s, p, bias, dtype, public, hint = case
    if public:
        return (f"stride={s}, padding={p}, bias={'yes' if bias else 'None'}, kernel {k}x{k}, input "
                f"(N={n}, C_in={ci}, H={h}, W={w}), C_out={co}, {str(dtype).replace('torch.', '')}")
    return f"a hidden case ({hint})"


def inputs_1a():
    gen = generator(101)
    cases = []
    specs = [(c, "main", "") for c in CONV_CASES] + [(CONV_CASES[i], kind, hint) for i, kind, hint in EDGE_CASES]
    for case, kind, _ in specs:
        n, ci, co, h, w, k, s, p, bias, dtype, _, _ = case
        h_out, w_out = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        c = {"x": randn(gen, n, ci, h, w).to(dtype),
             "w": randn(gen, co, ci, k, k, scale=(ci * k * k) ** -0.5).to(dtype),
             "gout": randn(gen, n, co, h_out, w_out).to(dtype),
             "stride": s, "padding": p, "noncontig": kind == "noncontig", "relu": kind == "relu",
             "x_grad": kind != "no_x_grad"}
        if bias:
            c["b"] = randn(gen, co).to(dtype)
        cases.append(c)
    return {"cases": cases}


def expected_1a(ref, inp):
    out = []
    for c in inp["cases"]:
        dtype = c["x"].dtype
        x = c["x"].detach().double().clone().requires_grad_(c["x_grad"])
        w = c["w"].detach().double().clone().requires_grad_(True)
        b = c["b"].detach().double().clone().requires_grad_(True) if "b" in c else None
        y = F.conv2d(x, w, b, stride=c["stride"], padding=c["padding"])
        if c["relu"]:
            y = F.relu(y)
        y.backward(c["gout"].double())
        e = {"out": y.detach().to(dtype), "gw": w.grad.to(dtype)}
        if c["x_grad"]:
            e["gx"] = x.grad.to(dtype)
        if b is not None:
            e["gb"] = b.grad.to(dtype)
        out.append(e)
    return {"cases": out}


def _forbidden(grade, out, findings):
    for f in findings:
        grade.forbid(f)
    flags = out.get("forbidden") if isinstance(out, dict) else None
    if isinstance(flags, list) and flags:
        grade.forbid(str(flags[0])[:300])


def score_1a(inp, exp, out, findings):
    grade = ItemGrade("1a")
    _forbidden(grade, out, findings)
    results = out.get("cases") if isinstance(out, dict) else None
    if not isinstance(results, list) or len(results) != len(inp["cases"]):
        grade.fail("no per-case results came back")
        return grade
    n_main = len(CONV_CASES)
    fails = {"out": [], "gx": [], "gw": [], "edge": []}
    edge_fails = []  # (quantity, message): bias gradients and the edge cases
    texts = [_case_text(c) for c in CONV_CASES] + [f"a case with {hint}" for _, _, hint in EDGE_CASES]
    names = {"out": "forward", "gx": "grad_input", "gw": "grad_weight", "gb": "grad_bias"}
    for i, (e, r) in enumerate(zip(exp["cases"], results)):
        err = case_error(r)
        r = r if isinstance(r, dict) else {}
        for key, want in e.items():
            if key in r:
                ok, msg = close(r[key], want, what=names[key])
            else:
                ok, msg = False, (f"raised {err}" if err else f"{names[key]} is missing")
            if not ok:
                if i < n_main and key != "gb":
                    fails[key].append(f"{msg} for {texts[i]}")
                else:
                    edge_fails.append((key, f"{msg} for {texts[i]}"))
    # an edge case costs the edge component only where the main cases did not already lose that quantity
    fails["edge"] = [m for key, m in edge_fails if key == "gb" or not fails[key]]
    grade.add("forward matches F.conv2d", 0.5, not fails["out"], summarize(fails["out"], n_main, "cases"))
    grade.add("grad_input matches autograd of F.conv2d", 0.5, not fails["gx"],
              summarize(fails["gx"], n_main, "cases"))
    grade.add("grad_weight matches autograd of F.conv2d", 0.5, not fails["gw"],
              summarize(fails["gw"], n_main, "cases"))
    grade.add("grad_bias, bias=None and edge cases", 0.5, not fails["edge"],
              summarize(fails["edge"], len(inp["cases"]), "checks"))
    return grade


# ---------------------------------------------------------------------------------------------------------
# shared: reference SimpleNet weights
# ---------------------------------------------------------------------------------------------------------
def _seeded_module(build, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _perturbed_state(model, seed, scale=0.05):
    """The state dict of `model` plus seeded noise on every floating tensor (so no bias is exactly 0 and no
    norm weight exactly 1)."""
    gen = generator(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------
# 1b-i: SimpleNet with CustomConv2d trains
# ---------------------------------------------------------------------------------------------------------
def inputs_1b_i(ref):
    gen = generator(111)
    model = _seeded_module(lambda: ref.SimpleNet(conv_op=nn.Conv2d, num_classes=10), 112)
    return {"num_classes": 10, "state": {k: v.clone() for k, v in model.state_dict().items()},
            "x": randn(gen, 4, 3, 32, 32, dtype=F32), "y": torch.randint(0, 10, (4,), generator=gen),
            "steps": 6, "lr": 0.05, "momentum": 0.9}


def expected_1b_i(ref, inp):
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


def score_1b_i(inp, exp, out, findings):
    grade = ItemGrade("1b-i")
    err = case_error(out)
    n_params = out.get("n_params") if isinstance(out, dict) else None
    if not isinstance(n_params, int):
        grade.fail(f"SimpleNet(conv_op=CustomConv2d) could not be built and loaded: {err}")
        return grade
    if n_params != exp["n_params"]:
        grade.fail(f"SimpleNet has {n_params} parameters; the given network has {exp['n_params']}: "
                   f"SimpleNet is given code, restore it")
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


# ---------------------------------------------------------------------------------------------------------
# 1b-ii: SimpleNet(CustomConv2d) == SimpleNet(nn.Conv2d), float64
# ---------------------------------------------------------------------------------------------------------
def inputs_1b_ii(ref):
    gen = generator(121)
    model = _seeded_module(lambda: ref.SimpleNet(conv_op=nn.Conv2d, num_classes=7), 122).double()
    return {"num_classes": 7, "state": _perturbed_state(model, 123, scale=0.01),
            "x": randn(gen, 2, 3, 40, 36), "gout": randn(gen, 2, 7)}


def expected_1b_ii(ref, inp):
    model = ref.SimpleNet(conv_op=nn.Conv2d, num_classes=inp["num_classes"]).double()
    model.load_state_dict(inp["state"])
    x = inp["x"].clone().requires_grad_(True)
    out = model(x)
    out.backward(inp["gout"])
    return {"out": out.detach(), "gx": x.grad, "grads": {n: p.grad for n, p in model.named_parameters()}}


def score_1b_ii(inp, exp, out, findings):
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


# ---------------------------------------------------------------------------------------------------------
# 1b-iii: default_cnn_model (the student's design): property checks
# ---------------------------------------------------------------------------------------------------------
BUDGET = 2_000_000


def inputs_1b_iii(ref):
    gen = generator(131)
    sizes = ((10, 2, 32, 32), (37, 2, 64, 48), (3, 1, 40, 56))
    return {"shape_classes": [s[0] for s in sizes],
            "shape_inputs": [randn(gen, n, 3, h, w, dtype=F32) for _, n, h, w in sizes],
            "budget_classes": 100, "x": randn(gen, 8, 3, 32, 32, dtype=F32),
            "y": torch.randint(0, 10, (8,), generator=gen), "steps": 30, "lr": 1e-3}


def expected_1b_iii(ref, inp):
    return {"shapes": [(x.shape[0], nc) for nc, x in zip(inp["shape_classes"], inp["shape_inputs"])]}


def _stage(out, name):
    value = out.get(name) if isinstance(out, dict) else None
    if not isinstance(value, dict):
        return None, "did not run"
    err = case_error(value)
    return value, (f"raised {err}" if err else None)


def score_1b_iii(inp, exp, out, findings):
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
        n_rec, n_other, shape = st.get("n_rec"), st.get("n_other"), st.get("shape")
        if not isinstance(n_rec, int) or n_rec < 1:
            ok, detail = False, "no convolution was built with conv_op"
        elif n_other != 0:
            ok, detail = False, f"{n_other} convolution(s) were not built with conv_op"
        elif not isinstance(shape, torch.Tensor) or shape.tolist() != [inp["x"].shape[0], 10]:
            ok, detail = False, "the model built with conv_op gives the wrong output shape"
    st, err = _stage(out, "grads")
    if ok:
        if err is not None:
            ok, detail = False, f"training step {err}"
        elif st.get("missing"):
            ok, detail = False, f"no gradient reached {', '.join(map(str, st['missing'][:3]))}"
        elif st.get("nonfinite"):
            ok, detail = False, f"non-finite gradient in {', '.join(map(str, st['nonfinite'][:3]))}"
        elif not isinstance(st.get("n_trainable"), int) or st["n_trainable"] < 1:
            ok, detail = False, "the model has no trainable parameters"
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


# ---------------------------------------------------------------------------------------------------------
# 1b-iv: torchvision ResNet-18 on CustomConv2d == on nn.Conv2d
# ---------------------------------------------------------------------------------------------------------
def inputs_1b_iv(ref):
    gen = generator(141)
    return {"num_classes": 5, "seed": 142, "x": randn(gen, 2, 3, 48, 40), "gout": randn(gen, 2, 5)}


def expected_1b_iv(ref, inp):
    model = harness.build_resnet18(inp["num_classes"], inp["seed"])
    model.eval()
    x = inp["x"].clone().requires_grad_(True)
    out = model(x)
    out.backward(inp["gout"])
    sketches = torch.stack([harness.grad_sketch(i, p.grad) for i, (_, p) in enumerate(model.named_parameters())])
    names = [n for n, _ in model.named_parameters()]
    model.train()
    with torch.no_grad():
        out_train = model(inp["x"])
    return {"out_eval": out.detach(), "gx": x.grad, "sketches": sketches, "names": names, "out_train": out_train}


def score_1b_iv(inp, exp, out, findings):
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


INPUTS = {"1a": lambda ref: inputs_1a(), "1b-i": inputs_1b_i, "1b-ii": inputs_1b_ii, "1b-iii": inputs_1b_iii,
          "1b-iv": inputs_1b_iv}
EXPECTED = {"1a": expected_1a, "1b-i": expected_1b_i, "1b-ii": expected_1b_ii, "1b-iii": expected_1b_iii,
            "1b-iv": expected_1b_iv}
SCORE = {"1a": score_1a, "1b-i": score_1b_i, "1b-ii": score_1b_ii, "1b-iii": score_1b_iii, "1b-iv": score_1b_iv}
