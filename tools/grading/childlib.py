"""Helpers the untrusted child uses to run the items (shipped into the sandbox under a random module name; the
grading process imports the same module to build the same models). Only torch/torchvision code that is
*no answer* to any item: nothing here computes what a student must write.

- `describe(exc)`: an exception as `Type: message (student_code.py line N)` (the student's own lines only).
- `plain(t)`, `grads(model)`, `stage(results, name, fn)`: raw outputs for the parent (plain contiguous copies).
- `SmallCNN`: the fixed model that Part 3 attacks and trains (conv-BN-ReLU x2, pooling, linear).
- `RecordingAttacker`: the gradient-free attacker given to `adversarial_training_step` (3b).
- `TokenMixer`: the stand-in for `Attention` when grading 2b (not attention, so no 2a answer).
- `RecordingConv`, `module_classes`: to see whether a model builds its convolutions with `conv_op` (1b-iii).
- `build_resnet18` / `swap_convs`: torchvision's ResNet-18 with seeded weights and random BatchNorm statistics,
  and the replacement of its `nn.Conv2d` layers by another conv class (1b-iv).
- `grad_sketch`: a compact fingerprint of a (large) gradient tensor.
- `model_snapshot` / `load_model_state`: parameters, buffers, `.grad`, `requires_grad` flags and modes.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

LIMIT_MESSAGE = 300  # characters of an exception message kept

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def describe(exc):
    """`"Type: message (student_code.py line N)"`, robust to hostile exception objects. Only the student's
    own file is named; the message is cut to `LIMIT_MESSAGE` characters."""
    try:
        name = type(exc).__name__
    except BaseException:  # noqa: B902
        name = "Exception"
    try:
        text = str(exc)
    except BaseException:  # noqa: B902
        text = "<unprintable>"
    if not isinstance(name, str):
        name = "Exception"
    if not isinstance(text, str):
        text = "<unprintable>"
    line = None
    try:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.endswith("student_code.py"):
                line = tb.tb_lineno
            tb = tb.tb_next
    except BaseException:  # noqa: B902
        pass
    out = f"{name[:80]}: {text}" if text else name[:80]
    if len(out) > LIMIT_MESSAGE:
        out = out[:LIMIT_MESSAGE] + "..."
    if line is not None:
        out += f" (student_code.py line {int(line)})"
    return out


def plain(t):
    """A detached, contiguous plain `torch.Tensor` copy (no subclass, no graph, owning its storage), or None."""
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    t = t.detach()
    if type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    return t.cpu().contiguous().clone(memory_format=torch.contiguous_format)


def grads(model):
    """`{parameter name: plain copy of .grad}` for parameters with a gradient."""
    return {n: plain(p.grad) for n, p in model.named_parameters() if p.grad is not None}


def stage(results, name, fn):
    """`results[name] = fn()`, or `{"error": describe(exc)}` when it raises."""
    try:
        results[name] = fn()
    except BaseException as exc:  # noqa: B902 - SystemExit from student code too
        results[name] = {"error": describe(exc)}


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


class RecordingAttacker:
    """The attacker handed to `adversarial_training_step` (3b). It computes no gradient (it is no answer to
    3a): it runs the model once on the batch as it finds it (so crafting in train mode moves BatchNorm
    statistics), then returns `input + epsilon * sign(fixed noise)` projected onto the valid image range.
    Records, per call, `(model.training, n, target given)` in `self.calls` and the batch and target it got."""

    def __init__(self, epsilon=0.05, seed=7):
        self.epsilon = epsilon
        self.seed = seed
        self.calls = []
        self.inputs = []
        self.targets = []

    def perturb(self, model, input, target=None):
        self.calls.append((bool(model.training), int(input.shape[0]), target is not None))
        self.inputs.append(input.detach().clone())
        self.targets.append(None if target is None else target.detach().clone())
        with torch.no_grad():
            model(input)
        noise = torch.randn(input.shape, generator=torch.Generator().manual_seed(self.seed), dtype=input.dtype)
        low, high = (t.to(input.dtype) for t in valid_range())
        adv = input.detach() + self.epsilon * noise.sign()
        return torch.max(torch.min(adv, high), low).detach()


class TokenMixer(nn.Module):
    """A stand-in for the student's `Attention` when grading 2b (same constructor, `qkv`/`proj`/`scale`
    attributes and state_dict keys), so a 2a bug costs no 2b points. It is deliberately *not* attention (no
    softmax over query-key scores): `proj(v * sigmoid(k) + mean over tokens of q)` on `(B, H, W, C)`, which
    mixes tokens (window layout and padding matter) and depends on every weight."""

    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # each (B, H, W, C)
        mixed = v * torch.sigmoid(k) + q.mean(dim=(1, 2), keepdim=True)  # (B, H, W, C)
        return self.proj(mixed)


class RecordingConv(nn.Conv2d):
    """`nn.Conv2d` under another class, to see whether a model builds its convolutions with `conv_op`."""


def module_classes(model):
    """`[module.class qualname]` of every submodule (raw: the parent decides what they mean)."""
    return [f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()]


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

