"""Public tests of Part 2b, `TransformerBlock`, `SimpleViT` and `default_vit_model` in `student_code.py`.

The oracle is a functional transformer written here from PyTorch ops (`F.layer_norm`, `F.linear`, `F.gelu`,
`F.conv2d`, `F.interpolate`, and `F.multi_head_attention_forward` for attention) that reads the weights from
your model's `state_dict`. Window attention is computed in it without `window_partition`: global attention
over the zero-padded grid with a mask that lets a token see only the tokens of its own window. Comparisons
run in float64 in eval mode; drop path is checked separately in train mode. The grader loads reference
weights into your model by name, so the parameter names and shapes must be exactly those of the docstrings.

Run: python -m pytest tests/test_vit.py
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from custom_blocks import DropPath, attention_maps

F64 = dict(atol=1e-9, rtol=1e-7)
LN_EPS = 1e-5  # nn.LayerNorm's default


def assert_close(actual, expected, what, **tol):
    """`torch.testing.assert_close` (float64 tolerances by default) whose message names the quantity and
    reports the largest difference."""
    torch.testing.assert_close(actual, expected, **(tol or F64), msg=lambda m: f"{what}: {m}")


def randomize_(module, seed=0):
    """Random, non-trivial weights everywhere (LayerNorm gains away from 1, non-zero biases), so that every
    parameter matters in a comparison."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.2)
            elif p.ndim == 1:  # LayerNorm weight
                p.normal_(1.0, 0.3)
            elif "pos_embed" in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 1.2 / math.sqrt(p[0].numel()))  # 1.2 / sqrt(fan_in)
    return module


# ----------------------------------------------------------------------------------------- the functional oracle
def window_mask(Hp, Wp, window_size, device):
    """`(Hp*Wp, Hp*Wp)` bool, True where two tokens of the row-major grid lie in different windows."""
    rows = torch.arange(Hp, device=device)[:, None] // window_size
    cols = torch.arange(Wp, device=device)[None, :] // window_size
    window_id = (rows * (Wp // window_size) + cols).reshape(-1)  # (L,): one id per window
    return window_id[:, None] != window_id[None, :]


def torch_attention(sd, prefix, x, num_heads, window_size):
    """Attention of the block `prefix` on `x (B, H, W, C)`; windowed by masking when `window_size > 0`."""
    B, H, W, C = x.shape
    mask = None
    if window_size > 0:
        Hp, Wp = -(-H // window_size) * window_size, -(-W // window_size) * window_size
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))  # (B, Hp, Wp, C): zero tokens take part, as in the windows
        mask = window_mask(Hp, Wp, window_size, x.device)
    Hp, Wp = x.shape[1], x.shape[2]
    tokens = x.reshape(B, Hp * Wp, C).transpose(0, 1)  # (L, B, C)
    out, _ = F.multi_head_attention_forward(
        tokens, tokens, tokens, C, num_heads, sd[prefix + "attn.qkv.weight"], sd.get(prefix + "attn.qkv.bias"),
        None, None, False, 0.0, sd[prefix + "attn.proj.weight"], sd[prefix + "attn.proj.bias"],
        training=False, need_weights=False, attn_mask=mask)
    return out.transpose(0, 1).reshape(B, Hp, Wp, C)[:, :H, :W]  # (B, H, W, C)


def torch_mlp(sd, prefix, x):
    hidden = F.gelu(F.linear(x, sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.fc1.bias"]))
    return F.linear(hidden, sd[prefix + "mlp.fc2.weight"], sd[prefix + "mlp.fc2.bias"])


def torch_norm(sd, prefix, x):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + "weight"], sd[prefix + "bias"], LN_EPS)


def torch_block(sd, prefix, x, num_heads, window_size, keep=(1.0, 1.0)):
    """Pre-norm block; `keep` multiplies the two residual branches (1 in eval; 0 or 1/keep_prob in train)."""
    x = x + keep[0] * torch_attention(sd, prefix, torch_norm(sd, prefix + "norm1.", x), num_heads, window_size)
    return x + keep[1] * torch_mlp(sd, prefix, torch_norm(sd, prefix + "norm2.", x))


def torch_vit(sd, images, num_heads, window_sizes, patch_size):
    """The whole `SimpleViT` forward from its `state_dict`: `(N, 3, H, W)` -> `(N, num_classes)`."""
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch_size)
    x = x.permute(0, 2, 3, 1)  # (N, h, w, C)
    if sd.get("pos_embed") is not None:
        pos = sd["pos_embed"].permute(0, 3, 1, 2)  # (1, C, gh, gw)
        if pos.shape[-2:] != x.shape[1:3]:
            pos = F.interpolate(pos, size=x.shape[1:3], mode="bicubic", align_corners=False)
        x = x + pos.permute(0, 2, 3, 1)
    for i, ws in enumerate(window_sizes):
        x = torch_block(sd, f"blocks.{i}.", x, num_heads, ws)
    x = torch_norm(sd, "norm.", x).mean(dim=(1, 2))  # (N, C)
    return F.linear(x, sd["head.weight"], sd["head.bias"])


