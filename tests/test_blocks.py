"""Tests of the given building blocks in `custom_blocks.py` (not graded: they guard the kit itself).

PatchEmbed and MLP against `F.conv2d` / `F.linear`; drop path (identity in eval, per-sample, unbiased);
window partition/unpartition (content, shapes, padding, exact round trip); `get_abs_pos` against
`F.interpolate`; `trunc_normal_init_`; `attention_maps` against `nn.MultiheadAttention`'s attention weights.
None of them needs your `student_code.py`.

Run: python -m pytest tests/test_blocks.py
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import custom_blocks as cb

F64 = dict(atol=1e-12, rtol=1e-10)  # float64 tolerances for ops that match PyTorch's up to rounding


def assert_close(actual, expected, what, **tol):
    """`torch.testing.assert_close` whose message names the quantity (it reports the largest difference)."""
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}: {m}")


# --------------------------------------------------------------------------------------------------- PatchEmbed, MLP
def test_patch_embed_is_strided_conv_channels_last(device):
    embed = cb.PatchEmbed(kernel_size=(4, 4), stride=(4, 4), in_chans=3, embed_dim=8).double().to(device)
    x = torch.randn(2, 3, 12, 20, dtype=torch.float64, device=device)
    out = embed(x)
    assert out.shape == (2, 3, 5, 8), f"PatchEmbed output shape {tuple(out.shape)}, expected (2, 3, 5, 8)"
    expected = F.conv2d(x, embed.proj.weight, embed.proj.bias, stride=4).permute(0, 2, 3, 1)  # (B, H', W', C)
    assert_close(out, expected, "PatchEmbed vs F.conv2d + permute", **F64)


def test_mlp_is_linear_gelu_linear(device):
    mlp = cb.MLP(6, hidden_features=10, out_features=4).double().to(device)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device)
    expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    assert_close(mlp(x), expected, "MLP vs fc2(gelu(fc1(x)))", **F64)
    assert cb.MLP(6).fc1.out_features == 6, "hidden_features defaults to in_features"


# --------------------------------------------------------------------------------------------------------- drop path
def test_drop_path_is_identity_in_eval_or_with_zero_rate(device):
    x = torch.randn(4, 3, 3, 2, device=device)
    assert cb.drop_path(x, 0.5, training=False) is x
    assert cb.drop_path(x, 0.0, training=True) is x
    module = cb.DropPath(0.5).to(device).eval()
    assert module(x) is x, "DropPath in eval mode must return its input unchanged"
    assert "drop_prob=0.500" in repr(module)


@pytest.mark.parametrize("drop_prob", [0.2, 0.5])
def test_drop_path_drops_whole_samples_and_rescales_kept_ones(device, drop_prob):
    x = torch.rand(64, 3, 4, 5, device=device) + 0.5  # no zeros, so a dropped sample is recognizable
    out = cb.drop_path(x, drop_prob, training=True)
    keep = 1.0 - drop_prob
    dropped = (out == 0).flatten(1).all(dim=1)  # (B,)
    kept = ~dropped
    assert dropped.any() and kept.any(), "with 64 samples both dropped and kept samples should occur"
    assert_close(out[kept], x[kept] / keep, f"kept samples must be scaled by 1/keep = {1 / keep:.3f}")


def test_drop_path_is_unbiased(device):
    drop_prob, n = 0.3, 200_000
    out = cb.drop_path(torch.ones(n, 2, device=device), drop_prob, training=True)
    # one draw per sample: E[out] = 1, std of the sample mean = sqrt(p / (1 - p) / n) ~ 0.0015; allow 6 sigma
    tol = 6 * math.sqrt(drop_prob / (1 - drop_prob) / n)
    mean = out[:, 0].mean().item()
    assert abs(mean - 1.0) < tol, f"mean of drop_path(ones) over {n} samples is {mean:.5f}, expected 1 +- {tol:.4f}"
    assert torch.equal(out[:, 0], out[:, 1]), "one draw per sample: all elements of a sample share it"


def test_drop_path_with_rate_one_gives_zeros(device):
    out = cb.drop_path(torch.randn(8, 3, device=device), 1.0, training=True)
    assert torch.isfinite(out).all() and (out == 0).all(), "drop_prob=1 must zero every sample (no 0/0)"


def test_drop_path_module_follows_training_flag(device):
    module = cb.DropPath(0.5).train()
    x = torch.ones(256, 2, device=device)
    assert (module(x) == 0).any(), "DropPath in train mode must drop samples"
    module.eval()
    assert torch.equal(module(x), x)


# ---------------------------------------------------------------------------------------- window partition/unpartition
# (H, W, window): exact multiples, padding in one or both directions, grid smaller than a window, window 1
WINDOW_CASES = [(8, 8, 4), (4, 4, 4), (6, 10, 4), (5, 7, 3), (3, 2, 4), (7, 5, 1)]


@pytest.mark.parametrize("H,W,ws", WINDOW_CASES)
def test_window_partition_content_and_shapes(device, H, W, ws):
    B, C = 2, 3
    x = torch.randn(B, H, W, C, dtype=torch.float64, device=device)
    windows, (Hp, Wp) = cb.window_partition(x, ws)
    nh, nw = math.ceil(H / ws), math.ceil(W / ws)
    assert (Hp, Wp) == (nh * ws, nw * ws), f"padded size {(Hp, Wp)}, expected {(nh * ws, nw * ws)}"
    assert windows.shape == (B * nh * nw, ws, ws, C), \
        f"windows shape {tuple(windows.shape)}, expected {(B * nh * nw, ws, ws, C)}"
    padded = x.new_zeros(B, Hp, Wp, C)
    padded[:, :H, :W] = x
    for b in range(B):
        for i in range(nh):
            for j in range(nw):
                index = (b * nh + i) * nw + j  # windows are stacked sample-major, row-major within a sample
                expected = padded[b, i * ws:(i + 1) * ws, j * ws:(j + 1) * ws]
                assert torch.equal(windows[index], expected), f"window {index} (sample {b}, row {i}, col {j})"


@pytest.mark.parametrize("H,W,ws", WINDOW_CASES)
def test_window_round_trip_is_exact(device, H, W, ws):
    x = torch.randn(3, H, W, 4, device=device, requires_grad=True)
    windows, pad_hw = cb.window_partition(x, ws)
    back = cb.window_unpartition(windows, ws, pad_hw, (H, W))
    assert back.shape == x.shape
    assert torch.equal(back, x), "window_unpartition(window_partition(x)) must give x back exactly"
    back.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x)), "the round trip's gradient must be the identity"


def test_window_partition_accepts_non_contiguous_input(device):
    x = torch.randn(2, 5, 6, 7, device=device).permute(0, 2, 1, 3)  # (B, 6, 5, C), not contiguous
    windows, pad_hw = cb.window_partition(x, 4)
    assert torch.equal(cb.window_unpartition(windows, 4, pad_hw, (6, 5)), x)


# --------------------------------------------------------------------------------------------------------- positions
def test_get_abs_pos_same_size_returns_the_embedding():
    pos = torch.randn(1, 8, 8, 6)
    assert cb.get_abs_pos(pos, (8, 8)) is pos


@pytest.mark.parametrize("hw", [(4, 4), (4, 6), (12, 10)])
def test_get_abs_pos_interpolates_bicubically(device, hw):
    pos = torch.randn(1, 8, 8, 6, dtype=torch.float64, device=device)
    out = cb.get_abs_pos(pos, hw)
    assert out.shape == (1, *hw, 6)
    expected = F.interpolate(pos.permute(0, 3, 1, 2), size=hw, mode="bicubic", align_corners=False)
    assert_close(out, expected.permute(0, 2, 3, 1), "get_abs_pos vs F.interpolate(bicubic)", **F64)


# -------------------------------------------------------------------------------------------------------------- init
def test_trunc_normal_distribution(device):
    n, bound = 200_000, 2.0
    w = cb.trunc_normal_(torch.empty(n, dtype=torch.float64, device=device), std=1.0, bound=bound)
    assert w.abs().max() <= bound, f"max |w| = {w.abs().max():.4f} exceeds the bound {bound}"
    phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # standard normal CDF
    mass = phi(bound) - phi(-bound)
    # CDF of the truncated normal at a few points vs the empirical one; binomial std <= 0.5 / sqrt(n) = 0.0011
    for z in (-1.5, -0.5, 0.0, 1.0):
        expected = (phi(z) - phi(-bound)) / mass
        got = (w <= z).double().mean().item()
        assert abs(got - expected) < 0.006, f"P(w <= {z}) = {got:.4f}, expected {expected:.4f} (+- 0.006)"
    assert abs(w.std().item() - 0.8796) < 0.006, f"std {w.std():.4f}, expected 0.8796 for a +-2 std truncation"


def test_trunc_normal_init():
    linear, conv, norm = nn.Linear(256, 512), nn.Conv2d(3, 4, 3), nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.fill_(3.0)
        norm.bias.fill_(2.0)
    conv_before = conv.weight.clone()
    for module in (linear, conv, norm, nn.Linear(4, 4, bias=False), nn.LayerNorm(4, elementwise_affine=False)):
        cb.trunc_normal_init_(module)
    w = linear.weight
    assert w.abs().max() <= 0.04, f"weights must be truncated at 2 std = 0.04, max |w| = {w.abs().max():.4f}"
    # a N(0, 0.02) truncated at +-2 std has std 0.02 * 0.8796 = 0.0176; 131072 draws estimate it within 1%
    assert abs(w.std().item() - 0.0176) < 0.0005, f"std of the weights is {w.std():.5f}, expected ~0.0176"
    assert (linear.bias == 0).all()
    assert (norm.weight == 1).all() and (norm.bias == 0).all()
    assert torch.equal(conv.weight, conv_before), "other modules must be left alone"


# -------------------------------------------------------------------------------------------------- attention maps
class _StandInAttention(nn.Module):
    """An `Attention`-shaped module (`qkv`, `proj`, `num_heads`, `scale`) for testing `attention_maps` without
    `student_code`; its forward just mixes channels (the hooks must not depend on it)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return x + self.proj(x)  # (B, H, W, C)


