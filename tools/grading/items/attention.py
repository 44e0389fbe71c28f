"""2a (2 points): `Attention` vs the same math written here with `F.scaled_dot_product_attention`.

Outputs, input and parameter gradients, float64 and float32, on six configurations (three public, three
hidden). Attention routines are forbidden (`static.ATTENTION`): the static scan of `Attention`'s scope, the
operators recorded while the item runs (all threads, decomposed operators included), and the raw facts the
child returns (calls to the library entry points, the classes of the module's submodules), all judged here.
"""
import torch
import torch.nn as nn  # noqa: F401 - used by run() in the sandbox
import torch.nn.functional as F

from .. import static
from ..compare import case_error, close, close_dict, generator, randn, summarize
from ..results import ItemGrade

NUMBER = "2a"
TITLE = "2a Attention"
POINTS = 2.0
BONUS = False
GROUP = "vit"
BUDGET_S = 40.0
REQUIRES = ("Attention",)
FORBIDDEN = static.ATTENTION
F64, F32 = torch.float64, torch.float32
FORBIDDEN_CLASSES = ("torch.nn.modules.activation.MultiheadAttention",)

# (B, H, W, dim, heads, qkv_bias, dtype, public, hint)
ATTN_CASES = (
    (2, 3, 5, 16, 4, True, F64, True, ""),
    (1, 4, 4, 12, 1, True, F64, True, ""),
    (2, 3, 4, 32, 8, True, F32, True, ""),
    (2, 2, 7, 24, 6, False, F64, False, "qkv_bias=False with 6 heads"),
    (3, 5, 3, 8, 2, True, F64, False, "batch 3 on a 5x3 grid"),
    (1, 1, 1, 8, 2, True, F64, False, "a single token"),
)


def _attn_text(case):
    b, h, w, dim, heads, qkv_bias, dtype, public, hint = case
    if public:
        return (f"x of shape (B={b}, H={h}, W={w}, C={dim}), num_heads={heads}, qkv_bias={qkv_bias}, "
                f"{str(dtype).replace('torch.', '')}")
    return f"a hidden case ({hint})"



def inputs(ref):
    gen = generator(201)
    cases = []
    for b, h, w, dim, heads, qkv_bias, dtype, _, _ in ATTN_CASES:
        state = {"qkv.weight": randn(gen, 3 * dim, dim, scale=2.0 * dim ** -0.5),
                 "proj.weight": randn(gen, dim, dim, scale=dim ** -0.5), "proj.bias": randn(gen, dim, scale=0.1)}
        if qkv_bias:
            state["qkv.bias"] = randn(gen, 3 * dim, scale=0.3)
        cases.append({"dim": dim, "heads": heads, "qkv_bias": qkv_bias,
                      "state": {k: v.to(dtype) for k, v in state.items()},
                      "x": randn(gen, b, h, w, dim).to(dtype), "gout": randn(gen, b, h, w, dim).to(dtype)})
    return {"cases": cases}



def run(sc, inp, lib):
    calls = {"F.scaled_dot_product_attention": 0, "F.multi_head_attention_forward": 0,
             "nn.MultiheadAttention.forward": 0}
    saved = [(F, "scaled_dot_product_attention"), (F, "multi_head_attention_forward"),
             (nn.MultiheadAttention, "forward")]
    originals = [getattr(owner, attr) for owner, attr in saved]

    def counting(key, original):
        def wrapper(*args, **kwargs):
            calls[key] += 1
            return original(*args, **kwargs)
        return wrapper

    for (owner, attr), key, original in zip(saved, calls, originals):
        setattr(owner, attr, counting(key, original))
    cases, classes = [], []
    try:
        for c in inp["cases"]:
            res = {}
            try:
                attn = sc.Attention(c["dim"], num_heads=c["heads"], qkv_bias=c["qkv_bias"]).to(c["x"].dtype)
                classes.extend(lib.module_classes(attn))
                attn.load_state_dict(c["state"])
                x = c["x"].clone().requires_grad_(True)
                out = attn(x)
                res["out"] = lib.plain(out)
                out.backward(c["gout"])
                res["gx"] = lib.plain(x.grad)
                res["grads"] = lib.grads(attn)
            except BaseException as exc:  # noqa: B902
                res["error"] = lib.describe(exc)
            cases.append(res)
    finally:
        for (owner, attr), original in zip(saved, originals):
            setattr(owner, attr, original)
    return {"cases": cases, "calls": dict(calls), "classes": sorted(set(classes))[:200]}


