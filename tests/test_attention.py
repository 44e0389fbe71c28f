"""Public tests of Part 2a, `Attention` in `student_code.py`.

Your `Attention` is compared with PyTorch's `nn.MultiheadAttention(batch_first=True)` loaded with the same
weights (`in_proj_weight = qkv.weight`, `in_proj_bias = qkv.bias`, `out_proj = proj`): outputs and gradients
with respect to the input and every parameter, in float64 (and float32 with a looser tolerance), for several
sizes, head counts (one head included) and non-square token grids. It must also work without calling
`F.scaled_dot_product_attention`, `nn.MultiheadAttention` or `F.multi_head_attention_forward`.

Run: python -m pytest tests/test_attention.py
"""
import math
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from forbidden import ATTENTION_OPS, ATTENTION_PY, ForbiddenCallError, forbid_aten, forbid_python, \
    forbidden_globals

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-8), torch.float32: dict(atol=2e-5, rtol=1e-4)}

# (B, H, W, dim, num_heads): non-square grids, one head, batch 1, a single token
CASES = [(2, 3, 5, 24, 4), (1, 4, 4, 16, 1), (3, 2, 7, 12, 3), (1, 6, 2, 32, 8), (2, 1, 1, 8, 2)]
CASE_IDS = [f"B{b}-{h}x{w}-dim{d}-heads{n}" for b, h, w, d, n in CASES]


def assert_close(actual, expected, what, dtype=torch.float64):
    """`torch.testing.assert_close` with the tolerance of `dtype`; the message names the quantity and reports
    the largest difference."""
    torch.testing.assert_close(actual, expected, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def make_attention(dim, num_heads, device, dtype=torch.float64, qkv_bias=True, seed=0):
    """A student `Attention` with random weights scaled so that attention is clearly non-uniform."""
    torch.manual_seed(seed)
    attn = student_code.Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if name.endswith("weight"):
                p.normal_(0.0, 1.2 / math.sqrt(dim))  # logits q.k * scale of order 1-2
            else:
                p.normal_(0.0, 0.3)
    return attn.to(device=device, dtype=dtype)


def make_mha(attn):
    """`nn.MultiheadAttention(batch_first=True)` holding copies of `attn`'s weights (zero q/k/v bias when `attn`
    has none)."""
    p = attn.proj.weight
    dim = p.shape[0]
    mha = nn.MultiheadAttention(dim, attn.num_heads, batch_first=True).to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.qkv.weight)
        mha.in_proj_bias.copy_(attn.qkv.bias if attn.qkv.bias is not None else torch.zeros_like(mha.in_proj_bias))
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    return mha


def mha_forward(mha, x):
    """`x (B, H, W, C)` -> `(B, H, W, C)` through `nn.MultiheadAttention` on the `H*W` tokens."""
    B, H, W, C = x.shape
    tokens = x.reshape(B, H * W, C)  # (B, L, C)
    out, _ = mha(tokens, tokens, tokens, need_weights=False)
    return out.reshape(B, H, W, C)


@pytest.mark.parametrize("B,H,W,dim,num_heads", CASES, ids=CASE_IDS)
def test_attention_output_shape_and_dtype(device, B, H, W, dim, num_heads):
    attn = make_attention(dim, num_heads, device, dtype=torch.float32)
    out = attn(torch.randn(B, H, W, dim, device=device))
    assert out.shape == (B, H, W, dim), f"output shape {tuple(out.shape)}, expected {(B, H, W, dim)}"
    assert out.dtype == torch.float32 and out.device.type == device.type


@pytest.mark.parametrize("B,H,W,dim,num_heads", CASES, ids=CASE_IDS)
def test_attention_matches_multihead_attention(device, B, H, W, dim, num_heads):
    attn = make_attention(dim, num_heads, device)
    x = torch.randn(B, H, W, dim, dtype=torch.float64, device=device)
    assert_close(attn(x), mha_forward(make_mha(attn), x),
                 f"Attention({dim}, num_heads={num_heads}) output vs nn.MultiheadAttention on {B}x{H}x{W} tokens")


