"""Given building blocks for the Vision Transformer (Part 2). Students use these; they do not edit them.

- `PatchEmbed`: image -> patch tokens laid out as a grid `(B, H, W, C)`.
- `MLP`: the transformer's two-layer feed-forward branch.
- `drop_path` / `DropPath`: per-sample stochastic depth.
- `window_partition` / `window_unpartition`: cut a token grid into non-overlapping windows (zero padding
  to a multiple of the window size) and paste it back (exact round trip).
- `get_abs_pos`: resize an absolute position embedding to another token grid.
- `trunc_normal_init_`: the ViT initialization (truncated normal linear weights, unit LayerNorm).

Nothing here is graded; `tests/test_blocks.py` checks it. Window helpers follow the layout popularized by
ViTDet (detectron2): windows are stacked along the batch dimension.
"""
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
    Identity when not training or when `drop_prob == 0`.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # (B, 1, ..., 1): one draw per sample
    mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


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
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
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
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
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


def trunc_normal_init_(module, std=0.02):
    """ViT initialization, for `model.apply(trunc_normal_init_)`: Linear weights ~ truncated N(0, std)
    with zero bias; LayerNorm weight 1 and bias 0. Other modules are left alone."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
