"""Public tests of Part 1b: `SimpleNet` (1b-i, 1b-ii), `default_cnn_model` (1b-iii) and the ResNet-18 path of
`main.py --use-resnet18` (1b-iv).

- 1b-i: SimpleNet built with your `CustomConv2d` trains: it overfits a fixed batch of 16 images.
- 1b-ii: `SimpleNet(conv_op=CustomConv2d)` loaded with the weights of `SimpleNet(nn.Conv2d)` gives the same
  logits and the same gradient for every parameter (float64: 1e-10, float32: 1e-4 times the value scale).
- 1b-iii: `default_cnn_model` builds every convolution with `conv_op`, returns `(N, num_classes)` for 3, 10
  and 100 classes, every parameter gets a gradient, it stays within 2M parameters and overfits a batch.
- 1b-iv: `main.build_resnet18` loads ImageNet weights (from a file or torchvision's cache) under a fresh
  head, explains clearly where to get them when they are missing, and a ResNet-18 running on your
  `CustomConv2d` matches torchvision's.
No test downloads anything: weights files are random ones written to a temporary folder.

Run: python -m pytest tests/test_cnn.py
"""
import os
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from test_conv import _one_cpu_thread, compare  # noqa: F401 (_one_cpu_thread is an autouse fixture)

CONV_OPS = [pytest.param(nn.Conv2d, id="nn.Conv2d"), pytest.param(student_code.CustomConv2d, id="CustomConv2d")]
# SimpleNet on nn.Conv2d involves only given code: counted with the tests of the given code (part "given")
SIMPLENET_CONV_OPS = [pytest.param(nn.Conv2d, id="nn.Conv2d", marks=pytest.mark.part("given")),
                      pytest.param(student_code.CustomConv2d, id="CustomConv2d", marks=pytest.mark.part("1b-ii"))]
NUM_CLASSES = (3, 10, 100)
SIMPLENET_PARAMS_100 = 365_028  # the course's SimpleNet at 100 classes
DEFAULT_CNN_BUDGET = 2_000_000
RESNET18_FILE = "resnet18-f37072fd.pth"


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def smooth_images(n, size, seed):
    """`(n, 3, size, size)` random low-frequency images (bilinear upsampling of 4x4 noise): distinct after
    global pooling, so a small CNN can tell them apart quickly."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear",
                         align_corners=False)


class RecordingConv(nn.Conv2d):
    """`nn.Conv2d` under another name: shows whether a model builds its convolutions with `conv_op`."""


def conv_modules(model):
    return [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, student_code.CustomConv2d))]


def assert_all_params_get_gradients(model, x):
    """Every parameter gets a finite, non-zero gradient. One SGD step is taken first, so that a design that
    zero-initializes a layer (e.g. the last BatchNorm of each residual branch) is not penalized."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out, torch.arange(x.shape[0]) % out.shape[1]).backward()
        if not all(p.grad is not None for p in model.parameters()):
            break
        optimizer.step()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"
    zero = [name for name, p in model.named_parameters() if not p.grad.abs().max() > 0]
    assert not zero, f"parameters with an all-zero gradient: {zero}"
    nonfinite = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not nonfinite, f"parameters with a NaN/inf gradient: {nonfinite}"