@pytest.mark.parametrize("B,H,W,dim,num_heads", CASES[:4], ids=CASE_IDS[:4])
def test_attention_gradients_match_multihead_attention(device, B, H, W, dim, num_heads):
    attn = make_attention(dim, num_heads, device)
    mha = make_mha(attn)
    x = torch.randn(B, H, W, dim, dtype=torch.float64, device=device, requires_grad=True)
    grad_out = torch.randn(B, H, W, dim, dtype=torch.float64, device=device)
    ours = (x, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias)
    theirs = (x, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)
    names = ("input", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias")
    got = torch.autograd.grad(attn(x), ours, grad_out, allow_unused=True)
    expected = torch.autograd.grad(mha_forward(mha, x), theirs, grad_out)
    for name, g, e in zip(names, got, expected):
        assert g is not None, f"no gradient reaches {name}: is it used in the forward?"
        assert_close(g, e, f"gradient w.r.t. {name} vs nn.MultiheadAttention")


def test_attention_without_qkv_bias(device):
    attn = make_attention(16, 4, device, qkv_bias=False)
    assert attn.qkv.bias is None
    x = torch.randn(2, 3, 4, 16, dtype=torch.float64, device=device)
    assert_close(attn(x), mha_forward(make_mha(attn), x), "Attention(qkv_bias=False) vs nn.MultiheadAttention")


def test_attention_float32(device):
    attn = make_attention(32, 4, device, dtype=torch.float32)
    x = torch.randn(4, 4, 6, 32, device=device)
    assert_close(attn(x), mha_forward(make_mha(attn), x), "float32 Attention vs nn.MultiheadAttention",
                 dtype=torch.float32)


def test_attention_uses_no_forbidden_api(device):
    """Forward and backward run with every attention library routine trapped, at the Python level and where
    operators reach PyTorch's dispatcher (so aliases cannot dodge it)."""
    attn = make_attention(24, 4, device)
    x = torch.randn(2, 3, 5, 24, dtype=torch.float64, device=device, requires_grad=True)
    what = "Attention (Part 2a)"
    with forbid_python(*ATTENTION_PY, what=what), forbid_aten(*ATTENTION_OPS, what=what):
        attn(x).sum().backward()
    assert x.grad is not None and attn.qkv.weight.grad is not None
    aliases = forbidden_globals(student_code, ATTENTION_PY)
    assert not aliases, f"student_code.py binds forbidden attention routines at import time: {aliases}"


def _cheat_sdpa(self, x):
    B, H, W, C = x.shape
    t = x.reshape(B, 1, H * W, C)  # (B, 1, L, C)
    return self.proj(F.scaled_dot_product_attention(t, t, t).reshape(B, H, W, C))


def _cheat_mha_module(self, x):
    B, H, W, C = x.shape
    mha = nn.MultiheadAttention(C, 1, batch_first=True).to(x)
    t = x.reshape(B, H * W, C)  # (B, L, C)
    return mha(t, t, t, need_weights=False)[0].reshape(B, H, W, C)


@pytest.mark.parametrize("cheat,name", [(_cheat_sdpa, "scaled_dot_product"),
                                        (_cheat_mha_module, "MultiheadAttention")], ids=["sdpa", "mha"])
def test_forbidden_api_check_catches_a_cheating_attention(cheat, name):
    """The check above is real: an `Attention` whose forward calls a library routine is stopped, with a
    message naming the routine."""
    attn = make_attention(8, 1, torch.device("cpu"))
    attn.forward = types.MethodType(cheat, attn)
    x = torch.randn(1, 2, 2, 8, dtype=torch.float64)
    with pytest.raises(ForbiddenCallError, match=name):
        with forbid_python(*ATTENTION_PY), forbid_aten(*ATTENTION_OPS):
            attn(x)
    with pytest.raises(ForbiddenCallError, match="scaled_dot_product"):  # an alias dodges Python, not the dispatcher
        with forbid_aten(*ATTENTION_OPS):
            attn(x)
    fake = types.ModuleType("fake_submission")
    fake.sdpa = F.scaled_dot_product_attention  # `from torch.nn.functional import ... as sdpa`
    assert forbidden_globals(fake, ATTENTION_PY) == [("sdpa", "torch.nn.functional.scaled_dot_product_attention")]
