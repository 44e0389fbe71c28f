"""Part 2 checks (trusted grading process): inputs, reference outputs and scoring of 2a and 2b.

2a: the submission's `Attention` (weights loaded from here) vs the same math written with
`F.scaled_dot_product_attention` here: outputs, input and parameter gradients, float64 and float32.
2b: `TransformerBlock` (global; windowed with and without padding) and `SimpleViT` (reference weights loaded by
name, eval mode) vs the kit's reference built from the same weights; plus properties (parameter count and
output of `default_vit_model`, stochastic depth active only in train mode, on both residual branches
(`drop_path=1` makes a block the identity in train mode) and rising linearly over the blocks (a depth-2
`SimpleViT` with `drop_path_rate=1` vs the reference in train mode), `use_abs_pos=False`). The sandbox
grades 2b with a correct Attention substituted (rubric.py).
"""
import torch
import torch.nn.functional as F

from .checks_part1 import _perturbed_state, _seeded_module
from .compare import case_error, close, close_dict, generator, randn, summarize
from .results import ItemGrade

F64, F32 = torch.float64, torch.float32

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


def inputs_2a(ref):
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


def reference_attention(x, params, heads):
    """Multi-head self-attention of `x (B, H, W, C)` with SDPA; `params` holds qkv/proj weights."""
    B, H, W, C = x.shape
    qkv = F.linear(x, params["qkv.weight"], params.get("qkv.bias"))  # (B, H, W, 3C)
    qkv = qkv.reshape(B, H * W, 3, heads, C // heads).permute(2, 0, 3, 1, 4)  # (3, B, nh, L, hd)
    out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, nh, L, hd)
    out = out.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C)
    return F.linear(out, params["proj.weight"], params["proj.bias"])


def expected_2a(ref, inp):
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


def score_2a(inp, exp, out, findings):
    grade = ItemGrade("2a")
    for f in findings:
        grade.forbid(f)
    flags = out.get("forbidden") if isinstance(out, dict) else None
    if isinstance(flags, list) and flags:
        grade.forbid(str(flags[0])[:300])
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


# ---------------------------------------------------------------------------------------------------------
# 2b
# ---------------------------------------------------------------------------------------------------------
# (kwargs, x shape, public, hint)
BLOCK_CASES = (
    (dict(dim=16, num_heads=4, mlp_ratio=2.0, qkv_bias=True, drop_path=0.2, window_size=0), (2, 5, 6, 16),
     True, "global attention"),
    (dict(dim=16, num_heads=2, mlp_ratio=2.0, qkv_bias=True, drop_path=0.0, window_size=4), (2, 5, 7, 16),
     True, "window attention, window 4 on a 5x7 grid (padding needed)"),
    (dict(dim=16, num_heads=4, mlp_ratio=1.5, qkv_bias=False, drop_path=0.1, window_size=3), (1, 6, 6, 16),
     False, "window attention without padding, qkv_bias=False"),
    (dict(dim=8, num_heads=2, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, window_size=8), (1, 3, 5, 8),
     False, "a window larger than the grid"),
)
VIT_KWARGS = dict(img_size=64, num_classes=10, patch_size=16, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0,
                  drop_path_rate=0.2, window_size=2, window_block_indexes=(0, 2))
VIT_CASES = (
    (VIT_KWARGS, (2, 3, 64, 64), True, "SimpleViT(img_size=64, patch_size=16, embed_dim=32, depth=3, "
                                       "num_heads=4, window_size=2, window_block_indexes=(0, 2)) on 64x64"),
    (VIT_KWARGS, (1, 3, 48, 64), False, "an input size other than img_size (position embedding resized)"),
    (dict(img_size=32, num_classes=6, patch_size=8, embed_dim=24, depth=2, num_heads=3, mlp_ratio=2.0,
          qkv_bias=False, drop_path_rate=0.1, window_size=3, window_block_indexes=(1,)), (2, 3, 32, 32), False,
     "patch 8, window 3 with padding, qkv_bias=False"),
)
PROP_KWARGS = dict(img_size=32, num_classes=5, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
                   window_size=2, window_block_indexes=(0,))
# stochastic depth at rate 1 (deterministic in train mode): a block that drops both branches always, and a
# depth-2 SimpleViT whose rates rise linearly 0 -> 1 (first block never dropped, last block always)
DROP_BLOCK_KWARGS = dict(dim=16, num_heads=4, mlp_ratio=2.0, qkv_bias=True, drop_path=1.0, window_size=0)
DROP_VIT_KWARGS = dict(img_size=32, num_classes=5, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
                       drop_path_rate=1.0, window_size=2, window_block_indexes=(0,))


