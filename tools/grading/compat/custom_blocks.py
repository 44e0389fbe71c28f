"""`custom_blocks` of the course's templates (compatibility module for the sandbox): the kit's given
blocks plus what the 2022-23 templates gave in this file (`Attention`, `Mlp`, `TransformerBlock`) and the
templates' `trunc_normal_(tensor, mean, std, a, b)` signature.

In Fall 2022 and 2023 students built `SimpleViT` from this `TransformerBlock` (pre-norm: attention over
the `(B, H, W, C)` token grid, windowed when `window_size > 0` with zero padding, stochastic depth on both
residual branches, MLP). The classes below implement that documented behaviour; the kit's
`window_partition` / `window_unpartition` / `DropPath` / `PatchEmbed` are reused as they are.
"""
import torch
import torch.nn as nn

from _kit_custom_blocks import *  # noqa: F401,F403  (the kit's blocks, placed beside this file)
from _kit_custom_blocks import DropPath, window_partition, window_unpartition


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Fill `tensor` in place from N(mean, std) truncated to the absolute bounds [a, b] (the templates'
    signature; `trunc_normal_(w, std=0.02)` as they call it)."""
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout on the last dimension."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


MLP = Mlp  # the 2024/2025 spelling (same layers, `fc1` / `fc2`)


class Attention(nn.Module):
    """Multi-head self-attention over a token grid `(B, H, W, C)` -> `(B, H, W, C)` (given in 2022-23).

    `qkv` packs `[q | k | v]`, head `h` owning channels `h*hd:(h+1)*hd` of each; scale `hd ** -0.5`."""

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).reshape(B, H * W, 3, heads, C // heads).permute(2, 0, 3, 1, 4)  # (3, B, h, L, hd)
        q, k, v = qkv.unbind(0)  # each (B, h, L, hd)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # (B, h, L, L)
        out = (attn @ v).transpose(1, 2).reshape(B, H, W, C)  # heads merged: (B, H, W, C)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block with optional window attention (given in 2022-23): `(B, H, W, C)` ->
    `(B, H, W, C)`."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, norm_layer=nn.LayerNorm,
                 act_layer=nn.GELU, window_size=0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)
        self.window_size = window_size

    def forward(self, x):
        shortcut = x
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (y.shape[1], y.shape[2])
            windows, pad_hw = window_partition(y, self.window_size)  # (B * nW, ws, ws, C)
            y = window_unpartition(self.attn(windows), self.window_size, pad_hw, hw)  # (B, H, W, C)
        else:
            y = self.attn(y)
        x = shortcut + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))
