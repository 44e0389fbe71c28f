"""Hidden (staff-only) tests of Part 2b, `TransformerBlock`, `SimpleViT`, `default_vit_model`: more
configurations, a second oracle for the block, and proof that the public tests catch the usual bugs.

- oracle 2 for the block: the explicit computation from the block's own modules (`norm1` -> `window_partition`
  -> `attn` -> `window_unpartition` -> residual, then the MLP branch), with and without padding, and with
  other layers (`mlp_ratio`, `qkv_bias=False`, another `norm_layer` and `act_layer`);
- `SimpleViT` against the functional reference of the public tests on other configurations (all blocks
  windowed, none, padded windows, non-square inputs, head_dim 4, one input channel, no position embedding),
  its layers following the constructor's arguments, state_dict names for non-default sizes, drop path
  schedule edge cases, stochastic only in train mode, no forbidden attention API anywhere in the model;
- `default_vit_model` is exactly `SimpleViT`'s defaults;
- `custom_blocks.attention_maps` against a per-head computation;
- meta-tests: block bugs (post-norm, no window, norm after partition, drop path per window, drop path in
  eval, no drop path) each fail a public test.

Run: python -m pytest tests/hidden/test_vit_hidden.py
"""
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
import test_vit
from custom_blocks import DropPath, attention_maps, attention_probabilities, drop_path, get_abs_pos, \
    window_partition, window_unpartition
from forbidden import ATTENTION_OPS, ATTENTION_PY, forbid_aten, forbid_python
from test_vit import assert_close, expected_state_dict_shapes, expected_vit_parameter_count, make_block, \
    randomize_, torch_vit


def manual_block(block, x):
    """The block's forward written out from its own modules (eval mode: no drop path)."""
    y = block.norm1(x)
    if block.window_size > 0:
        H, W = x.shape[1:3]
        windows, pad_hw = window_partition(y, block.window_size)  # (B*nW, ws, ws, C)
        y = window_unpartition(block.attn(windows), block.window_size, pad_hw, (H, W))  # (B, H, W, C)
    else:
        y = block.attn(y)
    x = x + y
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("H,W,ws", [(8, 8, 0), (8, 8, 4), (6, 5, 4), (2, 9, 4), (5, 5, 5), (7, 4, 2)])
def test_block_matches_manual_forward(device, H, W, ws):
    block = make_block(20, 4, ws, device).eval()
    x = torch.randn(3, H, W, 20, dtype=torch.float64, device=device)
    assert_close(block(x), manual_block(block, x), f"TransformerBlock(window_size={ws}) on {H}x{W} vs manual forward")


def test_block_with_other_layers(device):
    block = student_code.TransformerBlock(12, 3, mlp_ratio=2.0, qkv_bias=False, drop_path=0.2,
                                          norm_layer=functools.partial(nn.LayerNorm, eps=1e-3), act_layer=nn.ReLU,
                                          window_size=3)
    block = randomize_(block).double().to(device).eval()
    assert block.attn.qkv.bias is None and block.mlp.fc1.out_features == 24 and block.norm1.eps == 1e-3
    x = torch.randn(2, 4, 5, 12, dtype=torch.float64, device=device)
    assert_close(block(x), manual_block(block, x), "TransformerBlock with ReLU, LayerNorm(eps=1e-3), no qkv bias")


def test_block_train_mode_without_drop_path_is_deterministic(device):
    block = make_block(8, 2, 2, device)
    x = torch.randn(4, 3, 3, 8, dtype=torch.float64, device=device)
    assert_close(block.train()(x), block.eval()(x), "drop_path=0: train and eval outputs must agree", atol=0, rtol=0)