def _stand_in_model(dim, num_heads, depth):
    model = nn.Sequential(*[_StandInAttention(dim, num_heads) for _ in range(depth)])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(dim))  # logits of order 1: peaked, non-uniform maps
    return model.double()


@pytest.mark.parametrize("dim,num_heads,H,W", [(12, 3, 3, 4), (8, 1, 2, 5)])
def test_attention_maps_match_multihead_attention_weights(device, dim, num_heads, H, W):
    model = _stand_in_model(dim, num_heads, depth=2).to(device)
    x = torch.randn(2, H, W, dim, dtype=torch.float64, device=device)
    maps = cb.attention_maps(model, x)
    assert len(maps) == 2, f"one map per Attention call expected, got {len(maps)}"
    inputs = [x, model[0](x)]  # the input each block saw
    for i, (attn, block_in, probs) in enumerate(zip(model, inputs, maps)):
        assert probs.shape == (2, num_heads, H * W, H * W), f"block {i}: shape {tuple(probs.shape)}"
        mha = nn.MultiheadAttention(dim, num_heads, batch_first=True).double().to(device)
        with torch.no_grad():
            mha.in_proj_weight.copy_(attn.qkv.weight)
            mha.in_proj_bias.copy_(attn.qkv.bias)
            mha.out_proj.weight.copy_(attn.proj.weight)
            mha.out_proj.bias.copy_(attn.proj.bias)
            tokens = block_in.reshape(2, H * W, dim)  # (B, L, C)
            _, expected = mha(tokens, tokens, tokens, need_weights=True, average_attn_weights=False)
        assert_close(probs, expected, f"block {i} attention map vs nn.MultiheadAttention weights", **F64)
        assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]), "rows of an attention map sum to 1", **F64)
        assert probs.max() > 2.0 / (H * W), "test set-up: maps should not be uniform"


