"""Given building blocks for the Vision Transformer (Part 2). Students use these; they do not edit them.

- `PatchEmbed`: image -> patch tokens laid out as a grid `(B, H, W, C)`.
- `MLP`: the transformer's two-layer feed-forward branch.
- `drop_path` / `DropPath`: per-sample stochastic depth.
- `window_partition` / `window_unpartition`: cut a token grid into non-overlapping windows (zero padding
  to a multiple of the window size) and paste it back (exact round trip).
- `get_abs_pos`: resize an absolute position embedding to another token grid.
- `trunc_normal_` / `trunc_normal_init_`: the ViT initialization (truncated normal linear weights, unit
  LayerNorm).
- `attention_maps`: per-block attention probabilities of a model, for visualization (uses forward pre-hooks;
  `Attention.forward` is untouched).

Nothing here is graded; `tests/test_blocks.py` checks it (`python -m pytest tests/test_blocks.py`). Window
helpers follow the layout popularized by ViTDet (detectron2): windows are stacked along the batch dimension.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    """Image to patch embedding with one strided convolution.

    Input `(B, C_in, H, W)`; output `(B, H // patch, W // patch, embed_dim)` (channels last, so that
    attention can treat the grid as `(B, H, W, C)`).
    """

    def __init__(self, kernel_size=(16, 16), stride=(16, 16), padding=(0, 0), in_chans=3, embed_dim=768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x):
        x = self.proj(x)  # (B, C, H', W')
        return x.permute(0, 2, 3, 1)  # (B, H', W', C)


class MLP(nn.Module):
    """Linear -> activation -> Linear, applied to the last dimension: `(..., in)` -> `(..., out)`."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x, drop_prob=0.0, training=False):
    """Stochastic depth: zero whole samples of a residual branch with probability `drop_prob`.

    `x` is `(B, ...)`; kept samples are scaled by `1 / (1 - drop_prob)` so the expectation is unchanged.
    Identity when not training or when `drop_prob == 0`; all zeros when `drop_prob == 1`.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # (B, 1, ..., 1): one draw per sample
    mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        mask = mask / keep_prob  # kept samples scaled by 1 / keep_prob (avoids 0 / 0 when keep_prob == 0)
    return x * mask


class DropPath(nn.Module):
    """Module form of `drop_path` (no parameters; follows `self.training`)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob:.3f}"


def window_partition(x, window_size):
    """Cut a token grid into non-overlapping windows, zero-padding H and W up to multiples of the window.

    Args:
        x: `(B, H, W, C)`.
        window_size: int, the window side `ws`.
    Returns:
        windows: `(B * Hp // ws * Wp // ws, ws, ws, C)`, row-major over windows within each sample.
        (Hp, Wp): the padded grid size, needed by `window_unpartition`.
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    Hp, Wp = H + pad_h, W + pad_w
    x = x.reshape(B, Hp // window_size, window_size, Wp // window_size, window_size, C)  # (B, nH, ws, nW, ws, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)  # (B*nW, ws, ws, C)
    return windows, (Hp, Wp)


def window_unpartition(windows, window_size, pad_hw, hw):
    """Inverse of `window_partition`: paste windows back and drop the padding.

    Args:
        windows: `(B * Hp // ws * Wp // ws, ws, ws, C)`.
        window_size: int `ws`.
        pad_hw: `(Hp, Wp)` returned by `window_partition`.
        hw: the original `(H, W)`.
    Returns:
        `(B, H, W, C)`.
    """
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    x = windows.reshape(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)  # (B, nH, nW, ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)  # (B, Hp, Wp, C)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()  # (B, H, W, C)
    return x


def get_abs_pos(abs_pos, hw):
    """Resize an absolute position embedding `(1, Hp, Wp, C)` to the grid `hw = (H, W)` (bicubic).

    Returns `abs_pos` itself when the size already matches, so training at the model's `img_size` is
    unaffected; other input sizes (e.g. a 64x64 demo) still work.
    """
    H, W = hw
    if abs_pos.shape[1] == H and abs_pos.shape[2] == W:
        return abs_pos
    pos = abs_pos.permute(0, 3, 1, 2)  # (1, C, Hp, Wp)
    pos = F.interpolate(pos, size=(H, W), mode="bicubic", align_corners=False)  # (1, C, H, W)
    return pos.permute(0, 2, 3, 1)  # (1, H, W, C)


def trunc_normal_(tensor, std=0.02, bound=2.0):
    """Fill `tensor` in place with N(0, std) truncated to [-bound * std, bound * std]; returns it.

    Inverse-CDF sampling (one uniform draw per element through `erfinv`), exact and fast; PyTorch's
    `nn.init.trunc_normal_` rejection-samples and takes tens of milliseconds per layer on a CPU. (Its bounds
    `a`, `b` are absolute values, not multiples of `std`; the defaults +-2 truncate nothing at std 0.02.)
    """
    cdf_hi = 0.5 * (1.0 + math.erf(bound / math.sqrt(2.0)))  # P(Z <= bound)
    with torch.no_grad():
        tensor.uniform_(1.0 - 2.0 * cdf_hi, 2.0 * cdf_hi - 1.0)  # erf(Z / sqrt 2) for Z in [-bound, bound]
        tensor.erfinv_().mul_(std * math.sqrt(2.0))
        return tensor.clamp_(-bound * std, bound * std)  # guards against rounding at the ends


def trunc_normal_init_(module, std=0.02):
    """ViT initialization, for `model.apply(trunc_normal_init_)`: Linear weights ~ N(0, std) truncated to
    [-2 std, 2 std] (`trunc_normal_`), zero bias; LayerNorm weight 1 and bias 0. Other modules are left alone.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:  # elementwise_affine=False has no parameters
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _is_attention(module):
    """Duck-typed test for the assignment's `Attention` module (`custom_blocks` must not import
    `student_code`): a `qkv` and a `proj` `nn.Linear`, plus `num_heads` and `scale` attributes."""
    return (isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "proj", None), nn.Linear)
            and hasattr(module, "num_heads") and hasattr(module, "scale"))


