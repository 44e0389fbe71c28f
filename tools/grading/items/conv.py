"""1a (2 points): `custom_conv2d` / `CustomConv2DFunction` forward and backward vs `F.conv2d` and its autograd.

Thirteen configurations (five public, named with their exact configuration in messages; eight hidden,
named by the property they test) plus three edge cases (non-contiguous input, in-place ReLU on the output,
an input that needs no gradient), float64 and float32. Convolution routines are forbidden (`static.CONV`:
the static scan of the conv scope and the operators recorded while the item runs).
"""
import torch
import torch.nn.functional as F

from .. import static
from ..compare import case_error, close, generator, randn, summarize
from ..results import ItemGrade

NUMBER = "1a"
TITLE = "1a CustomConv2DFunction: forward and backward"
POINTS = 2.0
BONUS = False
GROUP = "conv"
BUDGET_S = 40.0
REQUIRES = ("CustomConv2DFunction", "custom_conv2d")
FORBIDDEN = static.CONV
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



def inputs(ref):
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



def run(sc, inp, lib):
    cases = []
    for c in inp["cases"]:
        res = {}
        try:
            if c["noncontig"]:  # same values as c["x"], non-contiguous memory
                base = c["x"].transpose(2, 3).contiguous().requires_grad_(c["x_grad"])  # (N, C, W, H)
                x = base.transpose(2, 3)  # (N, C, H, W) view
            else:
                base = c["x"].clone().requires_grad_(c["x_grad"])
                x = base
            w = c["w"].clone().requires_grad_(True)
            b = c["b"].clone().requires_grad_(True) if "b" in c else None
            out = sc.custom_conv2d(x, w, b, int(c["stride"]), int(c["padding"]))
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"custom_conv2d returned {type(out).__name__}, not a tensor")
            if c["relu"]:
                out = out.relu_()  # in-place on the output: it must be a fresh tensor
            res["out"] = lib.plain(out)
            out.backward(c["gout"])
            if c["x_grad"] and base.grad is not None:
                res["gx"] = lib.plain(base.grad.transpose(2, 3) if c["noncontig"] else base.grad)
            if w.grad is not None:
                res["gw"] = lib.plain(w.grad)
            if b is not None and b.grad is not None:
                res["gb"] = lib.plain(b.grad)
        except BaseException as exc:  # noqa: B902 - SystemExit/KeyboardInterrupt from student code too
            res["error"] = lib.describe(exc)
        cases.append(res)
    return {"cases": cases}


def expected(ref, inp):
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



def score(inp, exp, out):
    grade = ItemGrade("1a")
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