@pytest.mark.parametrize("branch", ["attention", "mlp"])
def test_block_drop_path_on_each_branch(device, branch):
    """With the other branch zeroed, each sample's output in train mode is x (branch dropped) or
    x + branch / keep_prob (kept), and both occur: stochastic depth acts on this branch, per sample."""
    block = make_block(8, 2, 0, device, drop_path=0.5).train()
    other = block.mlp.fc2 if branch == "attention" else block.attn.proj
    with torch.no_grad():
        other.weight.zero_()
        other.bias.zero_()
    x = torch.randn(32, 3, 3, 8, dtype=torch.float64, device=device)
    with torch.no_grad():
        kept = x + 2.0 * (block.attn(block.norm1(x)) if branch == "attention" else block.mlp(block.norm2(x)))
        out = block(x)
    is_dropped = (out - x).flatten(1).abs().amax(1) < 1e-12  # (B,)
    is_kept = (out - kept).flatten(1).abs().amax(1) < 1e-9  # (B,)
    assert (is_dropped | is_kept).all(), f"{branch} branch: some samples are neither dropped nor kept * 1/keep_prob"
    assert is_dropped.any() and is_kept.any(), f"{branch} branch: drop path never drops or never keeps in train mode"


# ----------------------------------------------------------------------------------------- SimpleViT configs
HIDDEN_CONFIGS = {  # name: (constructor arguments, input (H, W))
    "all-windowed-padded": (dict(img_size=40, patch_size=8, embed_dim=24, depth=3, num_heads=3, window_size=2,
                                 window_block_indexes=(0, 1, 2)), (40, 56)),
    "all-global-head-dim-4": (dict(img_size=64, embed_dim=24, depth=5, num_heads=6, mlp_ratio=2.0,
                                   window_block_indexes=()), (64, 64)),
    "one-channel": (dict(img_size=16, patch_size=4, in_chans=1, embed_dim=8, depth=2, num_heads=2, window_size=3,
                         window_block_indexes=(1,)), (16, 16)),
    "default-at-96x160": (dict(), (96, 160)),
    "no-pos-non-square": (dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=4, use_abs_pos=False,
                               window_size=3, window_block_indexes=(1,)), (24, 40)),
}


@pytest.mark.parametrize("config", list(HIDDEN_CONFIGS))
def test_vit_matches_reference_more_configs(device, config):
    kwargs, (H, W) = HIDDEN_CONFIGS[config]
    model = randomize_(student_code.SimpleViT(num_classes=6, **kwargs), seed=3).double().to(device).eval()
    images = torch.randn(2, kwargs.get("in_chans", 3), H, W, dtype=torch.float64, device=device)
    ws = kwargs.get("window_size", 4)
    windows = [ws if i in kwargs.get("window_block_indexes", (0, 2)) else 0 for i in range(kwargs.get("depth", 4))]
    assert [b.window_size for b in model.blocks] == windows
    expected = torch_vit(model.state_dict(), images, kwargs.get("num_heads", 4), windows, kwargs.get("patch_size", 16))
    assert_close(model(images), expected, f"SimpleViT({config}) vs the functional reference")


def test_vit_layers_follow_arguments(device):
    model = student_code.SimpleViT(img_size=32, num_classes=5, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                                   mlp_ratio=3.0, qkv_bias=False, norm_layer=functools.partial(nn.LayerNorm, eps=1e-4),
                                   act_layer=nn.ReLU, window_size=2, window_block_indexes=(1,))
    model = randomize_(model).double().to(device).eval()
    assert model.norm.eps == 1e-4 and all(b.norm1.eps == 1e-4 and b.norm2.eps == 1e-4 for b in model.blocks)
    assert all(isinstance(b.mlp.act, nn.ReLU) and b.mlp.fc1.out_features == 48 for b in model.blocks)
    assert all(b.attn.qkv.bias is None and b.attn.num_heads == 2 for b in model.blocks)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64, device=device)
    x = model.patch_embed(images) + get_abs_pos(model.pos_embed, (4, 4))  # (N, 4, 4, C)
    for block in model.blocks:
        x = manual_block(block, x)
    expected = model.head(model.norm(x).mean(dim=(1, 2)))  # (N, num_classes)
    assert_close(model(images), expected, "SimpleViT with ReLU / LayerNorm(eps=1e-4) vs its modules by hand")