def overfit_steps(model, x, y, lr, max_steps):
    """Adam on one fixed batch until every training prediction is right; returns the number of steps taken or
    raises with the last accuracy and loss."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(max_steps + 1):
        out = model(x)
        loss = F.cross_entropy(out, y)
        acc = (out.argmax(1) == y).float().mean().item()
        if acc == 1.0:
            return step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    raise AssertionError(f"did not fit 16 images in {max_steps} steps: train accuracy {acc:.3f}, "
                         f"loss {loss.item():.3f}")


################################################################################
# SimpleNet (given): 1b-i and 1b-ii
################################################################################
@pytest.mark.part("given")  # SimpleNet is given
def test_simplenet_parameter_count():
    n = count_params(student_code.SimpleNet(num_classes=100))
    assert n == SIMPLENET_PARAMS_100, f"SimpleNet has {n} parameters at 100 classes, the course's has " \
                                      f"{SIMPLENET_PARAMS_100} (~0.37M): keep the given SimpleNet unchanged"
    n_custom = count_params(student_code.SimpleNet(conv_op=student_code.CustomConv2d, num_classes=100))
    assert n_custom == n, f"SimpleNet(conv_op=CustomConv2d) has {n_custom} parameters, nn.Conv2d: {n}"


@pytest.mark.part("1b-ii")
@pytest.mark.parametrize("dtype", [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32,
                                                                                            id="float32")])
def test_simplenet_custom_conv_matches_nn_conv2d(device, dtype):
    """Same weights, same input: same logits and the same gradient for every parameter and the input."""
    torch.manual_seed(0)
    ref = student_code.SimpleNet(conv_op=nn.Conv2d, num_classes=10)
    custom = student_code.SimpleNet(conv_op=student_code.CustomConv2d, num_classes=10)
    custom.load_state_dict(ref.state_dict())
    ref, custom = ref.to(device=device, dtype=dtype), custom.to(device=device, dtype=dtype)
    x = torch.randn(3, 3, 40, 48, device=device, dtype=dtype)  # non-square
    target = torch.tensor([1, 7, 3], device=device)
    outputs = {}
    for name, model in (("nn.Conv2d", ref), ("CustomConv2d", custom)):
        xi = x.clone().requires_grad_()
        out = model(xi)
        F.cross_entropy(out, target).backward()
        outputs[name] = (out.detach(), xi.grad, dict(model.named_parameters()))
    out_ref, gx_ref, params_ref = outputs["nn.Conv2d"]
    out_cus, gx_cus, params_cus = outputs["CustomConv2d"]
    problems = [compare("logits", out_cus, out_ref, dtype), compare("input gradient", gx_cus, gx_ref, dtype)]
    for name, p in params_ref.items():
        problems.append(compare(f"gradient of {name}", params_cus[name].grad, p.grad, dtype))
    problems = [p for p in problems if p]
    assert not problems, "SimpleNet with CustomConv2d differs from nn.Conv2d:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("conv_op", SIMPLENET_CONV_OPS)
@pytest.mark.parametrize("num_classes", NUM_CLASSES)
def test_simplenet_shapes_and_gradients(conv_op, num_classes):
    torch.manual_seed(0)
    model = student_code.SimpleNet(conv_op=conv_op, num_classes=num_classes)
    convs = conv_modules(model)
    assert len(convs) == 7 and all(isinstance(m, conv_op) for m in convs), \
        "SimpleNet must build its 7 convolutions with conv_op"
    x = torch.randn(4, 3, 32, 40)
    assert model(x).shape == (4, num_classes)
    assert_all_params_get_gradients(model, x)


@pytest.mark.part("1b-i")
def test_simplenet_trains_overfits_a_batch():
    """16 images, 10 classes, Adam: SimpleNet on your CustomConv2d memorizes them within 150 steps (the
    reference needs about 40)."""
    torch.manual_seed(0)
    model = student_code.SimpleNet(conv_op=student_code.CustomConv2d, num_classes=10)
    x, y = smooth_images(16, 32, seed=1), torch.arange(16) % 10
    overfit_steps(model, x, y, lr=2e-3, max_steps=150)


################################################################################
# default_cnn_model: 1b-iii
################################################################################
@pytest.mark.part("1b-iii")
def test_default_cnn_uses_conv_op_for_every_convolution():
    model = student_code.default_cnn_model(conv_op=RecordingConv, num_classes=10)
    convs = conv_modules(model)
    assert convs, "default_cnn_model has no convolution"
    other = [type(m).__name__ for m in convs if not isinstance(m, RecordingConv)]
    assert not other, f"{len(other)} convolution(s) not built with conv_op ({other[:3]}): --use-custom-conv " \
                      f"would not use your CustomConv2d everywhere"
    custom = student_code.default_cnn_model(conv_op=student_code.CustomConv2d, num_classes=10)
    assert all(isinstance(m, student_code.CustomConv2d) for m in conv_modules(custom))


@pytest.mark.part("1b-iii")
@pytest.mark.parametrize("num_classes", NUM_CLASSES)
def test_default_cnn_parameter_budget(num_classes):
    n = count_params(student_code.default_cnn_model(num_classes=num_classes))
    assert n <= DEFAULT_CNN_BUDGET, f"default_cnn_model has {n} parameters, the budget is {DEFAULT_CNN_BUDGET}"
    n_custom = count_params(student_code.default_cnn_model(conv_op=student_code.CustomConv2d,
                                                           num_classes=num_classes))
    assert n_custom == n, f"with CustomConv2d {n_custom} parameters, with nn.Conv2d {n}"


@pytest.mark.part("1b-iii")
@pytest.mark.parametrize("conv_op", CONV_OPS)
@pytest.mark.parametrize("num_classes", NUM_CLASSES)
def test_default_cnn_shapes_and_gradients(conv_op, num_classes):
    torch.manual_seed(0)
    model = student_code.default_cnn_model(conv_op=conv_op, num_classes=num_classes)
    for size in ((32, 32), (64, 48)):
        assert model(torch.randn(2, 3, *size)).shape == (2, num_classes), f"output shape at {size} input"
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, num_classes), "eval mode, batch of one"
    model.train()
    assert_all_params_get_gradients(model, torch.randn(4, 3, 32, 32))


@pytest.mark.part("1b-iii")
@pytest.mark.parametrize("conv_op", CONV_OPS)
@pytest.mark.parametrize("num_classes", NUM_CLASSES)
def test_default_cnn_trains_overfits_a_batch(conv_op, num_classes):
    torch.manual_seed(0)
    model = student_code.default_cnn_model(conv_op=conv_op, num_classes=num_classes)
    x = smooth_images(16, 32, seed=2)
    y = (torch.arange(16) * 7) % num_classes
    overfit_steps(model, x, y, lr=2e-3, max_steps=60)


################################################################################
# ResNet-18 (main.build_resnet18): 1b-iv
################################################################################
def random_resnet18_state(seed):
    """A torchvision ResNet-18 state_dict (1000 classes) with random weights and BatchNorm statistics."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    return model.state_dict()


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory):
    """Two random ResNet-18 weights files, written once: `[(path, state_dict), (path, state_dict)]`."""
    folder = tmp_path_factory.mktemp("resnet18_weights")
    files = []
    for seed in (5, 6):
        state = random_resnet18_state(seed)
        torch.save(state, folder / f"resnet18_seed{seed}.pth")
        files.append((folder / f"resnet18_seed{seed}.pth", state))
    return files


