# A submission written against the Fall 2024 template (test corpus of the grader, written for this kit).
import math

import numpy as np
import torch
import torch.nn as nn
from torch.autograd import Function
from torch.nn.functional import fold, unfold
from torch.nn.modules.module import Module
from torchvision.utils import make_grid

import custom_transforms as transforms
from custom_blocks import MLP, DropPath, PatchEmbed, trunc_normal_, window_partition, window_unpartition
from utils import resize_image


################################################################################
# Part I.1: convolution
################################################################################
class CustomConv2DFunction(Function):
    @staticmethod
    def forward(ctx, input_feats, weight, bias, stride=1, padding=0):
        """
        Forward propagation of convolution operation.
        We only consider square filters with equal stride/padding in width and height!
        """
        assert weight.size(2) == weight.size(3)
        assert input_feats.size(1) == weight.size(1)
        assert isinstance(stride, int) and (stride > 0)
        assert isinstance(padding, int) and (padding >= 0)

        kernel_size = weight.size(2)
        ctx.stride = stride
        ctx.padding = padding
        ctx.input_height = input_feats.size(2)
        ctx.input_width = input_feats.size(3)

        assert kernel_size <= (input_feats.size(2) + 2 * padding)
        assert kernel_size <= (input_feats.size(3) + 2 * padding)

        n_batch, c_out = input_feats.size(0), weight.size(0)
        out_h = (ctx.input_height + 2 * padding - kernel_size) // stride + 1
        out_w = (ctx.input_width + 2 * padding - kernel_size) // stride + 1
        cols = unfold(input_feats, kernel_size, padding=padding, stride=stride)  # (N, C_i*K*K, L)
        prod = torch.matmul(weight.reshape(c_out, -1), cols)  # (N, C_o, L)
        if bias is not None:
            prod = prod + bias.view(1, c_out, 1)
        output = prod.reshape(n_batch, c_out, out_h, out_w).clone()  # a fresh tensor, not a view
        ctx.save_for_backward(input_feats, weight, bias)

        return output

    @staticmethod
    def backward(ctx, grad_output):
        input_feats, weight, bias = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None

        kernel_size = weight.size(2)
        stride = ctx.stride
        padding = ctx.padding
        input_height = ctx.input_height
        input_width = ctx.input_width

        n_batch, c_out = grad_output.size(0), grad_output.size(1)
        g = grad_output.reshape(n_batch, c_out, -1)  # (N, C_o, L)
        if ctx.needs_input_grad[0]:
            grad_cols = torch.matmul(weight.reshape(c_out, -1).t(), g)  # (N, C_i*K*K, L)
            grad_input = fold(grad_cols, (input_height, input_width), kernel_size, padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            cols = unfold(input_feats, kernel_size, padding=padding, stride=stride)  # (N, C_i*K*K, L)
            grad_weight = torch.matmul(g, cols.transpose(1, 2)).sum(0).reshape(weight.shape)

        if bias is not None and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum((0, 2, 3))

        return grad_input, grad_weight, grad_bias, None, None


custom_conv2d = CustomConv2DFunction.apply


class CustomConv2d(Module):
    """The same interface as torch.nn.Conv2D (given)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True):
        super(CustomConv2d, self).__init__()
        assert isinstance(kernel_size, int), "We only support squared filters"
        assert isinstance(stride, int), "We only support equal stride"
        assert isinstance(padding, int), "We only support equal padding"
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.weight = nn.Parameter(torch.Tensor(out_channels, in_channels, kernel_size, kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.Tensor(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return custom_conv2d(input, self.weight, self.bias, self.stride, self.padding)


################################################################################
# Part I.2: a convolutional network
################################################################################
class SimpleNet(nn.Module):
    # the given CNN
    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super(SimpleNet, self).__init__()
        self.features = nn.Sequential(
            conv_op(3, 64, kernel_size=7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            conv_op(64, 64, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            conv_op(64, 64, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            conv_op(64, 256, kernel_size=1, stride=1, padding=0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
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
        x = self.features(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        x = self.fc(x)
        return x


class ResUnit(nn.Module):
    """Two 3x3 conv + BN layers with a shortcut (1x1 projection when the shape changes)."""

    def __init__(self, conv_op, c_in, c_out, stride):
        super().__init__()
        self.conv1 = conv_op(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv_op(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = None
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(conv_op(c_in, c_out, kernel_size=1, stride=stride, padding=0, bias=False),
                                      nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


class BetterNet(nn.Module):
    """BN residual CNN: stem, four stages (32-256 channels), global pooling, linear head."""

    def __init__(self, conv_op=nn.Conv2d, num_classes=100):
        super().__init__()
        self.stem = nn.Sequential(conv_op(3, 32, kernel_size=3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        widths = (32, 64, 128, 256)
        units, c_in = [], 32
        for i, w in enumerate(widths):
            units.append(ResUnit(conv_op, c_in, w, 1 if i == 0 else 2))
            c_in = w
        self.stages = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.classifier(self.pool(x).flatten(1))


default_cnn_model = BetterNet


################################################################################
# Part II.1: self-attention
################################################################################
class Attention(nn.Module):
    """Multi-head Self-Attention."""

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.num_heads, H * W, -1).unbind(0)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B*nh, L, L)
        weights = scores.softmax(dim=-1)
        x = weights @ v  # (B*nh, L, hd)
        x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)  # heads merged
        x = self.proj(x)
        return x


class TransformerBlock(nn.Module):
    """Transformer blocks with support of local window self-attention"""

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
        shortcut = x
        x = self.norm1(x)
        # Window partition
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)

        x = self.attn(x)
        # Reverse window partition
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))

        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


################################################################################
# Part II.2: a vision Transformer
################################################################################
class SimpleViT(nn.Module):
    def __init__(self, img_size=128, num_classes=100, patch_size=16, in_chans=3, embed_dim=192, depth=4,
                 num_heads=4, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.1, norm_layer=nn.LayerNorm,
                 act_layer=nn.GELU, use_abs_pos=True, window_size=4, window_block_indexes=(0, 2)):
        super(SimpleViT, self).__init__()

        if use_abs_pos:
            self.pos_embed = nn.Parameter(
                torch.zeros(1, img_size // patch_size, img_size // patch_size, embed_dim))
        else:
            self.pos_embed = None

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]

        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )

        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i],
                             norm_layer=norm_layer, act_layer=act_layer,
                             window_size=window_size if i in window_block_indexes else 0)
            for i in range(depth)])
        self.final_norm = norm_layer(embed_dim)
        self.out = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, num_classes))

        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)

        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x):
        x = self.patch_embed(x)  # (N, h, w, C)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.transformer_blocks:
            x = block(x)
        x = self.final_norm(x).mean(dim=(1, 2))  # (N, C)
        return self.out(x)


default_vit_model = SimpleViT


def get_train_transforms():
    train_transforms = []
    train_transforms.append(transforms.Scale(144))
    train_transforms.append(transforms.RandomHorizontalFlip())
    train_transforms.append(transforms.RandomColor(0.15))
    train_transforms.append(transforms.RandomRotate(15))
    train_transforms.append(transforms.RandomSizedCrop(128))
    train_transforms.append(transforms.ToTensor())
    train_transforms.append(transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    return transforms.Compose(train_transforms)


def get_val_transforms():
    val_transforms = []
    val_transforms.append(transforms.Scale(144))
    val_transforms.append(transforms.CenterCrop(128))
    val_transforms.append(transforms.ToTensor())
    val_transforms.append(transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    return transforms.Compose(val_transforms)


################################################################################
# Part III: adversarial samples
################################################################################
class PGDAttack(object):
    def __init__(self, loss_fn, num_steps=10, step_size=0.01, epsilon=0.1):
        self.loss_fn = loss_fn
        self.num_steps = num_steps
        self.step_size = step_size
        self.epsilon = epsilon

    def perturb(self, model, input):
        """PGD towards the least confident label of the clean input (L-inf ball of radius epsilon)."""
        output = input.clone()
        input.requires_grad = False

        with torch.no_grad():
            least = model(input).argmin(dim=1)  # least confident label
        with torch.enable_grad():
            for _ in range(self.num_steps):
                output = output.detach().requires_grad_(True)
                loss = self.loss_fn(model(output), least)
                grad, = torch.autograd.grad(loss, output)
                output = output.detach() - self.step_size * grad.sign()  # descend towards that label
                output = torch.min(torch.max(output, input - self.epsilon), input + self.epsilon)

        return output.detach()


default_attack = PGDAttack


def vis_grid(input, n_rows=10):
    output_imgs = make_grid(input.cpu(), nrow=n_rows, normalize=True)
    return output_imgs


default_visfunction = vis_grid