def test_vit_state_dict_and_count_other_sizes():
    model = student_code.SimpleViT(img_size=32, num_classes=5, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == expected_state_dict_shapes(num_classes=5, grid=4, embed_dim=16, depth=2, patch_size=8)
    model = student_code.SimpleViT(img_size=64, num_classes=7, embed_dim=24, depth=3, num_heads=3, mlp_ratio=2.0,
                                   use_abs_pos=False)
    assert "pos_embed" not in model.state_dict() and model.pos_embed is None
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_vit_parameter_count(img_size=64, num_classes=7, embed_dim=24, depth=3, mlp_ratio=2.0,
                                                 use_abs_pos=False)


def _drop_rates(model):
    return [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in model.blocks]


def test_vit_drop_path_schedule_edge_cases():
    assert _drop_rates(student_code.SimpleViT(img_size=32, depth=1, drop_path_rate=0.3)) == [0.0]
    assert _drop_rates(student_code.SimpleViT(img_size=32, drop_path_rate=0.0)) == [0.0] * 4
    rates = _drop_rates(student_code.SimpleViT(img_size=32, depth=3, drop_path_rate=0.2))
    assert rates == pytest.approx([0.0, 0.1, 0.2], abs=1e-6)


def test_vit_stochastic_only_in_train_mode(device):
    model = randomize_(student_code.SimpleViT(img_size=32, num_classes=4, patch_size=8, embed_dim=16, depth=3,
                                              num_heads=2, drop_path_rate=0.9, window_size=2)).double().to(device)
    images = torch.randn(8, 3, 32, 32, dtype=torch.float64, device=device)
    model.train()
    assert not torch.equal(model(images), model(images)), "drop path must make train-mode outputs random"
    model.eval()
    assert torch.equal(model(images), model(images)), "eval-mode outputs must be deterministic"
    windows = [2 if i in (0, 2) else 0 for i in range(3)]
    assert_close(model(images), torch_vit(model.state_dict(), images, 2, windows, 8), "eval mode vs reference")
    model = student_code.SimpleViT(img_size=32, num_classes=4, patch_size=8, embed_dim=16, num_heads=2,
                                   drop_path_rate=0.0).to(device)
    images = images.float()
    assert torch.equal(model.train()(images), model.eval()(images)), "drop_path_rate=0: train == eval"


def test_vit_uses_no_forbidden_api(device):
    model = student_code.SimpleViT(img_size=32, num_classes=4, patch_size=8, embed_dim=16, num_heads=2).to(device)
    images = torch.randn(2, 3, 32, 32, device=device)
    with forbid_python(*ATTENTION_PY, what="SimpleViT"), forbid_aten(*ATTENTION_OPS, what="SimpleViT"):
        model(images).sum().backward()


def test_default_vit_model_is_simplevit_defaults():
    small = student_code.default_vit_model(num_classes=7)
    assert small.head.out_features == 7 and small(torch.randn(1, 3, 128, 128)).shape == (1, 7)
    model = student_code.default_vit_model(num_classes=100)
    assert type(model) is student_code.SimpleViT
    assert [b.window_size for b in model.blocks] == [4, 0, 4, 0]
    assert _drop_rates(model) == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1], abs=1e-6)
    assert model.patch_embed.proj.kernel_size == (16, 16) and model.patch_embed.proj.stride == (16, 16)
    assert all(b.attn.num_heads == 4 for b in model.blocks)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == expected_state_dict_shapes(num_classes=100)
    reference = student_code.SimpleViT(num_classes=100).eval()
    model.load_state_dict(reference.state_dict())
    images = torch.randn(1, 3, 128, 128)
    assert torch.equal(model.eval()(images), reference(images))