def inputs_2b(ref):
    gen = generator(211)
    blocks, vits = [], []
    for i, (kwargs, shape, _, _) in enumerate(BLOCK_CASES):
        model = _seeded_module(lambda: ref.TransformerBlock(**kwargs), 212 + i).double()
        blocks.append({"kwargs": dict(kwargs), "state": _perturbed_state(model, 220 + i),
                       "x": randn(gen, *shape), "gout": randn(gen, *shape)})
    for i, (kwargs, shape, _, _) in enumerate(VIT_CASES):
        model = _seeded_module(lambda: ref.SimpleViT(**kwargs), 230 + i).double()
        vits.append({"kwargs": dict(kwargs), "state": _perturbed_state(model, 240 + i),
                     "x": randn(gen, *shape), "gout": randn(gen, shape[0], kwargs["num_classes"])})
    props = {"classes": 37, "x128": randn(gen, 1, 3, 128, 128, dtype=F32), "kwargs": dict(PROP_KWARGS),
             "x": randn(gen, 4, 3, 32, 32), "high_rate": 0.5}
    vit = _seeded_module(lambda: ref.SimpleViT(**DROP_VIT_KWARGS), 250).double()
    props["drop_one"] = {"block_kwargs": dict(DROP_BLOCK_KWARGS), "block_x": randn(gen, 3, 4, 5, 16),
                         "vit_kwargs": dict(DROP_VIT_KWARGS), "vit_state": _perturbed_state(vit, 251),
                         "vit_x": randn(gen, 3, 3, 32, 32)}
    return {"blocks": blocks, "vits": vits, "props": props}


def _reference_pass(build, c):
    model = build(**c["kwargs"]).double()
    model.load_state_dict(c["state"])
    model.eval()
    x = c["x"].clone().requires_grad_(True)
    out = model(x)
    out.backward(c["gout"])
    return {"out": out.detach(), "gx": x.grad, "grads": {n: p.grad for n, p in model.named_parameters()}}


def expected_2b(ref, inp):
    blocks = [_reference_pass(ref.TransformerBlock, c) for c in inp["blocks"]]
    vits = [_reference_pass(ref.SimpleViT, c) for c in inp["vits"]]
    with torch.random.fork_rng(devices=[]):
        n_params = sum(p.numel() for p in ref.default_vit_model(num_classes=100).parameters())
        d = inp["props"]["drop_one"]
        vit = ref.SimpleViT(**d["vit_kwargs"]).double()
        vit.load_state_dict(d["vit_state"])
        vit.train()
        with torch.no_grad():
            drop_vit = vit(d["vit_x"])
    return {"blocks": blocks, "vits": vits, "n_params": n_params, "drop_vit": drop_vit}


def _drop_rate_problems(inp, exp, d):
    """Messages for the rate-1 stochastic depth checks (`d`: the child's `drop_rates` stage)."""
    if not isinstance(d, dict) or case_error(d):
        return [f"stochastic depth check at rate 1 raised {case_error(d)}" if isinstance(d, dict) else
                "stochastic depth check at rate 1 did not run"]
    problems = []
    ok, msg = close(d.get("block_out"), inp["props"]["drop_one"]["block_x"], what="output")
    if not ok:
        problems.append(f"TransformerBlock(drop_path=1.0) in train mode must return its input unchanged (drop "
                        f"path on both the attention and the MLP branch): {msg}")
    ok, msg = close(d.get("vit_out"), exp["drop_vit"], what="output")
    if not ok:
        problems.append(f"SimpleViT(depth=2, drop_path_rate=1.0) in train mode (block rates must rise linearly "
                        f"from 0 to drop_path_rate: block 0 never dropped, the last block always) differs from "
                        f"the reference: {msg}")
    return problems


def _pass_failures(results, expected, cases):
    fails = []
    if not isinstance(results, list) or len(results) != len(expected):
        return ["no results came back"]
    for (kwargs, shape, public, hint), e, r in zip(cases, expected, results):
        err = case_error(r)
        r = r if isinstance(r, dict) else {}
        text = (f"{hint}, x of shape {shape}" if public else f"a hidden case ({hint})")
        if public and "dim" in kwargs:
            text = (f"TransformerBlock(dim={kwargs['dim']}, num_heads={kwargs['num_heads']}, window_size="
                    f"{kwargs['window_size']}), x of shape {shape}")
        mismatches = _mismatches(r, e, err, "gradient of the input")
        if mismatches:
            fails.append(f"{mismatches[0][1]} for {text}")
    return fails


