"""Hidden (staff-only) tests of Part 2a, `Attention`: a second oracle, more shapes, corner cases, and proof that
the public comparison catches the usual bugs.

- oracle 2: q/k/v split from `qkv` per the SPEC layout, then `F.scaled_dot_product_attention`, heads merged,
  `proj` (forward and all gradients, float64 and float32), on more shapes: the ViT's own sizes (8x8 tokens,
  4x4 windows), head_dim 1, up to 8 heads, non-square grids, batch 1, a single token;
- negative tests: eight wrong variants (qkv split per head first, heads merged as (hd, nh), scale 1/sqrt(dim),
  no scale, softmax over the queries, q and k swapped, tokens unflattened column-major, no proj) each fail
  both the oracle comparison here and the public test `test_attention_matches_multihead_attention`;
- module contract (parameter names and shapes: the grader loads weights by name), non-contiguous input, no
  mixing across the batch, large logits in float32 (a numerically stable softmax);
- forbidden APIs: forward + backward trapped on more shapes; the cheats the trap must catch.

Run: python -m pytest tests/hidden/test_attention_hidden.py
"""
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
import test_attention
from forbidden import ATTENTION_OPS, ATTENTION_PY, ForbiddenCallError, forbid_aten, forbid_python, \
    forbidden_globals
from test_attention import CASES, assert_close, make_attention, make_mha, mha_forward

# (B, H, W, dim, num_heads): the ViT's global (8x8) and windowed (4x4 windows) sizes, head_dim 1, odd sizes
MORE_CASES = [(2, 8, 8, 48, 4), (16, 4, 4, 24, 4), (2, 3, 2, 4, 4), (1, 5, 7, 30, 5), (4, 2, 3, 64, 8),
              (1, 1, 1, 6, 3)]
MORE_IDS = [f"B{b}-{h}x{w}-dim{d}-heads{n}" for b, h, w, d, n in MORE_CASES]

BUGS = ("split (B, L, nh, 3, hd)", "heads merged as (hd, nh)", "scale 1/sqrt(dim)", "no scale",
        "softmax over queries", "q and k swapped", "tokens unflattened column-major", "no proj")


def variant_forward(attn, x, bug=None):
    """Attention written out by hand; `bug=None` is correct, otherwise one of `BUGS` is planted."""
    B, H, W, C = x.shape
    nh, L = attn.num_heads, H * W
    hd = C // nh
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)  # (B, H, W, 3C)
    if bug == "split (B, L, nh, 3, hd)":
        q, k, v = qkv.reshape(B, L, nh, 3, hd).permute(3, 0, 2, 1, 4)  # each (B, nh, L, hd)
    else:
        q, k, v = qkv.reshape(B, L, 3, nh, hd).permute(2, 0, 3, 1, 4)  # each (B, nh, L, hd)
    if bug == "q and k swapped":
        q, k = k, q
    scale = {"scale 1/sqrt(dim)": C ** -0.5, "no scale": 1.0}.get(bug, hd ** -0.5)
    probs = (q @ k.transpose(-2, -1) * scale).softmax(dim=-2 if bug == "softmax over queries" else -1)  # (B, nh, L, L)
    out = probs @ v  # (B, nh, L, hd)
    if bug == "heads merged as (hd, nh)":
        out = out.permute(0, 2, 3, 1)  # (B, L, hd, nh)
    else:
        out = out.transpose(1, 2)  # (B, L, nh, hd)
    if bug == "tokens unflattened column-major":
        out = out.reshape(B, W, H, C).transpose(1, 2)  # (B, H, W, C), tokens in the wrong places
    else:
        out = out.reshape(B, H, W, C)  # (B, H, W, C)
    return out if bug == "no proj" else F.linear(out, attn.proj.weight, attn.proj.bias)


