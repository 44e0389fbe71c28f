"""Every graded piece of the assignment, in assignment order (12 points + 2 bonus).

Part 1 - CNNs (6): `CustomConv2DFunction` / `custom_conv2d` / `CustomConv2d` (1a), `SimpleNet` (given,
    1b-i and 1b-ii), `default_cnn_model` (1b-iii), the ResNet-18 path in `main.py --use-resnet18` (1b-iv).
Part 2 - Vision Transformer (4): `Attention` (2a), `TransformerBlock`, `SimpleViT`, `default_vit_model` (2b).
Part 3 - Adversarial robustness (2 + 2 bonus): `PGDAttack`, `default_attack`, `GradAttention`,
    `default_attention`, `default_visfunction` (3a), `adversarial_training_step` (3b, bonus).
Also the data transforms `get_train_transforms` / `get_val_transforms`, which you may tune.

Every place to fill raises `NotImplementedError("Part X: implement ...")`: replace that line with your code
and keep the names, signatures and docstrings (the grader imports them). Run the public tests with
`python -m pytest tests`, train with `python main.py [DATA] [flags]` and package your work with
`python zip_submission.py`.
Tensor shapes are written as `(N, C, H, W)` (images, channels first) and `(B, H, W, C)` (token grids).
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Function
from torch.nn.modules.utils import _pair

import custom_augment as transforms
from custom_blocks import DropPath, MLP, PatchEmbed, get_abs_pos, trunc_normal_init_, window_partition, \
    window_unpartition


################################################################################
# Data transforms (not graded; tune them if you like)
################################################################################
def get_train_transforms(img_size=128):
    """Training augmentation: random crop/scale, flip, colour jitter, small rotation, then normalization.

    Maps an RGB `(H, W, 3)` uint8 image to a normalized float tensor `(3, img_size, img_size)`.
    """
    return transforms.Compose([
        transforms.RandomSizedCrop(img_size, scale=(0.35, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomColor(0.15),
        transforms.RandomRotate(15),
        transforms.ToTensor(),
        transforms.Normalize(transforms.IMAGENET_MEAN, transforms.IMAGENET_STD),
    ])


def get_val_transforms(img_size=128):
    """Deterministic evaluation transform: resize the shorter side, center crop, normalize.

    Maps an RGB `(H, W, 3)` uint8 image to a normalized float tensor `(3, img_size, img_size)`.
    """
    return transforms.Compose([
        transforms.Scale(img_size),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(transforms.IMAGENET_MEAN, transforms.IMAGENET_STD),
    ])


################################################################################
# Part 1a: convolution with its backward pass (2 points)
################################################################################
# BEGIN SOLUTION (Part 1a)
def _im2col(x, kernel_size, stride, padding):
    """Unfold `x (N, C, H, W)` into the patch matrix `(N, C*K*K, H_out*W_out)` (what `F.unfold` returns).

    Sliding windows are taken as a strided view (`Tensor.unfold`) and copied once by `reshape`; this is
    1.4-1.8x faster than `F.unfold` on CPU at SimpleNet's layer shapes, and a 1x1 kernel at stride 1 costs
    no copy at all (a view of `x`). A negative `padding` crops instead.
    """
    N, C = x.shape[:2]
    if padding != 0:  # negative: F.pad crops (the stride-1 input gradient uses it)
        x = F.pad(x, (padding, padding, padding, padding))  # (N, C, H + 2p, W + 2p)
    windows = x.unfold(2, kernel_size, stride).unfold(3, kernel_size, stride)  # (N, C, H_out, W_out, K, K)
    H_out, W_out = windows.shape[2:4]
    # row index c*K*K + i*K + j, column index h*W_out + w, as F.unfold
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(N, -1, H_out * W_out)  # (N, C*K*K, L)
# END SOLUTION


class CustomConv2DFunction(Function):
    """2D convolution (cross-correlation, as `F.conv2d`) written with unfold/fold and matrix products.

    Shapes:
        input_feats `(N, C_in, H, W)`, weight `(C_out, C_in, K, K)`, bias `(C_out,)` or `None`,
        output `(N, C_out, H_out, W_out)` with
        `H_out = (H + 2 * padding - K) // stride + 1` and `W_out = (W + 2 * padding - K) // stride + 1`.
    Rules:
        - Any N, C_in, C_out, non-square H and W, square K, int stride >= 1, int padding >= 0.
        - Forbidden: any convolution routine (`F.conv2d`, `torch.conv2d`, `torch.nn.grad.conv2d_input` /
          `conv2d_weight`, transposed convolutions, aten convolution ops), however it is reached (aliases
          too: the grader watches the operators that actually run). Use `F.unfold` (im2col) or sliding
          windows (`Tensor.unfold`), `F.fold` (col2im) and tensor algebra (`matmul`/`bmm`, reshapes).
        - Return a fresh tensor (not a view of a temporary: write the product into a new tensor, e.g. with
          `out=`), so that an in-place ReLU after the convolution works. Save only what backward needs in
          `ctx`; the unfolded input is K*K times larger than the input itself.
    Hints: with `cols = unfold(input)` `(N, C_in*K*K, L)` (L = H_out * W_out) the forward is one matrix
    product with the weight viewed as `(C_out, C_in*K*K)`; backward needs the gradient of `cols` (folded
    back onto the input), a sum over samples for the weight, and a sum for the bias. The reference forward
    is about 15 lines and backward about 20; no Python loops over samples or channels are needed.
    """

    @staticmethod
    def forward(ctx, input_feats, weight, bias, stride=1, padding=0):
        """Convolve `input_feats (N, C_in, H, W)` with `weight (C_out, C_in, K, K)` (+ `bias (C_out,)`).

        Returns `(N, C_out, H_out, W_out)`. Store in `ctx` what `backward` needs (tensors with
        `ctx.save_for_backward`, ints as attributes).
        """
        # sanity check (given)
        assert weight.size(2) == weight.size(3), "only square kernels are supported"
        assert isinstance(stride, int) and stride >= 1, "stride must be an int >= 1"
        assert isinstance(padding, int) and padding >= 0, "padding must be an int >= 0"
        assert input_feats.size(1) == weight.size(1), "input channels do not match the weight"

        # BEGIN SOLUTION (Part 1a)
        N, C_in, H, W = input_feats.shape
        C_out, _, K, _ = weight.shape
        H_out = (H + 2 * padding - K) // stride + 1
        W_out = (W + 2 * padding - K) // stride + 1
        assert H_out > 0 and W_out > 0, "the kernel is larger than the padded input"
        cols = _im2col(input_feats, K, stride, padding)  # (N, C_in*K*K, L), L = H_out*W_out
        w2d = weight.reshape(C_out, -1)  # (C_out, C_in*K*K)
        output = input_feats.new_empty((N, C_out, H_out, W_out))  # fresh tensor, not a view
        out3d = output.view(N, C_out, H_out * W_out)  # (N, C_out, L), shares storage with output
        if bias is None:  # one batched matrix product (the weight is shared: expand is a free view)
            torch.bmm(w2d.expand(N, -1, -1), cols, out=out3d)
        else:
            torch.baddbmm(bias.view(1, C_out, 1), w2d.expand(N, -1, -1), cols, out=out3d)
        # save the input, not `cols` (K*K times larger): backward unfolds it again, as nn.Conv2d keeps the input
        ctx.save_for_backward(input_feats, weight)
        ctx.conf = (stride, padding, H, W, bias is not None)
        return output
        # END SOLUTION

    @staticmethod
    def backward(ctx, grad_output):
        """Gradients of the loss with respect to the inputs of `forward`.

        `grad_output` is `(N, C_out, H_out, W_out)`. Return `(grad_input, grad_weight, grad_bias, None, None)`
        with the shapes of `input_feats`, `weight` and `bias` (use `None` for an input that needs no
        gradient, see `ctx.needs_input_grad`, and for `bias=None`).
        """
        grad_input = grad_weight = grad_bias = None
        # BEGIN SOLUTION (Part 1a)
        input_feats, weight = ctx.saved_tensors
        stride, padding, H, W, has_bias = ctx.conf
        N, C_out, H_out, W_out = grad_output.shape
        C_in, K = weight.shape[1], weight.shape[3]
        grad_out3d = grad_output.reshape(N, C_out, H_out * W_out)  # (N, C_out, L)
        if ctx.needs_input_grad[0] and stride == 1 and K > 1 and C_out <= C_in:
            # stride 1: d input is the full correlation of d out with the flipped kernel, i.e. the forward
            # computation again (im2col of d out padded by K-1-padding, cropped where that is negative, and
            # one matrix product); no col2im, and its column matrix is no larger than d cols (C_out <= C_in)
            w_flip = weight.flip(2, 3).transpose(0, 1).reshape(C_in, -1)  # (C_in, C_out*K*K)
            grad_out_cols = _im2col(grad_output, K, 1, K - 1 - padding)  # (N, C_out*K*K, H*W)
            grad_input = torch.matmul(w_flip, grad_out_cols).view(N, C_in, H, W)
            del grad_out_cols  # free it before unfolding again below
        elif ctx.needs_input_grad[0]:
            # d cols = W^T @ d out, then col2im sums every patch back onto the pixels it came from
            w2d_t = weight.reshape(C_out, -1).t().expand(N, -1, -1)  # (N, C_in*K*K, C_out), a view
            grad_cols = torch.bmm(w2d_t, grad_out3d)  # (N, C_in*K*K, L), contiguous as F.fold wants it
            if K == 1 and stride == 1 and padding == 0:
                grad_input = grad_cols.view(N, C_in, H, W)  # 1x1 kernel: the columns are the pixels
            else:
                grad_input = F.fold(grad_cols, (H, W), K, padding=padding, stride=stride)  # (N, C_in, H, W)
            del grad_cols  # free it before unfolding again below
        if ctx.needs_input_grad[1]:
            # d W = sum over samples of d out @ cols^T; bmm reads the transposed view without copying it
            cols = _im2col(input_feats, K, stride, padding)  # (N, C_in*K*K, L)
            grad_weight = torch.bmm(grad_out3d, cols.transpose(1, 2)).sum(0).view_as(weight)  # (C_out, C_in, K, K)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out3d.sum(dim=(0, 2))  # (C_out,)
        return grad_input, grad_weight, grad_bias, None, None
        # END SOLUTION


custom_conv2d = CustomConv2DFunction.apply


class CustomConv2d(nn.Module):
    """`nn.Conv2d` look-alike (same constructor, parameters, state_dict keys and initialization) that runs
    `custom_conv2d`. Input `(N, in_channels, H, W)`, output `(N, out_channels, H_out, W_out)`.

    `kernel_size`, `stride` and `padding` are ints or pairs of equal ints (stored as pairs, as `nn.Conv2d`);
    only `dilation=1`, `groups=1` and `padding_mode="zeros"` are supported.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        kernel_size, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
        assert kernel_size[0] == kernel_size[1], "only square kernels are supported"
        assert stride[0] == stride[1] and padding[0] == padding[1], "stride and padding must be equal in H and W"
        assert all(isinstance(v, int) for v in stride + padding), "stride and padding must be ints"
        assert _pair(dilation) == (1, 1) and groups == 1, "dilation and groups are not supported"
        assert padding_mode == "zeros", "only zero padding is supported"
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = (1, 1)
        self.groups = groups
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        # the initialization of nn.Conv2d
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return custom_conv2d(input, self.weight, self.bias, self.stride[0], self.padding[0])

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


