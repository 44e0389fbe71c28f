"""Trusted helpers shared by the grading process and the sandbox child (copied into the sandbox as
`_grading_harness.py`). Only torch/torchvision code; nothing from the submission or the reference.

- `SmallCNN`: the fixed model that Part 3 attacks and trains (conv-BN-ReLU x2, pooling, linear).
- `RecordingFGSM`: the attacker given to `adversarial_training_step` (3b): one FGSM step, recording the mode
  the model is in when it is called and how many samples it gets.
- `ReferenceAttention`: a correct `Attention` (same constructor and parameter names) substituted for the
  student's when grading 2b, so a 2a bug is not charged twice.
- `RecordingConv`: an `nn.Conv2d` subclass to check that `default_cnn_model(conv_op=...)` builds every
  convolution with `conv_op`.
- `build_resnet18` / `swap_convs`: torchvision's ResNet-18 with seeded weights and random BatchNorm statistics,
  and the replacement of its `nn.Conv2d` layers by another conv class (1b-iv).
- `grad_sketch`: a compact fingerprint of a (large) gradient tensor.
- `model_snapshot`: parameters, buffers, `.grad`, `requires_grad` flags and modes of a model.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def valid_range(dtype=torch.float64):
    """`(low, high)`, each `(1, 3, 1, 1)`: the normalized images of pixels 0 and 1."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1)
    return (0.0 - mean) / std, (1.0 - mean) / std


class SmallCNN(nn.Module):
    """`(N, 3, H, W)` -> `(N, num_classes)`: conv3x3-BN-ReLU, conv3x3/2-BN-ReLU, global average pool, linear."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # (N, w, H, W)
        x = F.relu(self.bn2(self.conv2(x)))  # (N, 2w, H/2, W/2)
        return self.fc(x.mean(dim=(2, 3)))  # (N, num_classes)


class RecordingFGSM:
    """One FGSM step of size `epsilon` (ascent on `loss_fn(model(x), target)`), projected onto the valid
    image range. Records `(model.training, n)` at each call in `self.calls`. It runs the model as it finds
    it (it does not switch modes), so crafting in train mode would update BatchNorm statistics."""

    def __init__(self, loss_fn, epsilon=0.05):
        self.loss_fn = loss_fn
        self.epsilon = epsilon
        self.calls = []

    def perturb(self, model, input, target=None):
        self.calls.append((bool(model.training), int(input.shape[0])))
        x = input.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_fn(model(x), target)
            grad, = torch.autograd.grad(loss, x)
        low, high = (t.to(x.dtype) for t in valid_range())
        adv = x.detach() + self.epsilon * grad.sign()
        return torch.max(torch.min(adv, high), low).detach()


class ReferenceAttention(nn.Module):
    """Multi-head self-attention over `(B, H, W, C)` token grids (the answer to 2a, used to grade 2b)."""

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(B, H * W, 3, nh, C // nh).permute(2, 0, 3, 1, 4)  # (3, B, nh, L, hd)
        attn = (qkv[0] * self.scale) @ qkv[1].transpose(-2, -1)  # (B, nh, L, L)
        out = attn.softmax(dim=-1) @ qkv[2]  # (B, nh, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))  # (B, H, W, C)


class RecordingConv(nn.Conv2d):
    """`nn.Conv2d` under another class, to see whether a model builds its convolutions with `conv_op`."""


def count_convs(model, other_classes=()):
    """`(n_recording, n_other)`: convolution modules built with `RecordingConv` vs other convolution classes
    (`nn.Conv*` and `other_classes`, e.g. the submission's `CustomConv2d`)."""
    n_rec = n_other = 0
    for module in model.modules():
        if isinstance(module, RecordingConv):
            n_rec += 1
        elif isinstance(module, (nn.modules.conv._ConvNd,) + tuple(other_classes)):
            n_other += 1
    return n_rec, n_other


def randomize_bn_stats(model, generator):
    """Give every BatchNorm random running statistics (so eval mode differs from train mode)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))
                if m.affine:
                    m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=generator))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))


def build_resnet18(num_classes, seed, dtype=torch.float64):
    """torchvision's ResNet-18 (no pretrained weights) with weights drawn from `seed`, random BatchNorm
    statistics, in `dtype`. Deterministic: the grading process and the child build the same model."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    randomize_bn_stats(model, torch.Generator().manual_seed(seed + 1))
    return model.to(dtype)


def swap_convs(model, conv_cls):
    """Replace every `nn.Conv2d` in `model` (in place) by `conv_cls(in, out, k, stride=, padding=, bias=)`
    with the same weights. Returns `model`."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d):
            new = conv_cls(child.in_channels, child.out_channels, child.kernel_size[0], stride=child.stride[0],
                           padding=child.padding[0], bias=child.bias is not None)
            new.to(child.weight.dtype)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            swap_convs(child, conv_cls)
    return model


def grad_sketch(name_index, tensor):
    """`(4,)` float64 fingerprint of a tensor: sum, L2 norm, max |x| and the dot with a fixed pseudo-random
    vector seeded by `name_index`. Two gradients agree to tolerance iff (in practice) their sketches do."""
    t = tensor.detach().double().reshape(-1)  # (n,)
    probe = torch.randn(t.numel(), generator=torch.Generator().manual_seed(1000 + name_index),
                        dtype=torch.float64)  # (n,)
    return torch.stack([t.sum(), t.norm(), t.abs().max() if t.numel() else t.sum(), (t * probe).sum()])


def model_snapshot(model):
    """Everything an attack must leave untouched: `{"state": {name: tensor}, "grads": {name: tensor}
    (parameters with a .grad), "requires_grad": (P,) bool, "training": (M,) bool}` (cloned)."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
        "requires_grad": torch.tensor([p.requires_grad for p in model.parameters()], dtype=torch.bool),
        "training": torch.tensor([m.training for m in model.modules()], dtype=torch.bool),
    }


def load_model_state(model, setup):
    """Put `model` in the exact state described by `setup` (`state`, `grads`, `frozen` names, `train`)."""
    model.load_state_dict(setup["state"])
    for name, p in model.named_parameters():
        p.requires_grad_(name not in setup["frozen"])
        p.grad = setup["grads"][name].clone() if name in setup["grads"] else None
    model.train(bool(setup["train"]))
    return model


def seeded_images(generator, n, h, w, dtype=torch.float64):
    """`(n, 3, h, w)` normalized images of random pixels in [0, 1], some exactly 0 or 1 (range edges)."""
    pixels = torch.rand(n, 3, h, w, generator=generator, dtype=dtype)
    pixels[:, :, 0, :] = 0.0  # first row black: the lower bound is active
    pixels[:, :, -1, :] = 1.0  # last row white: the upper bound is active
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1)
    return (pixels - mean) / std