def score_2b(inp, exp, out, findings):
    grade = ItemGrade("2b")
    if not isinstance(out, dict) or "blocks" not in out:
        grade.fail(f"raised {case_error(out)}" if case_error(out) else "no results came back")
        return grade
    blocks = out.get("blocks") if isinstance(out.get("blocks"), list) else []
    fails = _pass_failures(blocks[:1], exp["blocks"][:1], BLOCK_CASES[:1])
    grade.add("TransformerBlock with global attention: output and gradients (eval mode)", 0.5, not fails,
              summarize(fails, 1, "cases"))
    fails = _pass_failures(blocks[1:], exp["blocks"][1:], BLOCK_CASES[1:])
    grade.add("TransformerBlock with window attention (padding handled): output and gradients", 0.5, not fails,
              summarize(fails, len(BLOCK_CASES) - 1, "cases"))
    fails = _pass_failures(out.get("vits"), exp["vits"], VIT_CASES)
    grade.add("SimpleViT with reference weights loaded by name: output and gradients (eval mode)", 0.5,
              not fails, summarize(fails, len(VIT_CASES), "cases"))
    problems = []
    d = out.get("default")
    if not isinstance(d, dict) or case_error(d):
        problems.append(f"default_vit_model raised {case_error(d)}" if isinstance(d, dict) else
                        "default_vit_model did not run")
    else:
        if d.get("n_params") != exp["n_params"]:
            problems.append(f"default_vit_model(num_classes=100) has {d.get('n_params')} parameters, expected "
                            f"{exp['n_params']} (SimpleViT with its default arguments)")
        shape = d.get("shape")
        if not isinstance(shape, torch.Tensor) or shape.tolist() != [1, inp["props"]["classes"]]:
            problems.append(f"default_vit_model(num_classes={inp['props']['classes']}) on a 128x128 image gives "
                            f"shape {shape.tolist() if isinstance(shape, torch.Tensor) else shape}")
    d = out.get("drop_path")
    if not isinstance(d, dict) or case_error(d):
        problems.append(f"stochastic depth check raised {case_error(d)}" if isinstance(d, dict) else
                        "stochastic depth check did not run")
    else:
        ok0, _ = close(d.get("rate0_train"), d.get("rate0_eval"), what="output") \
            if isinstance(d.get("rate0_eval"), torch.Tensor) else (False, "")
        if not ok0:
            problems.append("with drop_path_rate=0 the train-mode output differs from the eval-mode output")
        hi_t, hi_e = d.get("rate_high_train"), d.get("rate_high_eval")
        if not (isinstance(hi_t, torch.Tensor) and isinstance(hi_e, torch.Tensor) and hi_t.shape == hi_e.shape
                and bool(torch.isfinite(hi_t).all())):
            problems.append("stochastic depth outputs missing")
        elif torch.equal(hi_t, hi_e):
            problems.append(f"with drop_path_rate={inp['props']['high_rate']} the train-mode output equals the "
                            f"eval-mode output: stochastic depth is not applied")
    problems.extend(_drop_rate_problems(inp, exp, out.get("drop_rates")))
    d = out.get("no_pos")
    if not isinstance(d, dict) or case_error(d):
        problems.append(f"SimpleViT(use_abs_pos=False) raised {case_error(d)}" if isinstance(d, dict) else
                        "use_abs_pos=False did not run")
    elif d.get("pos_is_none") is not True:
        problems.append("with use_abs_pos=False, pos_embed should be None")
    elif not isinstance(d.get("shape"), torch.Tensor) or d["shape"].tolist() != [4, PROP_KWARGS["num_classes"]]:
        problems.append("SimpleViT(use_abs_pos=False) gives the wrong output shape")
    grade.add("default_vit_model, stochastic depth (train mode only), use_abs_pos=False", 0.5, not problems,
              "; ".join(problems[:2]))
    grade.note("(2b is graded with a correct Attention in place of yours, so a 2a bug does not cost points here.)")
    return grade


INPUTS = {"2a": inputs_2a, "2b": inputs_2b}
EXPECTED = {"2a": expected_2a, "2b": expected_2b}
SCORE = {"2a": score_2a, "2b": score_2b}