def expected_vit_parameter_count(img_size=128, num_classes=100, patch_size=16, in_chans=3, embed_dim=192, depth=4,
                                 mlp_ratio=4.0, use_abs_pos=True):
    """Parameter count of the architecture in the `SimpleViT` docstring, counted layer by layer."""
    C, hidden, grid = embed_dim, int(embed_dim * mlp_ratio), img_size // patch_size
    patch = in_chans * patch_size * patch_size * C + C
    pos = grid * grid * C if use_abs_pos else 0
    block = (2 * C  # norm1
             + C * 3 * C + 3 * C  # attn.qkv
             + C * C + C  # attn.proj
             + 2 * C  # norm2
             + C * hidden + hidden + hidden * C + C)  # mlp.fc1, mlp.fc2
    return patch + pos + depth * block + 2 * C + C * num_classes + num_classes  # + norm + head


# --------------------------------------------------------------------------------------------- TransformerBlock
def make_block(dim, num_heads, window_size, device, drop_path=0.0):
    block = student_code.TransformerBlock(dim, num_heads, drop_path=drop_path, window_size=window_size)
    return randomize_(block).double().to(device)


@pytest.mark.parametrize("dim,num_heads,H,W", [(16, 4, 3, 5), (12, 1, 4, 4), (24, 3, 6, 2)])
def test_global_block_matches_reference(device, dim, num_heads, H, W):
    block = make_block(dim, num_heads, 0, device).eval()
    x = torch.randn(2, H, W, dim, dtype=torch.float64, device=device)
    expected = torch_block(block.state_dict(), "", x, num_heads, 0)
    assert_close(block(x), expected, f"global TransformerBlock({dim}, {num_heads}) vs x + attn(norm1(x)), + mlp(...)")


# (H, W, window): no padding, padding in one or both directions, grid smaller than the window
@pytest.mark.parametrize("H,W,ws", [(8, 8, 4), (4, 8, 2), (6, 5, 4), (7, 9, 3), (3, 3, 4)])
def test_windowed_block_matches_reference(device, H, W, ws):
    block = make_block(16, 2, ws, device).eval()
    x = torch.randn(2, H, W, 16, dtype=torch.float64, device=device)
    expected = torch_block(block.state_dict(), "", x, 2, ws)
    assert_close(block(x), expected, f"TransformerBlock(window_size={ws}) on a {H}x{W} grid vs windowed reference")
    global_out = torch_block(block.state_dict(), "", x, 2, 0)
    assert (global_out - expected).abs().max() > 1e-3, "test set-up: windowed and global attention should differ"