def sdpa_forward(attn, x):
    """Oracle 2: the SPEC's q/k/v layout, attention by `F.scaled_dot_product_attention`."""
    B, H, W, C = x.shape
    nh = attn.num_heads
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(B, H * W, 3, nh, C // nh)  # (B, L, 3, nh, hd)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, nh, L, hd)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, L, hd)
    out = out.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def applies(bug, case):
    """Whether `bug` changes the result for `case` at all: head-layout bugs need 2+ heads; with a single token
    the attention weight is 1 whatever the logits, so only bugs outside the softmax show."""
    B, H, W, dim, nh = case
    if bug in ("split (B, L, nh, 3, hd)", "heads merged as (hd, nh)"):
        return nh > 1
    if bug == "scale 1/sqrt(dim)":
        return nh > 1 and H * W > 1
    if bug == "no proj":
        return True
    return H * W > 1  # no scale, softmax axis, q/k swap, token order


# -------------------------------------------------------------------------------------------- oracle 2: SDPA
@pytest.mark.parametrize("B,H,W,dim,num_heads", CASES + MORE_CASES, ids=[f"pub-{i}" for i in range(len(CASES))]
                         + MORE_IDS)
def test_attention_matches_sdpa_forward_and_gradients(device, B, H, W, dim, num_heads):
    attn = make_attention(dim, num_heads, device, seed=B * 7 + dim)
    x = torch.randn(B, H, W, dim, dtype=torch.float64, device=device, requires_grad=True)
    grad_out = torch.randn(B, H, W, dim, dtype=torch.float64, device=device)
    params = dict(attn.named_parameters())
    out = attn(x)
    expected = sdpa_forward(attn, x)
    assert_close(out, expected, f"Attention({dim}, {num_heads}) on {B}x{H}x{W} vs SDPA oracle")
    names = ["input"] + list(params)
    got = torch.autograd.grad(out, [x] + list(params.values()), grad_out, allow_unused=True)
    want = torch.autograd.grad(expected, [x] + list(params.values()), grad_out)
    for name, g, e in zip(names, got, want):
        assert g is not None, f"no gradient reaches {name}"
        assert_close(g, e, f"gradient w.r.t. {name} vs SDPA oracle")


@pytest.mark.parametrize("B,H,W,dim,num_heads", MORE_CASES[:3], ids=MORE_IDS[:3])
def test_attention_float32_matches_sdpa(device, B, H, W, dim, num_heads):
    attn = make_attention(dim, num_heads, device, dtype=torch.float32)
    x = torch.randn(B, H, W, dim, device=device)
    assert_close(attn(x), sdpa_forward(attn, x), "float32 Attention vs SDPA oracle", dtype=torch.float32)


def test_attention_without_qkv_bias_gradients(device):
    attn = make_attention(24, 6, device, qkv_bias=False)
    x = torch.randn(2, 2, 7, 24, dtype=torch.float64, device=device, requires_grad=True)
    got = torch.autograd.grad(attn(x).square().sum(), (x, attn.qkv.weight, attn.proj.weight))
    want = torch.autograd.grad(sdpa_forward(attn, x).square().sum(), (x, attn.qkv.weight, attn.proj.weight))
    for name, g, e in zip(("input", "qkv.weight", "proj.weight"), got, want):
        assert_close(g, e, f"qkv_bias=False: gradient w.r.t. {name}")


# ---------------------------------------------------------------------------------------- negative tests
def test_hand_written_variant_without_bug_is_correct():
    """The harness of the negative tests is itself right: with no bug it matches both oracles."""
    for case in CASES:
        B, H, W, dim, nh = case
        attn = make_attention(dim, nh, torch.device("cpu"))
        x = torch.randn(B, H, W, dim, dtype=torch.float64)
        with torch.no_grad():
            assert_close(variant_forward(attn, x), sdpa_forward(attn, x), f"variant harness vs SDPA, {case}")
            assert_close(variant_forward(attn, x), mha_forward(make_mha(attn), x), f"variant harness vs MHA, {case}")


@pytest.mark.parametrize("bug", BUGS)
def test_comparison_detects_wrong_attention(bug):
    """Each planted bug differs from the oracle far beyond the tolerance on the public test's inputs."""
    checked = 0
    for case in CASES:
        if not applies(bug, case):
            continue
        B, H, W, dim, nh = case
        attn = make_attention(dim, nh, torch.device("cpu"))
        x = torch.randn(B, H, W, dim, dtype=torch.float64)
        with torch.no_grad():
            diff = (variant_forward(attn, x, bug) - sdpa_forward(attn, x)).abs().max().item()
        assert diff > 1e-3, f"bug '{bug}' is not detected on case {case}: largest difference {diff:.3g}"
        checked += 1
    assert checked >= 2, f"bug '{bug}' is exercised by only {checked} public case(s)"


@pytest.mark.parametrize("bug", BUGS)
def test_public_test_fails_on_wrong_attention(monkeypatch, bug):
    """The public test itself (student-facing) fails when `Attention.forward` carries the bug."""
    monkeypatch.setattr(student_code.Attention, "forward", lambda self, x: variant_forward(self, x, bug))
    cpu = torch.device("cpu")
    case = next(c for c in CASES if applies(bug, c) and c[4] > 1)
    with pytest.raises(AssertionError, match="Greatest absolute difference"):
        test_attention.test_attention_matches_multihead_attention(cpu, *case)
    with pytest.raises(AssertionError):
        test_attention.test_attention_gradients_match_multihead_attention(cpu, *case)


# ------------------------------------------------------------------------------------------- module contract
def test_attention_parameters_and_scale():
    attn = student_code.Attention(48, num_heads=6)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {"qkv.weight": (144, 48), "qkv.bias": (144,), "proj.weight": (48, 48), "proj.bias": (48,)}
    assert attn.num_heads == 6 and attn.scale == pytest.approx(8 ** -0.5)
    assert set(student_code.Attention(8, 2, qkv_bias=False).state_dict()) == {"qkv.weight", "proj.weight",
                                                                              "proj.bias"}


def test_attention_non_contiguous_input(device):
    attn = make_attention(16, 4, device)
    x = torch.randn(2, 5, 3, 16, dtype=torch.float64, device=device).transpose(1, 2)  # (B, 3, 5, C), strided
    assert not x.is_contiguous()
    assert_close(attn(x), sdpa_forward(attn, x.contiguous()), "Attention on a non-contiguous (transposed) input")


def test_attention_does_not_mix_the_batch(device):
    attn = make_attention(16, 2, device)
    x = torch.randn(3, 2, 4, 16, dtype=torch.float64, device=device)
    y = x.clone()
    y[1:] = torch.randn_like(y[1:]) * 5
    with torch.no_grad():
        assert_close(attn(y)[0], attn(x)[0], "sample 0 must not depend on the other samples of the batch")


def test_attention_stable_softmax_with_large_logits(device):
    """Logits of order 100 overflow a naive exp() in float32; softmax must subtract the row maximum."""
    attn = make_attention(16, 2, device, dtype=torch.float32)
    with torch.no_grad():
        attn.qkv.weight.mul_(6.0)
    x = torch.randn(2, 3, 4, 16, device=device)
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(2, 12, 3, 2, 8)  # (B, L, 3, nh, hd)
    logits = torch.einsum("blhd,bmhd->bhlm", qkv[:, :, 0], qkv[:, :, 1]) * attn.scale  # (B, nh, L, L)
    assert logits.abs().max() > 89, "test set-up: logits should overflow exp() in float32"
    out = attn(x)
    assert torch.isfinite(out).all(), "non-finite output with large logits: use a stable softmax"
    expected = sdpa_forward(attn.double(), x.double())
    assert_close(out.double(), expected, "float32 Attention with large logits vs float64 oracle", dtype=torch.float32)


# --------------------------------------------------------------------------------------------- forbidden APIs
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,H,W,dim,num_heads", MORE_CASES[:3], ids=MORE_IDS[:3])
def test_attention_uses_no_forbidden_api_more_shapes(device, dtype, B, H, W, dim, num_heads):
    attn = make_attention(dim, num_heads, device, dtype=dtype)
    x = torch.randn(B, H, W, dim, dtype=dtype, device=device, requires_grad=True)
    with forbid_python(*ATTENTION_PY, what="Attention"), forbid_aten(*ATTENTION_OPS, what="Attention"):
        attn(x).sum().backward()
    assert not forbidden_globals(student_code, ATTENTION_PY)


def _cheat_functional_mha(self, x):
    B, H, W, C = x.shape
    t = x.reshape(B, H * W, C).transpose(0, 1)  # (L, B, C)
    out, _ = F.multi_head_attention_forward(t, t, t, C, self.num_heads, self.qkv.weight, self.qkv.bias, None, None,
                                            False, 0.0, self.proj.weight, self.proj.bias, need_weights=True)
    return out.transpose(0, 1).reshape(B, H, W, C)


def _cheat_native_mha(self, x):
    B, H, W, C = x.shape
    t = x.reshape(B, H * W, C)  # (B, L, C)
    out = torch._native_multi_head_attention(t, t, t, C, self.num_heads, self.qkv.weight, self.qkv.bias,
                                             self.proj.weight, self.proj.bias, need_weights=False)[0]
    return out.reshape(B, H, W, C)


def test_forbidden_trap_catches_more_cheats():
    """`F.multi_head_attention_forward` with need_weights=True decomposes into allowed ops (only the Python trap
    sees it); `torch._native_multi_head_attention` is only seen by the dispatcher trap; an alias made at import
    time is listed by `forbidden_globals`."""
    attn = make_attention(8, 2, torch.device("cpu"))
    x = torch.randn(1, 2, 3, 8, dtype=torch.float64)
    with torch.no_grad():
        assert_close(_cheat_functional_mha(attn, x), sdpa_forward(attn, x), "set-up: the cheat is a correct answer")
    attn.forward = types.MethodType(_cheat_functional_mha, attn)
    with pytest.raises(ForbiddenCallError, match="multi_head_attention_forward"):
        with forbid_python(*ATTENTION_PY), forbid_aten(*ATTENTION_OPS):
            attn(x)
    attn.forward = types.MethodType(_cheat_native_mha, attn)
    with pytest.raises(ForbiddenCallError, match="multi_head_attention"):
        with torch.no_grad(), forbid_python(*ATTENTION_PY), forbid_aten(*ATTENTION_OPS):
            attn(x)
    fake = types.ModuleType("fake_submission")
    fake.attend = F.multi_head_attention_forward
    fake.Layer = nn.MultiheadAttention  # the class itself is allowed as a name; its forward is what is trapped
    fake.forward = nn.MultiheadAttention.forward
    assert sorted(forbidden_globals(fake, ATTENTION_PY)) == [
        ("attend", "torch.nn.functional.multi_head_attention_forward"),
        ("forward", "torch.nn.MultiheadAttention.forward")]