def attention_probabilities(module, x):
    """Attention probabilities `softmax(q k^T * scale)` of an `Attention` module for its input `x`.

    Recomputed from the module's `qkv` weights (channel layout `[q | k | v]`, head `h` owning the contiguous
    slice `h*head_dim:(h+1)*head_dim`, as in `nn.MultiheadAttention`) with PyTorch's
    `F.multi_head_attention_forward`, so it does not depend on how `Attention.forward` is written.

    Args:
        module: an `Attention` (`qkv`, `proj`, `num_heads`, `scale`).
        x: its input `(B, H, W, C)`.
    Returns:
        `(B, num_heads, H*W, H*W)`; every row sums to 1.
    """
    B, H, W, C = x.shape
    tokens = x.reshape(B, H * W, C).transpose(0, 1)  # (L, B, C): the functional's sequence-first layout
    # The functional scales q by head_dim ** -0.5; rescale the q rows so that the module's own `scale` is used.
    gain = torch.ones(3 * C, dtype=x.dtype, device=x.device)
    gain[:C] = module.scale * math.sqrt(C // module.num_heads)
    weight = module.qkv.weight * gain[:, None]  # (3C, C)
    bias = module.qkv.bias * gain if module.qkv.bias is not None else None  # (3C,)
    _, probs = F.multi_head_attention_forward(
        tokens, tokens, tokens, C, module.num_heads, weight, bias, None, None, False, 0.0,
        module.proj.weight, module.proj.bias, training=False, need_weights=True, average_attn_weights=False)
    return probs  # (B, num_heads, L, L)


def attention_maps(model, x):
    """Per-block attention maps of `model` for the input `x`, for visualization (given code, not graded).

    A forward pre-hook on every `Attention` module in `model` (found by duck typing, see `_is_attention`)
    recomputes the attention probabilities from the module's input and its `qkv` weights
    (`attention_probabilities`); `Attention.forward` itself is neither changed nor relied upon. The hooks are
    removed before returning, also on error. Runs under `torch.no_grad()` and leaves the model's mode alone
    (call `model.eval()` first for maps without drop path).

    Args:
        model: an `nn.Module` containing `Attention` modules (e.g. `SimpleViT`).
        x: the model's input, e.g. `(N, 3, H, W)` images.
    Returns:
        A list with one tensor per `Attention` call, in call order: `(N * nW, num_heads, L, L)`, where a
        windowed block has `nW` windows per image and `L = window_size ** 2` tokens per window (zero padding
        included), and a global block has `nW = 1` and `L = H/p * W/p`. Example, `SimpleViT()` at 128x128:
        `[(4N, 4, 16, 16), (N, 4, 64, 64), (4N, 4, 16, 16), (N, 4, 64, 64)]`.
    """
    maps = []

    def hook(module, args):
        maps.append(attention_probabilities(module, args[0]).detach())

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if _is_attention(m)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return maps
