"""2b (2 points): `TransformerBlock`, `SimpleViT` and `default_vit_model`.

`TransformerBlock` (global; windowed with and without padding) and `SimpleViT` (reference weights loaded by
name, eval mode) vs the kit's reference built from the same weights: outputs, input and parameter gradients;
plus properties (parameter count and output of `default_vit_model`, stochastic depth active only in train
mode, on both residual branches (`drop_path=1` makes a block the identity in train mode) and rising linearly
over the blocks (a depth-2 `SimpleViT` with `drop_path_rate=1` vs the reference in train mode),
`use_abs_pos=False`).

Both sides run with `childlib.TokenMixer` in place of `Attention` (the child sets `student_code.Attention`,
this process the reference's): a 2a bug costs no 2b points, and no answer to 2a enters the sandbox.
"""
import contextlib

import torch

from .. import childlib
from ..compare import case_error, close, generator, randn, summarize
from ..results import ItemGrade
from ._common import perturbed_state, seeded_module
from .attention import _mismatches

NUMBER = "2b"
TITLE = "2b TransformerBlock, SimpleViT, default_vit_model"
POINTS = 2.0
BONUS = False
GROUP = "vit"
BUDGET_S = 60.0
REQUIRES = ("TransformerBlock", "SimpleViT", "default_vit_model")
F64, F32 = torch.float64, torch.float32


@contextlib.contextmanager
def token_mixer(ref):
    """The reference module with `Attention` replaced by `childlib.TokenMixer` (restored afterwards)."""
    saved = ref.Attention
    ref.Attention = childlib.TokenMixer
    try:
        yield ref
    finally:
        ref.Attention = saved


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



def inputs(ref):
    with token_mixer(ref):
        return _inputs(ref)


def _inputs(ref):
    gen = generator(211)
    blocks, vits = [], []
    for i, (kwargs, shape, _, _) in enumerate(BLOCK_CASES):
        model = seeded_module(lambda: ref.TransformerBlock(**kwargs), 212 + i).double()
        blocks.append({"kwargs": dict(kwargs), "state": perturbed_state(model, 220 + i),
                       "x": randn(gen, *shape), "gout": randn(gen, *shape)})
    for i, (kwargs, shape, _, _) in enumerate(VIT_CASES):
        model = seeded_module(lambda: ref.SimpleViT(**kwargs), 230 + i).double()
        vits.append({"kwargs": dict(kwargs), "state": perturbed_state(model, 240 + i),
                     "x": randn(gen, *shape), "gout": randn(gen, shape[0], kwargs["num_classes"])})
    props = {"classes": 37, "x128": randn(gen, 1, 3, 128, 128, dtype=F32), "kwargs": dict(PROP_KWARGS),
             "x": randn(gen, 4, 3, 32, 32), "high_rate": 0.5}
    vit = seeded_module(lambda: ref.SimpleViT(**DROP_VIT_KWARGS), 250).double()
    props["drop_one"] = {"block_kwargs": dict(DROP_BLOCK_KWARGS), "block_x": randn(gen, 3, 4, 5, 16),
                         "vit_kwargs": dict(DROP_VIT_KWARGS), "vit_state": perturbed_state(vit, 251),
                         "vit_x": randn(gen, 3, 3, 32, 32)}
    return {"blocks": blocks, "vits": vits, "props": props}



def run(sc, inp, lib):
    sc.Attention = lib.TokenMixer  # 2b is graded on a stand-in for Attention (see childlib.TokenMixer)
    res = {}

    def forward_backward(build, c):
        try:
            torch.manual_seed(0)
            model = build(**c["kwargs"]).double()
            model.load_state_dict(c["state"])
            model.eval()
            x = c["x"].clone().requires_grad_(True)
            out = model(x)
            r = {"out": lib.plain(out)}
            out.backward(c["gout"])
            r["gx"] = lib.plain(x.grad)
            r["grads"] = lib.grads(model)
            return r
        except BaseException as exc:  # noqa: B902
            return {"error": lib.describe(exc)}

    res["blocks"] = [forward_backward(sc.TransformerBlock, c) for c in inp["blocks"]]
    res["vits"] = [forward_backward(sc.SimpleViT, c) for c in inp["vits"]]
    p = inp["props"]

    def default_model():
        torch.manual_seed(0)
        n_params = int(sum(q.numel() for q in sc.default_vit_model(num_classes=100).parameters()))
        model = sc.default_vit_model(num_classes=p["classes"]).eval()
        with torch.no_grad():
            shape = torch.tensor(list(model(p["x128"]).shape))
        return {"n_params": n_params, "shape": shape}

    def drop_path():
        out = {}
        for key, rate in (("rate0", 0.0), ("rate_high", p["high_rate"])):
            torch.manual_seed(0)
            model = sc.SimpleViT(**p["kwargs"], drop_path_rate=rate).double()
            model.eval()
            with torch.no_grad():
                out[key + "_eval"] = lib.plain(model(p["x"]))
                model.train()
                torch.manual_seed(1)
                out[key + "_train"] = lib.plain(model(p["x"]))
        return out

    def drop_rates():
        # drop_path=1: both residual branches always dropped in train mode, the block is the identity
        d = p["drop_one"]
        torch.manual_seed(0)
        block = sc.TransformerBlock(**d["block_kwargs"]).double()
        block.train()
        torch.manual_seed(2)
        with torch.no_grad():
            block_out = lib.plain(block(d["block_x"]))
        # depth 2, drop_path_rate=1: rates 0 then 1, so the train-mode output is deterministic
        torch.manual_seed(0)
        vit = sc.SimpleViT(**d["vit_kwargs"]).double()
        vit.load_state_dict(d["vit_state"])
        vit.train()
        torch.manual_seed(3)
        with torch.no_grad():
            vit_out = lib.plain(vit(d["vit_x"]))
        return {"block_out": block_out, "vit_out": vit_out}

    def no_pos():
        torch.manual_seed(0)
        model = sc.SimpleViT(**p["kwargs"], use_abs_pos=False).double().eval()
        with torch.no_grad():
            shape = torch.tensor(list(model(p["x"]).shape))
        return {"pos_is_none": getattr(model, "pos_embed", 0) is None, "shape": shape}

    for name, fn in (("default", default_model), ("drop_path", drop_path), ("drop_rates", drop_rates),
                     ("no_pos", no_pos)):
        lib.stage(res, name, fn)
    return res



def _reference_pass(build, c):
    model = build(**c["kwargs"]).double()
    model.load_state_dict(c["state"])
    model.eval()
    x = c["x"].clone().requires_grad_(True)
    out = model(x)
    out.backward(c["gout"])
    return {"out": out.detach(), "gx": x.grad, "grads": {n: p.grad for n, p in model.named_parameters()}}



def expected(ref, inp):
    with token_mixer(ref):
        return _expected(ref, inp)


def _expected(ref, inp):
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



def score(inp, exp, out):
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
    grade.note("(2b is graded with a stand-in for Attention in place of yours, so a 2a bug does not cost points here.)")
    return grade