################################################################################
# Part 1b: CNNs (4 points)
################################################################################
class SimpleNet(nn.Module):
    """The given small CNN (about 0.37M parameters): 7x7/2 stem, two bottleneck stages, global pooling, a
    linear head. `conv_op` builds every convolution (`nn.Conv2d` or your `CustomConv2d`).

    Input `(N, 3, H, W)` normalized images; output `(N, num_classes)` logits.
    """

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.features = nn.Sequential(
            # conv1 block: 7x7 conv, stride 2
            conv_op(3, 64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # 1/4
            # conv2 block: bottleneck
            conv_op(64, 64, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(64, 64, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(64, 256, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),  # 1/8
            # conv3 block: bottleneck
            conv_op(256, 128, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(128, 128, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(128, 512, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.features(x)  # (N, 512, H/8, W/8)
        x = self.avgpool(x).flatten(1)  # (N, 512)
        return self.fc(x)  # (N, num_classes)


# BEGIN SOLUTION (Part 1b-iii)
class _ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, conv_op, in_ch, out_ch, stride):
        super().__init__()
        self.conv1 = conv_op(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv_op(out_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv_op(in_ch, out_ch, kernel_size=1, stride=stride, padding=0,
                                                  bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # (N, out_ch, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResidualCNN(nn.Module):
    """A small ResNet: 3x3/2 stem, three residual stages (each halving the resolution), global average
    pooling and a linear head; about 1.2M parameters. Input `(N, 3, H, W)`, output `(N, num_classes)`.

    Every BatchNorm starts at weight 1, bias 0 (no zero-initialised residual branches): each stage begins
    with a strided 1x1 projection shortcut, so a zero-initialised branch would start the network as a chain
    of 1x1 convolutions that see one pixel in 4 per stage, and it learns real images several times slower
    (measured in README: 34% vs 90% top-1 after 6 epochs on digit scans)."""

    def __init__(self, conv_op=nn.Conv2d, num_classes=100, widths=(32, 64, 128, 256)):
        super().__init__()
        self.stem = nn.Sequential(conv_op(3, widths[0], kernel_size=3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*[_ResidualBlock(conv_op, cin, cout, stride=2)
                                      for cin, cout in zip(widths[:-1], widths[1:])])
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stages(self.stem(x))  # (N, widths[-1], H/16, W/16)
        x = x.mean(dim=(2, 3))  # (N, widths[-1])
        return self.fc(x)  # (N, num_classes)
# END SOLUTION


def default_cnn_model(conv_op=nn.Conv2d, num_classes=100):
    """Your own CNN design (Part 1b-iii), used by `main.py` when no model flag is given.

    It must accept `conv_op` (build every convolution with it, so `--use-custom-conv` works) and
    `num_classes`, take `(N, 3, H, W)` normalized images of any size >= 32 and return `(N, num_classes)`
    logits. Budget: at most 2M parameters. It must train clearly better than `SimpleNet` in the same number
    of epochs (hint: batch normalization and residual connections).
    """
    # BEGIN SOLUTION (Part 1b-iii)
    return ResidualCNN(conv_op=conv_op, num_classes=num_classes)
    # END SOLUTION


################################################################################
# Part 2: Vision Transformer (4 points)
################################################################################
class Attention(nn.Module):
    """Multi-head self-attention over a token grid (Part 2a).

    `forward(x)`: `x (B, H, W, C)` -> `(B, H, W, C)`. The `H*W` tokens of each sample attend to each other:
    `softmax(Q K^T * scale) V` per head, heads merged back to `C` channels, then `self.proj`.
    Channel layout of `self.qkv(x)` (`3*C` channels): `[q | k | v]`, and inside each, head `h` owns the
    contiguous slice `h*head_dim:(h+1)*head_dim` (as `nn.MultiheadAttention` and timm).
    Forbidden: `F.scaled_dot_product_attention`, `nn.MultiheadAttention`, `F.multi_head_attention_forward`.
    Hint: about 10 lines with `reshape`, `permute`, `@` (or `einsum`) and `softmax`.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        assert dim % num_heads == 0, "dim must be divisible by num_heads"
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        # BEGIN SOLUTION (Part 2a)
        nh, hd = self.num_heads, C // self.num_heads
        qkv = self.qkv(x).reshape(B, H * W, 3, nh, hd)  # (B, L, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, L, hd)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, nh, L, L)
        attn = attn.softmax(dim=-1)
        x = attn @ v  # (B, nh, L, hd)
        x = x.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C): heads merged
        x = self.proj(x)
        return x
        # END SOLUTION


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (Part 2b):

        x = x + drop_path(attn(norm1(x)))      (window attention when window_size > 0)
        x = x + drop_path(mlp(norm2(x)))

    `forward(x)`: `(B, H, W, C)` -> `(B, H, W, C)`. With `window_size > 0`, attention runs inside
    non-overlapping `window_size x window_size` windows: `window_partition` (pads H, W) -> attention ->
    `window_unpartition` (removes the padding), all from `custom_blocks`.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, norm_layer=nn.LayerNorm,
                 act_layer=nn.GELU, window_size=0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = MLP(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer)
        self.window_size = window_size

    def forward(self, x):
        # BEGIN SOLUTION (Part 2b)
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)  # (B*nW, ws, ws, C)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))  # (B, H, W, C)
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x
        # END SOLUTION


class SimpleViT(nn.Module):
    """A small Vision Transformer (Part 2b).

    patch embedding (`PatchEmbed`, `(B, H/p, W/p, C)`) -> + absolute position embedding -> `depth`
    `TransformerBlock`s (window attention in the blocks listed in `window_block_indexes`, global attention
    elsewhere; drop path rising linearly from 0 to `drop_path_rate`) -> `norm` -> global average pool over
    tokens -> linear `head`. Input `(N, 3, H, W)`, output `(N, num_classes)`.

    Required attribute names (the grader loads reference weights by name): `patch_embed`, `pos_embed`
    (a `(1, img_size/p, img_size/p, embed_dim)` parameter, or `None` when `use_abs_pos=False`), `blocks`
    (an `nn.ModuleList`), `norm`, `head`. Initialize with `trunc_normal_init_` (and the position embedding
    with a truncated normal of std 0.02).
    """

    def __init__(self, img_size=128, num_classes=100, patch_size=16, in_chans=3, embed_dim=192, depth=4,
                 num_heads=4, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.1, norm_layer=nn.LayerNorm,
                 act_layer=nn.GELU, use_abs_pos=True, window_size=4, window_block_indexes=(0, 2)):
        super().__init__()
        # BEGIN SOLUTION (Part 2b)
        self.patch_embed = PatchEmbed(kernel_size=(patch_size, patch_size), stride=(patch_size, patch_size),
                                      in_chans=in_chans, embed_dim=embed_dim)
        grid = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth rises linearly
        self.blocks = nn.ModuleList([
            TransformerBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i],
                             norm_layer=norm_layer, act_layer=act_layer,
                             window_size=window_size if i in window_block_indexes else 0)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(trunc_normal_init_)
        # END SOLUTION

    def forward(self, x):
        # BEGIN SOLUTION (Part 2b)
        x = self.patch_embed(x)  # (N, H/p, W/p, C)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, (x.shape[1], x.shape[2]))
        for blk in self.blocks:
            x = blk(x)  # (N, H/p, W/p, C)
        x = self.norm(x).mean(dim=(1, 2))  # (N, C)
        x = self.head(x)  # (N, num_classes)
        return x
        # END SOLUTION


def default_vit_model(num_classes=100):
    """The ViT that `main.py --use-vit` trains: `SimpleViT` with its defaults and `num_classes` outputs."""
    # BEGIN SOLUTION (Part 2b)
    return SimpleViT(num_classes=num_classes)
    # END SOLUTION


################################################################################
# Part 3: adversarial robustness (2 points + 2 bonus)
################################################################################
def valid_input_range(mean=transforms.IMAGENET_MEAN, std=transforms.IMAGENET_STD, dtype=torch.float32, device=None):
    """The normalized images of pixels in [0, 1] (given): `(low, high)`, each `(1, 3, 1, 1)`.

    Computed in `dtype` on `device` with the same arithmetic as `custom_augment.Normalize`, so a normalized
    pixel 0 or 1 equals the bound bit for bit (pass the dtype and device of your input).
    """
    mean = torch.as_tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1)
    return (0.0 - mean) / std, (1.0 - mean) / std


class _FrozenEval:
    """Context manager (given): put `model` in eval mode with `requires_grad=False` on every parameter, and
    restore the mode of every submodule and every flag on exit, so an attack leaves the model as found."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode
        for p, flag in self.flags:
            p.requires_grad_(flag)
        return False


class PGDAttack(object):
    """Projected gradient descent under an L-inf budget (Part 3a).

    Inputs are normalized batches `(N, 3, H, W)` as the data pipeline produces them; `epsilon` and
    `step_size` are in normalized units (0.1 is about 6 pixel levels out of 255), L-inf.
    """

    def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1, random_start=False):
        self.loss_fn = loss_fn
        self.num_steps = num_steps
        self.step_size = step_size
        self.epsilon = epsilon
        self.random_start = random_start

    def perturb(self, model, input, target=None):
        """Return adversarial versions of `input (N, 3, H, W)`: a detached tensor of the same shape, dtype
        and device.

        - `target is None`: targeted attack towards the least-confident class of the clean input (the
          argmin of the clean logits): each step *descends* the loss of that class.
        - `target` given (`(N,)` labels): untargeted attack that *ascends* the loss of the true labels.
        Each step: `x <- x -/+ step_size * sign(grad)` with `grad` the gradient of
        `loss_fn(model(x), labels)` with respect to `x`, then project onto the L-inf ball of radius
        `epsilon` around `input` and onto the valid image range (`valid_input_range(dtype=..., device=...)`
        of the input). The iterates start at `input`; with `random_start`, at
        `input + torch.empty_like(input).uniform_(-epsilon, epsilon)` (exactly this one draw from the global
        RNG of the input's device, and no other random draw), projected. `num_steps=1`, `step_size=epsilon`
        is FGSM. Read `num_steps`, `step_size`, `epsilon`, `random_start` from `self` when `perturb` runs
        (the runner sets them after construction).
        The model must be left exactly as found (mode, parameters, `.grad`, `requires_grad`, BatchNorm
        statistics): run it in eval mode inside `_FrozenEval(model)` and use `torch.autograd.grad` with
        respect to the input only. Keep no graph across steps.
        """
        # BEGIN SOLUTION (Part 3a)
        x0 = input.detach()
        low, high = valid_input_range(dtype=x0.dtype, device=x0.device)  # each (1, 3, 1, 1)
        lower = torch.max(x0 - self.epsilon, low)  # (N, 3, H, W): ball and image range combined
        upper = torch.min(x0 + self.epsilon, high)
        with _FrozenEval(model), torch.enable_grad():
            if target is None:
                with torch.no_grad():
                    target = model(x0).argmin(dim=1)  # least-confident class
                direction = -1.0  # descend towards the target class
            else:
                direction = 1.0  # ascend away from the true class
            x = x0.clone()
            if self.random_start:
                x = x + torch.empty_like(x).uniform_(-self.epsilon, self.epsilon)
                x = torch.max(torch.min(x, upper), lower)
            for _ in range(self.num_steps):
                x.requires_grad_(True)
                loss = self.loss_fn(model(x), target)
                grad, = torch.autograd.grad(loss, x)
                x = x.detach() + direction * self.step_size * grad.sign()
                x = torch.max(torch.min(x, upper), lower)
        return x.detach()
        # END SOLUTION


def default_attack(loss_fn):
    """The attack used by `main.py -a`: `PGDAttack(loss_fn)` with the default budget (10 steps of 0.01,
    epsilon 0.1, normalized units)."""
    # BEGIN SOLUTION (Part 3a)
    return PGDAttack(loss_fn)
    # END SOLUTION


class GradAttention(object):
    """Vanilla gradient saliency (Part 3a, used by `main.py -e -v`)."""

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn

    def explain(self, model, input):
        """Saliency map `(N, 1, H, W)` of `input (N, 3, H, W)`: the max over colour channels of
        `|d loss(model(input), predicted label) / d input|`, the predicted label being the argmax of the
        logits, `loss = self.loss_fn(logits, labels)` as given (with a mean-reduced loss every map carries the
        factor 1/N; the display scales each map to [0, 1] anyway). Run the model in eval mode, leave it as
        found (use `_FrozenEval`) and return a detached tensor of the input's dtype and device.
        """
        # BEGIN SOLUTION (Part 3a)
        x = input.detach().clone().requires_grad_(True)
        with _FrozenEval(model), torch.enable_grad():
            output = model(x)
            loss = self.loss_fn(output, output.argmax(dim=1))
            grad, = torch.autograd.grad(loss, x)  # (N, 3, H, W)
        return grad.abs().amax(dim=1, keepdim=True).detach()  # (N, 1, H, W)
        # END SOLUTION


def default_attention(loss_fn):
    """The saliency method used by `main.py -e -v`: `GradAttention(loss_fn)`."""
    # BEGIN SOLUTION (Part 3a)
    return GradAttention(loss_fn)
    # END SOLUTION


def default_visfunction(input, vis_output=None, nrow=8):
    """An image grid for TensorBoard (given): `input (N, 3, H, W)` normalized images ->
    `(3, H', W')` float tensor in [0, 1]. With `vis_output (N, 1, H, W)` (a saliency map), each map is
    scaled to [0, 1] per image, coloured (JET) and blended over its image."""
    import cv2
    from torchvision.utils import make_grid

    images = transforms.Denormalize(transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)(
        input.detach().float().cpu()).clamp(0, 1)  # (N, 3, H, W) in [0, 1]
    if vis_output is not None:
        maps = vis_output.detach().float().cpu()  # (N, 1, H, W)
        flat = maps.flatten(1)
        lo, hi = flat.min(1)[0].view(-1, 1, 1, 1), flat.max(1)[0].view(-1, 1, 1, 1)
        maps = (maps - lo) / (hi - lo).clamp_min(1e-12)
        colored = []
        for m in maps:
            heat = cv2.applyColorMap(np.uint8(255 * m[0].numpy()), cv2.COLORMAP_JET)  # (H, W, 3) BGR
            colored.append(torch.from_numpy(heat[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255)
        images = 0.5 * images + 0.5 * torch.stack(colored)  # (N, 3, H, W)
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


################################################################################
# Part 3b: adversarial training (bonus 2 points)
################################################################################
def adversarial_training_step(model, input, target, criterion, optimizer, attacker, adv_fraction=1.0):
    """One optimizer step of adversarial training on a batch; returns `(loss, output)` (detached).

    Replace the first `round(adv_fraction * N)` samples of `input (N, 3, H, W)` by adversarial examples
    from `attacker.perturb(model, input[:n], target[:n])` crafted with the model in eval mode (BatchNorm
    statistics must not change while crafting; `_FrozenEval(model)` does this whatever the attacker does),
    restore the mode of every submodule as found, then do one ordinary step on
    the mixed batch: forward, `criterion(output, target)`, zero the gradients, backward,
    `optimizer.step()` (exactly once). `output` is `(N, num_classes)`.
    """
    # BEGIN SOLUTION (Part 3b)
    n_adv = int(round(adv_fraction * input.shape[0]))
    if n_adv > 0:
        with _FrozenEval(model):  # eval mode while crafting; every submodule's mode restored afterwards
            adv = attacker.perturb(model, input[:n_adv], target[:n_adv]).detach()  # (n_adv, 3, H, W)
        input = torch.cat([adv, input[n_adv:]], dim=0)  # (N, 3, H, W)
    output = model(input)
    loss = criterion(output, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), output.detach()
    # END SOLUTION
# BEGIN OPTIONAL PART 4


################################################################################
# Part 4 (optional): explaining models, on clean and adversarial images
################################################################################
# Attribution maps for `main.py -e -v --explain METHOD` and `-a -v --explain METHOD`. Every method:
# - runs the model in eval mode and leaves it exactly as found (mode of every submodule, parameters, their
#   `.grad` and `requires_grad`, BatchNorm statistics): use `_FrozenEval(model)` and `torch.autograd.grad`
#   with respect to the input (or a hooked activation) only; remove every hook you register, also on error;
# - works on whole batches `(N, 3, H, W)` (loop over noise samples or path steps if you like, never over
#   images), on the device and in the dtype of its input, and returns detached tensors;
# - is deterministic: random draws come from a `torch.Generator` seeded as stated, never the global RNG.
# Forbidden: the attribution libraries themselves (captum, pytorch_grad_cam): the grader compares with them.
class SmoothGrad(object):
    """Noise-averaged gradient saliency (Part 4a; Smilkov et al. 2017, "SmoothGrad").

    `noise_std` is the standard deviation of the Gaussian noise in normalized input units (the units of the
    batches the data pipeline produces; absolute, not a fraction of the input range).
    """

    def __init__(self, loss_fn, num_samples=16, noise_std=0.3, seed=0):
        self.loss_fn = loss_fn
        self.num_samples = num_samples
        self.noise_std = noise_std
        self.seed = seed

    def explain(self, model, input):
        """Saliency map `(N, 1, H, W)` of `input (N, 3, H, W)` averaged over noisy copies of the input.

        1. `labels`: the argmax of the logits of the *clean* input.
        2. The noise: one draw `noise = self.noise_std * torch.randn((N, S, 3, H, W), generator=g,
           dtype=input.dtype, device=input.device)` with `S = self.num_samples` and
           `g = torch.Generator(device=input.device).manual_seed(self.seed)`; copy `s` of image `i` is
           `input[i] + noise[i, s]`.
        3. For each `s`: `grad_s = d self.loss_fn(model(x_s), labels) / d x_s` with `x_s = input + noise[:, s]`
           (a batch `(N, 3, H, W)`, like `GradAttention`, so `noise_std=0` gives `GradAttention`'s map).
        4. The map: the mean over `s` of `|grad_s|`, then the max over the colour channels.
        Hint: `torch.autograd.grad` on the batch loss gives every image's gradient at once.
        """
        # BEGIN SOLUTION (Part 4a)
        x0 = input.detach()
        N = x0.shape[0]
        g = torch.Generator(device=x0.device).manual_seed(self.seed)
        noise = self.noise_std * torch.randn((N, self.num_samples) + tuple(x0.shape[1:]), generator=g,
                                             dtype=x0.dtype, device=x0.device)  # (N, S, 3, H, W)
        total = torch.zeros_like(x0)
        with _FrozenEval(model), torch.enable_grad():
            with torch.no_grad():
                labels = model(x0).argmax(dim=1)  # (N,)
            for s in range(self.num_samples):
                x = (x0 + noise[:, s]).requires_grad_(True)
                grad, = torch.autograd.grad(self.loss_fn(model(x), labels), x)  # (N, 3, H, W)
                total += grad.abs()
        return (total / self.num_samples).amax(dim=1, keepdim=True).detach()  # (N, 1, H, W)
        # END SOLUTION


class GradCAM(object):
    """Class activation maps from a layer's activations and gradients (Part 4b; Selvaraju et al. 2017).

    `target_layer` is a submodule of `model` whose output is a feature map `(N, K, h, w)` (e.g. the last
    residual stage); its output must not be modified in place later in the forward pass. `GradCAMPlusPlus`
    reuses everything but `channel_weights`.
    """

    def __init__(self, model, target_layer):
        self.model = model
        self.target_layer = target_layer

    def channel_weights(self, activations, gradients):
        """Grad-CAM's weights `(N, K, 1, 1)`: the mean of `gradients (N, K, h, w)` (of the class score with
        respect to `activations (N, K, h, w)`) over the `h * w` positions."""
        # BEGIN SOLUTION (Part 4b)
        return gradients.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
        # END SOLUTION

    def layer_cam(self, input, target=None):
        """The raw map at the layer's resolution `(N, 1, h, w)`: `relu(sum_k w_k * A_k)` with `A` the
        layer's output for `input (N, 3, H, W)` and `w = self.channel_weights(A, dscore/dA)`.

        The score of image `i` is its logit of class `target[i]` (`target`: `(N,)` labels; `None`: the
        predicted class, the argmax of the logits). Capture `A` with a forward hook on `self.target_layer`
        (`register_forward_hook`; remove it in a `finally`), run the model on
        `input.detach().requires_grad_(True)` inside `_FrozenEval(self.model)` (with frozen parameters the
        activations need the input to require grad to be in the graph), and take
        `torch.autograd.grad(scores.sum(), A)` (image `i`'s score depends on its own activations only).
        """
        # BEGIN SOLUTION (Part 4b)
        captured = []
        handle = self.target_layer.register_forward_hook(lambda module, args, out: captured.append(out))
        try:
            with _FrozenEval(self.model), torch.enable_grad():
                logits = self.model(input.detach().requires_grad_(True))  # (N, num_classes)
                if target is None:
                    target = logits.argmax(dim=1)
                scores = logits.gather(1, target.view(-1, 1))  # (N, 1)
                acts = captured[-1]  # (N, K, h, w)
                grads, = torch.autograd.grad(scores.sum(), acts)
        finally:
            handle.remove()
        weights = self.channel_weights(acts.detach(), grads)  # (N, K, 1, 1)
        return F.relu((weights * acts.detach()).sum(dim=1, keepdim=True)).detach()  # (N, 1, h, w)
        # END SOLUTION

    def explain(self, input, target=None):
        """The map `(N, 1, H, W)` for display (given): `layer_cam` upsampled bilinearly to the input's size
        (`align_corners=False`), then scaled per image to [0, 1] as `(m - min) / (max - min + 1e-7)`."""
        cam = self.layer_cam(input, target)  # (N, 1, h, w)
        cam = F.interpolate(cam, size=input.shape[-2:], mode="bilinear", align_corners=False)  # (N, 1, H, W)
        flat = cam.flatten(1)  # (N, H * W)
        lo, hi = flat.amin(dim=1).view(-1, 1, 1, 1), flat.amax(dim=1).view(-1, 1, 1, 1)
        return (cam - lo) / (hi - lo + 1e-7)


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Part 4b; Chattopadhay et al. 2018): Grad-CAM with per-position weights."""

    def channel_weights(self, activations, gradients):
        """Grad-CAM++'s weights `(N, K, 1, 1)` from `activations` and `gradients` `(N, K, h, w)` (the
        closed form for an exponential score, as in pytorch-grad-cam):
        `alpha = g**2 / (2 * g**2 + S * g**3 + 1e-6)` where `g` is the gradient and `S (N, K, 1, 1)` the
        sum of the activations over the positions, `alpha = 0` where `g == 0`; the weight of channel `k` is
        the sum over positions of `alpha * relu(g)`."""
        # BEGIN SOLUTION (Part 4b)
        g2 = gradients.pow(2)
        total = activations.sum(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
        alpha = g2 / (2 * g2 + total * g2 * gradients + 1e-6)  # (N, K, h, w)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return (alpha * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
        # END SOLUTION


class IntegratedGradients(object):
    """Integrated Gradients (Part 4c; Sundararajan et al. 2017), by the Riemann midpoint rule.

    `baseline`: `None` (all zeros in normalized units: the mean colour of the data) or a tensor that
    broadcasts to the input, e.g. `(1, 3, H, W)`. `steps`: the number of points on the path.
    """

    def __init__(self, model, baseline=None, steps=32):
        self.model = model
        self.baseline = baseline
        self.steps = steps

    def attribute(self, input, target=None):
        """Attributions `(N, 3, H, W)` of `input (N, 3, H, W)` to the logit of class `target[i]` (`(N,)`
        labels; `None`: the predicted class of the input):
        `(x - x') * (1 / m) * sum_{k=0}^{m-1} dF(x' + a_k (x - x')) / dx` with `x'` the baseline, `m` the
        steps and `a_k = (k + 0.5) / m` (midpoint rule; Captum's `method="riemann_middle"`). Completeness:
        the attributions of image `i` sum to `F(x_i) - F(x'_i)` up to the discretization error. Evaluate
        the path one step at a time for the whole batch (or several steps at once), never image by image.
        """
        # BEGIN SOLUTION (Part 4c)
        x = input.detach()
        base = torch.zeros_like(x) if self.baseline is None else \
            self.baseline.to(dtype=x.dtype, device=x.device).expand_as(x)  # (N, 3, H, W)
        total = torch.zeros_like(x)
        with _FrozenEval(self.model), torch.enable_grad():
            if target is None:
                with torch.no_grad():
                    target = self.model(x).argmax(dim=1)  # (N,)
            for k in range(self.steps):
                point = (base + (k + 0.5) / self.steps * (x - base)).requires_grad_(True)
                score = self.model(point).gather(1, target.view(-1, 1)).sum()
                grad, = torch.autograd.grad(score, point)  # (N, 3, H, W)
                total += grad
        return ((x - base) * total / self.steps).detach()
        # END SOLUTION

    def explain(self, input, target=None):
        """The map `(N, 1, H, W)` for display (given): `|attribute|` summed over the colour channels."""
        return self.attribute(input, target).abs().sum(dim=1, keepdim=True)


def attention_rollout(attn_maps):
    """Attention rollout (Part 4d; Abnar and Zuidema 2020): how much each output token draws on each input
    token through all the attention layers, residual connections included.

    Args:
        attn_maps: list of per-layer attention probabilities, first layer first, each `(N, heads, L, L)`
            (rows: queries, summing to 1), e.g. from `custom_blocks.attention_maps` for global blocks.
    Returns:
        `(N, L, L)`: with `A_l` the head mean of layer `l` plus the identity, each row divided by its sum
        (`(A + I) / 2` for attention rows summing to 1), the product `A_last @ ... @ A_2 @ A_1`.
    Hint: a batched matrix product (`@` on `(N, L, L)`) does all images at once.
    """
    # BEGIN SOLUTION (Part 4d)
    rollout = None
    for attn in attn_maps:
        a = attn.mean(dim=1)  # (N, L, L)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout.detach()
    # END SOLUTION
# END OPTIONAL PART 4