def test_attention_maps_use_the_module_scale_and_remove_hooks(device):
    dim = 6
    model = _stand_in_model(dim, 1, depth=1).to(device)
    model[0].scale = 0.37  # one head: the map is softmax(q k^T * scale) with q, k the first two C-slices
    x = torch.randn(3, 2, 3, dim, dtype=torch.float64, device=device)
    expected_out = model(x)
    (probs,) = cb.attention_maps(model, x)
    tokens = x.reshape(3, 6, dim)  # (B, L, C)
    w, b = model[0].qkv.weight, model[0].qkv.bias
    q, k = F.linear(tokens, w[:dim], b[:dim]), F.linear(tokens, w[dim:2 * dim], b[dim:2 * dim])  # (B, L, C)
    expected = torch.softmax(q @ k.transpose(1, 2) * 0.37, dim=-1)  # (B, L, L)
    assert_close(probs[:, 0], expected, "attention map with a custom scale", **F64)
    assert not probs.requires_grad
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules()), "hooks must be removed"
    assert torch.equal(model(x), expected_out), "the model must be unchanged"


def test_attention_maps_remove_hooks_on_error():
    model = _stand_in_model(4, 2, depth=1)
    with pytest.raises(RuntimeError):
        cb.attention_maps(model, torch.randn(1, 2, 2, 5, dtype=torch.float64))  # wrong channel count
    assert len(model[0]._forward_pre_hooks) == 0, "hooks must be removed even when the forward fails"