def reference_attention(x, params, heads):
    """Multi-head self-attention of `x (B, H, W, C)` with SDPA; `params` holds qkv/proj weights."""
    B, H, W, C = x.shape
    qkv = F.linear(x, params["qkv.weight"], params.get("qkv.bias"))  # (B, H, W, 3C)
    qkv = qkv.reshape(B, H * W, 3, heads, C // heads).permute(2, 0, 3, 1, 4)  # (3, B, nh, L, hd)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, nh, L, hd)
    out = out.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C)
    return F.linear(out, params["proj.weight"], params["proj.bias"])



def expected(ref, inp):
    out = []
    for c in inp["cases"]:
        dtype = c["x"].dtype
        params = {k: v.detach().double().clone().requires_grad_(True) for k, v in c["state"].items()}
        x = c["x"].detach().double().clone().requires_grad_(True)
        y = reference_attention(x, params, c["heads"])
        y.backward(c["gout"].double())
        out.append({"out": y.detach().to(dtype), "gx": x.grad.to(dtype),
                    "grads": {k: p.grad.to(dtype) for k, p in params.items()}})
    return {"cases": out}



def _mismatches(r, e, err, input_grad_name):
    """`[(key, message)]` for each of a case's results (`out`, `gx`, `grads`) that is missing or differs
    from the expected one `e`; `err` is the case's exception text, if it raised."""
    out = []
    for key, what in (("out", "output"), ("gx", input_grad_name), ("grads", "parameter gradients")):
        if key not in r:
            ok, msg = False, (f"raised {err}" if err else f"{what} missing")
        elif key == "grads":
            ok, msg = close_dict(r[key], e[key], "gradient")
        else:
            ok, msg = close(r[key], e[key], what=what)
        if not ok:
            out.append((key, msg))
    return out



def score(inp, exp, out):
    grade = ItemGrade("2a")
    calls = out.get("calls")
    if isinstance(calls, dict):
        for key, n in sorted(calls.items()):
            if isinstance(n, int) and n > 0:
                grade.forbid(f"{key} was called inside Attention: this part must be written without it")
    else:
        grade.forbid("the record of library calls did not come back")
    classes = out.get("classes")
    if isinstance(classes, list):
        for name in classes:
            if name in FORBIDDEN_CLASSES:
                grade.forbid(f"Attention contains a {name.rsplit('.', 1)[-1]}: this part must be written without it")
    results = out.get("cases") if isinstance(out, dict) else None
    if not isinstance(results, list) or len(results) != len(inp["cases"]):
        grade.fail("no per-case results came back")
        return grade
    fails = {"out": [], "gx": [], "grads": []}
    for case, e, r in zip(ATTN_CASES, exp["cases"], results):
        err = case_error(r)
        r = r if isinstance(r, dict) else {}
        text = _attn_text(case)
        for key, msg in _mismatches(r, e, err, "gradient of x"):
            fails[key].append(f"{msg} for {text}")
    n = len(ATTN_CASES)
    grade.add("output matches softmax(QK^T * scale)V attention (reference: F.scaled_dot_product_attention)", 1.0,
              not fails["out"], summarize(fails["out"], n, "cases"))
    grade.add("gradient of the input", 0.5, not fails["gx"], summarize(fails["gx"], n, "cases"))
    grade.add("gradients of qkv and proj", 0.5, not fails["grads"], summarize(fails["grads"], n, "cases"))
    return grade