@pytest.mark.parametrize("ws", [0, 3])
def test_block_is_pre_norm_residual(device, ws):
    """With the last layer of both branches zeroed, a pre-norm residual block is the identity (also in train
    mode, where drop path only scales the zero branches)."""
    block = make_block(12, 3, ws, device, drop_path=0.5)
    with torch.no_grad():
        for layer in (block.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.randn(4, 5, 4, 12, dtype=torch.float64, device=device)
    for mode in ("eval", "train"):
        getattr(block, mode)()
        assert torch.equal(block(x), x), f"{mode} mode: x + branch(norm(x)) with zero branches must return x exactly"


def test_block_drop_path_per_sample_on_both_branches(device):
    """In train mode each sample's two residual branches are independently either dropped or kept and scaled by
    1 / (1 - drop_path): its output is one of four references. In eval mode drop path is off."""
    drop, H, W, ws = 0.5, 5, 6, 4  # windowed, with padding: drop path must act on images, not on windows
    block = make_block(8, 2, ws, device, drop_path=drop)
    assert isinstance(block.drop_path, DropPath) and block.drop_path.drop_prob == drop
    x = torch.randn(48, H, W, 8, dtype=torch.float64, device=device)
    sd = block.state_dict()
    block.eval()
    assert_close(block(x), torch_block(sd, "", x, 2, ws), "eval mode (no drop path)")
    block.train()
    out = block(x)
    scales = (0.0, 1.0 / (1.0 - drop))
    combos = [(a, m) for a in scales for m in scales]
    refs = torch.stack([torch_block(sd, "", x, 2, ws, keep=c) for c in combos])  # (4, B, H, W, C)
    err = (refs - out).abs().flatten(2).amax(dim=2)  # (4, B)
    best, which = err.min(dim=0)
    assert best.max() < 1e-9, (f"sample {best.argmax().item()} matches none of the four drop/keep combinations "
                               f"(smallest max-difference {best.max().item():.3g})")
    seen = {combos[i] for i in which.tolist()}
    for branch in (0, 1):
        assert {c[branch] for c in seen} == set(scales), \
            f"over 48 samples the {('attention', 'MLP')[branch]} branch should be both dropped and kept"


# ---------------------------------------------------------------------------------------------------- SimpleViT
def expected_state_dict_shapes(num_classes=100, grid=8, embed_dim=192, depth=4, patch_size=16):
    C = embed_dim
    shapes = {"patch_embed.proj.weight": (C, 3, patch_size, patch_size), "patch_embed.proj.bias": (C,),
              "pos_embed": (1, grid, grid, C), "norm.weight": (C,), "norm.bias": (C,),
              "head.weight": (num_classes, C), "head.bias": (num_classes,)}
    for i in range(depth):
        p = f"blocks.{i}."
        shapes.update({p + "norm1.weight": (C,), p + "norm1.bias": (C,), p + "attn.qkv.weight": (3 * C, C),
                       p + "attn.qkv.bias": (3 * C,), p + "attn.proj.weight": (C, C), p + "attn.proj.bias": (C,),
                       p + "norm2.weight": (C,), p + "norm2.bias": (C,), p + "mlp.fc1.weight": (4 * C, C),
                       p + "mlp.fc1.bias": (4 * C,), p + "mlp.fc2.weight": (C, 4 * C), p + "mlp.fc2.bias": (C,)})
    return shapes


@pytest.mark.parametrize("num_classes", [3, 10, 100])
def test_vit_output_shape_and_parameters(device, num_classes):
    model = student_code.SimpleViT(num_classes=num_classes).to(device)
    out = model(torch.randn(2, 3, 128, 128, device=device))
    assert out.shape == (2, num_classes), f"output shape {tuple(out.shape)}, expected (2, {num_classes})"
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_state_dict_shapes(num_classes)
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in shapes if k in expected and shapes[k] != expected[k])
    assert shapes == expected, (f"state_dict names/shapes differ from the docstring's architecture (the grader "
                                f"loads weights by name): missing {missing}, unexpected {unexpected}, "
                                f"wrong shape {wrong}")
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_vit_parameter_count(num_classes=num_classes), \
        f"{count} parameters, expected {expected_vit_parameter_count(num_classes=num_classes)}"


def test_vit_window_and_drop_path_schedule():
    model = student_code.SimpleViT(num_classes=10)
    assert isinstance(model.blocks, nn.ModuleList) and len(model.blocks) == 4
    assert [b.window_size for b in model.blocks] == [4, 0, 4, 0], "window attention in blocks 0 and 2 only"
    model = student_code.SimpleViT(num_classes=10, depth=6, drop_path_rate=0.3, window_size=2,
                                   window_block_indexes=(1, 4))
    assert [b.window_size for b in model.blocks] == [0, 2, 0, 0, 2, 0]
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in model.blocks]
    expected = [0.3 * i / 5 for i in range(6)]
    assert all(abs(r - e) < 1e-6 for r, e in zip(rates, expected)), \
        f"drop path rates {[round(r, 4) for r in rates]}, expected linear {[round(e, 4) for e in expected]}"