# ------------------------------------------------------------------------------------------------ attention maps
def test_attention_maps_per_head():
    torch.manual_seed(0)
    model = randomize_(student_code.SimpleViT(img_size=32, num_classes=4, patch_size=8, embed_dim=12, depth=2,
                                              num_heads=3, window_size=3, window_block_indexes=(0,))).double().eval()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    maps = attention_maps(model, images)
    assert [tuple(m.shape) for m in maps] == [(8, 3, 9, 9), (2, 3, 16, 16)]  # 4x4 grid -> four padded 3x3 windows
    block = model.blocks[0]
    x = model.patch_embed(images) + model.pos_embed  # (N, 4, 4, C)
    windows, _ = window_partition(block.norm1(x), 3)  # (8, 3, 3, C)
    tokens = windows.reshape(8, 9, 12)  # (B*nW, L, C)
    w, b = block.attn.qkv.weight, block.attn.qkv.bias
    for h in range(3):
        rows = slice(4 * h, 4 * h + 4)  # head h's slice of q; k is 12 channels further
        q = F.linear(tokens, w[rows], b[rows])  # (B*nW, L, hd)
        k = F.linear(tokens, w[12:][rows], b[12:][rows])  # (B*nW, L, hd)
        expected = torch.softmax(q @ k.transpose(1, 2) * 0.5, dim=-1)  # (B*nW, L, L), scale 4 ** -0.5
        assert_close(maps[0][:, h], expected, f"attention map of block 0, head {h}")
    assert_close(attention_probabilities(block.attn, windows), maps[0], "attention_probabilities vs maps")


# ----------------------------------------------------------------------------------------------------- meta-tests
def buggy_block_forward(self, x, bug):
    """`TransformerBlock.forward` with one planted bug."""
    dp = self.drop_path
    if bug == "post-norm":
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))
    H, W = x.shape[1:3]
    if bug == "norm after partition" and self.window_size > 0:
        windows, pad_hw = window_partition(x, self.window_size)
        y = window_unpartition(self.attn(self.norm1(windows)), self.window_size, pad_hw, (H, W))
    elif bug == "drop path per window" and self.window_size > 0:
        windows, pad_hw = window_partition(self.norm1(x), self.window_size)
        y = window_unpartition(dp(self.attn(windows)), self.window_size, pad_hw, (H, W))
        dp = nn.Identity()  # already applied
    elif self.window_size > 0 and bug != "no window":
        windows, pad_hw = window_partition(self.norm1(x), self.window_size)
        y = window_unpartition(self.attn(windows), self.window_size, pad_hw, (H, W))
    else:
        y = self.attn(self.norm1(x))
    if bug == "no drop path":
        dp = nn.Identity()
    if bug == "drop path in eval":
        dp = functools.partial(drop_path, drop_prob=0.5, training=True)
    x = x + dp(y)
    return x + dp(self.mlp(self.norm2(x)))


BLOCK_BUGS = {  # bug: the public tests that must fail
    "post-norm": ("test_global_block_matches_reference", "test_windowed_block_matches_reference"),
    "no window": ("test_windowed_block_matches_reference",),
    "norm after partition": ("test_windowed_block_matches_reference",),
    "drop path per window": ("test_block_drop_path_per_sample_on_both_branches",),
    "drop path in eval": ("test_block_drop_path_per_sample_on_both_branches",),
    "no drop path": ("test_block_drop_path_per_sample_on_both_branches",),
}
PUBLIC_ARGS = {  # one public parametrization of each (after the device)
    "test_global_block_matches_reference": (16, 4, 3, 5),
    "test_windowed_block_matches_reference": (6, 5, 4),
    "test_block_drop_path_per_sample_on_both_branches": (),
}


def test_bug_free_harness_passes_public_block_tests(monkeypatch):
    """The meta-tests below are meaningful: `buggy_block_forward` without a bug passes the public tests."""
    monkeypatch.setattr(student_code.TransformerBlock, "forward", lambda self, x: buggy_block_forward(self, x, None))
    for name, args in PUBLIC_ARGS.items():
        getattr(test_vit, name)(torch.device("cpu"), *args)


@pytest.mark.parametrize("bug", list(BLOCK_BUGS))
def test_public_block_tests_catch_bug(monkeypatch, bug):
    monkeypatch.setattr(student_code.TransformerBlock, "forward", lambda self, x: buggy_block_forward(self, x, bug))
    for name in BLOCK_BUGS[bug]:
        with pytest.raises(AssertionError):
            getattr(test_vit, name)(torch.device("cpu"), *PUBLIC_ARGS[name])