def put_in_torch_cache(torch_home, path):
    """Make `path` torchvision's cached ResNet-18 weights under `torch_home` (a link, or a copy)."""
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(path, cache / RESNET18_FILE)
    except OSError:
        shutil.copy(path, cache / RESNET18_FILE)


def assert_backbone_loaded(model, state, num_classes):
    assert isinstance(model.fc, nn.Linear), "the head must be an nn.Linear"
    assert (model.fc.in_features, model.fc.out_features) == (512, num_classes), \
        f"head is Linear({model.fc.in_features}, {model.fc.out_features}), expected Linear(512, {num_classes})"
    loaded = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    differ = [k for k in backbone if not torch.equal(loaded[k], state[k])]
    assert not differ, f"{len(differ)} backbone tensors differ from the weights file, e.g. {differ[:3]}"


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """TORCH_HOME pointing to an empty folder (torchvision's cache is then TORCH_HOME/hub/checkpoints)."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called torch.hub.set_dir
    return home


@pytest.mark.part("given")  # main.py is given
def test_resnet18_from_weights_file(resnet18_weights, empty_torch_home):
    import main

    path, state = resnet18_weights[0]
    model = main.build_resnet18(7, weights_file=str(path))
    assert_backbone_loaded(model, state, 7)
    model.eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


@pytest.mark.part("given")
def test_resnet18_from_torchvision_cache(resnet18_weights, empty_torch_home):
    import main

    path, state = resnet18_weights[1]
    put_in_torch_cache(empty_torch_home, path)
    model = main.build_resnet18(100)
    assert_backbone_loaded(model, state, 100)


@pytest.mark.part("given")
def test_resnet18_missing_weights_clear_error(tmp_path, empty_torch_home):
    import main

    expected_place = str(empty_torch_home / "hub" / "checkpoints")
    with pytest.raises(main.UsageError) as info:
        main.build_resnet18(10)
    message = str(info.value)
    for needed in (RESNET18_FILE, "download.pytorch.org", expected_place):
        assert needed in message, f"the error should mention {needed!r}: {message!r}"
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(main.UsageError, match="nowhere"):
        main.build_resnet18(10, weights_file=str(missing))


def swap_convs(model, conv_cls):
    """Replace (in place) every `nn.Conv2d` of `model` by `conv_cls` holding the same weights."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d):
            new = conv_cls(child.in_channels, child.out_channels, child.kernel_size[0], stride=child.stride[0],
                           padding=child.padding[0], bias=child.bias is not None)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new.to(child.weight.dtype))
        else:
            swap_convs(child, conv_cls)
    return model


@pytest.mark.part("1b-iv")
def test_resnet18_on_custom_conv_matches_torchvision(resnet18_weights):
    """ResNet-18 (7x7/2 stem, 3x3 and strided 1x1 shortcut convolutions, no bias) with every convolution
    replaced by CustomConv2d: same logits and gradients in float64."""
    import copy

    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=5)
    ref.load_state_dict({k: v for k, v in resnet18_weights[0][1].items() if not k.startswith("fc.")}, strict=False)
    ref = ref.double().eval()
    custom = swap_convs(copy.deepcopy(ref), student_code.CustomConv2d)
    assert not any(type(m) is nn.Conv2d for m in custom.modules())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    results = []
    for model in (ref, custom):
        out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), dict(model.named_parameters())))
    problems = [compare("logits", results[1][0], results[0][0], torch.float64)]
    problems += [compare(f"gradient of {name}", results[1][1][name].grad, p.grad, torch.float64)
                 for name, p in results[0][1].items()]
    problems = [p for p in problems if p]
    assert not problems, "ResNet-18 on CustomConv2d differs:\n  " + "\n  ".join(problems[:8])