VIT_CONFIGS = {  # name: (constructor arguments, input size (H, W))
    "default-at-128": (dict(), (128, 128)),
    "default-at-64": (dict(), (64, 64)),  # position embedding interpolated 8x8 -> 4x4
    "padded-windows": (dict(img_size=48, patch_size=8, embed_dim=24, num_heads=3, window_size=4,
                            window_block_indexes=(1, 2)), (48, 40)),  # 6x5 grid, windows padded to 8x8
    "no-pos-embed": (dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, use_abs_pos=False,
                          window_size=3, window_block_indexes=(0,)), (32, 32)),
}


@pytest.mark.parametrize("config", list(VIT_CONFIGS))
def test_vit_matches_reference(device, config):
    kwargs, (H, W) = VIT_CONFIGS[config]
    model = randomize_(student_code.SimpleViT(num_classes=7, **kwargs)).double().to(device).eval()
    images = torch.randn(2, 3, H, W, dtype=torch.float64, device=device)
    ws = kwargs.get("window_size", 4)
    windows = [ws if i in kwargs.get("window_block_indexes", (0, 2)) else 0 for i in range(kwargs.get("depth", 4))]
    expected = torch_vit(model.state_dict(), images, kwargs.get("num_heads", 4), windows, kwargs.get("patch_size", 16))
    assert_close(model(images), expected, f"SimpleViT({config}) logits vs the functional reference")


def test_vit_loads_a_reference_state_dict(device):
    """How the grader compares: reference weights loaded by name must reproduce the reference's outputs."""
    torch.manual_seed(1)
    reference = student_code.SimpleViT(num_classes=10).to(device).eval()
    torch.manual_seed(2)
    model = student_code.SimpleViT(num_classes=10).to(device).eval()
    images = torch.randn(1, 3, 128, 128, device=device)
    assert not torch.equal(model(images), reference(images)), "different seeds should give different models"
    model.load_state_dict(reference.state_dict())  # strict: names and shapes must match
    assert torch.equal(model(images), reference(images))


def test_vit_init():
    model = student_code.SimpleViT(num_classes=10)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.25), "position embedding ~ N(0, 0.02)"
    fc = model.blocks[0].mlp.fc1
    assert 0.015 < fc.weight.std().item() < 0.022 and (fc.bias == 0).all(), "Linear layers use trunc_normal_init_"
    assert student_code.SimpleViT(num_classes=10, use_abs_pos=False).pos_embed is None


def test_vit_every_parameter_gets_a_gradient(device):
    model = student_code.SimpleViT(num_classes=5).to(device).train()
    F.cross_entropy(model(torch.randn(2, 3, 64, 64, device=device)), torch.tensor([0, 3], device=device)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_vit_can_overfit_a_batch(device):
    torch.manual_seed(0)  # a small ViT: 4x4 patches of 16x16 pixels, windows of 2x2 patches in blocks 0 and 2
    model = student_code.SimpleViT(img_size=64, num_classes=8, embed_dim=32, num_heads=2, window_size=2,
                                   drop_path_rate=0.0).to(device)
    images, labels = torch.randn(8, 3, 64, 64, device=device), torch.arange(8, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert loss.item() < 0.1 and accuracy == 1.0, \
        f"after 40 AdamW steps on 8 images: loss {loss.item():.3f} (want < 0.1), accuracy {accuracy:.2f} (want 1)"


def test_default_vit_model():
    model = student_code.default_vit_model(num_classes=12)
    assert isinstance(model, student_code.SimpleViT)
    assert model.head.out_features == 12
    assert sum(p.numel() for p in model.parameters()) == expected_vit_parameter_count(num_classes=12)


def test_attention_maps_of_the_vit(device):
    """`custom_blocks.attention_maps` (for visualization) sees the windows of blocks 0 and 2."""
    model = student_code.SimpleViT(num_classes=10).to(device).eval()
    maps = attention_maps(model, torch.randn(2, 3, 128, 128, device=device))
    assert [tuple(m.shape) for m in maps] == [(8, 4, 16, 16), (2, 4, 64, 64), (8, 4, 16, 16), (2, 4, 64, 64)]
    for m in maps:
        assert_close(m.sum(-1), torch.ones_like(m[..., 0]), "rows of an attention map sum to 1", atol=1e-5, rtol=0)
