"""Hidden (staff-only) tests of Part 1b: SimpleNet, `default_cnn_model` and the ResNet-18 path, beyond the public
set.

- SimpleNet is exactly the course's network (layer by layer: kinds, channels, kernels, strides, paddings).
- `default_cnn_model` on CustomConv2d equals it on nn.Conv2d with the same weights, in train mode (batch
  statistics) and eval mode (random running statistics), float64; it takes MiniPlaces-size and non-square
  inputs and a batch of one in eval mode.
- `main.build_resnet18`: the given file wins over the cache; a corrupt file or one with other keys gives a
  `UsageError` naming the file; the head is fresh even at 1000 classes; with CustomConv2d everywhere it matches
  torchvision in train mode and on a non-square input.

Run: python -m pytest tests/hidden/test_cnn_hidden.py
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from test_cnn import assert_backbone_loaded, conv_modules, empty_torch_home, put_in_torch_cache, \
    resnet18_weights, swap_convs  # noqa: F401 (empty_torch_home and resnet18_weights are fixtures)
from test_conv import _one_cpu_thread, compare  # noqa: F401 (_one_cpu_thread is an autouse fixture)

# (kind, in, out, kernel, stride, padding) of SimpleNet.features, as the course gives it
SIMPLENET_FEATURES = [
    ("conv", 3, 64, 7, 2, 3), ("relu",), ("maxpool", 3, 2, 1),
    ("conv", 64, 64, 1, 1, 0), ("relu",), ("conv", 64, 64, 3, 1, 1), ("relu",), ("conv", 64, 256, 1, 1, 0), ("relu",),
    ("maxpool", 3, 2, 1),
    ("conv", 256, 128, 1, 1, 0), ("relu",), ("conv", 128, 128, 3, 1, 1), ("relu",), ("conv", 128, 512, 1, 1, 0),
    ("relu",),
]


def describe(layer):
    if isinstance(layer, (nn.Conv2d, student_code.CustomConv2d)):
        return ("conv", layer.in_channels, layer.out_channels, layer.kernel_size[0], _int(layer.stride),
                _int(layer.padding))
    if isinstance(layer, nn.ReLU):
        return ("relu",)
    if isinstance(layer, nn.MaxPool2d):
        return ("maxpool", layer.kernel_size, layer.stride, layer.padding)
    return (type(layer).__name__,)


def _int(value):
    return value[0] if isinstance(value, tuple) else value


@pytest.mark.part("given")  # SimpleNet is given
@pytest.mark.parametrize("conv_op", [nn.Conv2d, student_code.CustomConv2d], ids=["nn.Conv2d", "CustomConv2d"])
def test_simplenet_is_the_course_network(conv_op):
    model = student_code.SimpleNet(conv_op=conv_op, num_classes=37)
    assert [describe(m) for m in model.features] == SIMPLENET_FEATURES
    assert all(m.inplace for m in model.features if isinstance(m, nn.ReLU)), "the course's ReLUs are in-place"
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size in ((1, 1), 1)
    assert (model.fc.in_features, model.fc.out_features) == (512, 37)


def randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.affine:
                    m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


@pytest.mark.part("1b-iii")
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_default_cnn_custom_conv_matches_nn_conv2d(device, mode):
    torch.manual_seed(0)
    ref = student_code.default_cnn_model(conv_op=nn.Conv2d, num_classes=10)
    randomize_bn(ref, seed=1)
    custom = student_code.default_cnn_model(conv_op=student_code.CustomConv2d, num_classes=10)
    assert list(custom.state_dict()) == list(ref.state_dict()), "state_dict keys depend on conv_op"
    custom.load_state_dict(ref.state_dict())
    ref, custom = ref.double().to(device), custom.double().to(device)
    ref.train(mode == "train")
    custom.train(mode == "train")
    x = torch.randn(3, 3, 40, 48, dtype=torch.float64, device=device)
    results = []
    for model in (ref, custom):
        out = model(x)
        F.cross_entropy(out, torch.tensor([0, 4, 9], device=device)).backward()
        results.append((out.detach(), dict(model.named_parameters())))
    problems = [compare("logits", results[1][0], results[0][0], torch.float64)]
    problems += [compare(f"gradient of {name}", results[1][1][name].grad, p.grad, torch.float64)
                 for name, p in results[0][1].items()]
    problems = [p for p in problems if p]
    assert not problems, "\n  ".join(problems[:8])


@pytest.mark.part("1b-iii")
def test_default_cnn_input_sizes():
    torch.manual_seed(0)
    model = student_code.default_cnn_model(num_classes=100)
    assert model(torch.randn(2, 3, 128, 128)).shape == (2, 100), "MiniPlaces size 128x128"
    assert model(torch.randn(2, 3, 96, 64)).shape == (2, 100), "non-square input"
    model.eval()
    with torch.no_grad():
        a = model(torch.randn(1, 3, 33, 47))
        assert a.shape == (1, 100) and torch.isfinite(a).all()


@pytest.mark.part("given")  # main.build_resnet18 is given
def test_resnet18_file_wins_over_cache(resnet18_weights, empty_torch_home):
    import main

    put_in_torch_cache(empty_torch_home, resnet18_weights[0][0])
    path, given = resnet18_weights[1]
    assert_backbone_loaded(main.build_resnet18(4, weights_file=str(path)), given, 4)


@pytest.mark.part("given")
def test_resnet18_fresh_head_at_1000_classes(resnet18_weights, empty_torch_home):
    import main

    path, state = resnet18_weights[0]
    model = main.build_resnet18(1000, weights_file=str(path))
    assert_backbone_loaded(model, state, 1000)
    assert not torch.equal(model.fc.weight, state["fc.weight"]), "the head must be fresh, not the file's"


@pytest.mark.part("given")
@pytest.mark.parametrize("content", ["corrupt", "other_keys"])
def test_resnet18_bad_weights_file(tmp_path, empty_torch_home, content):
    import main

    path = tmp_path / f"{content}.pth"
    if content == "corrupt":
        path.write_bytes(b"not a checkpoint at all")
    else:
        torch.save({"layer.weight": torch.zeros(3)}, path)
    with pytest.raises(main.UsageError, match=content):
        main.build_resnet18(10, weights_file=str(path))


@pytest.mark.part("1b-iv")
def test_resnet18_on_custom_conv_train_mode_non_square():
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None, num_classes=3).double().train()
    custom = swap_convs(copy.deepcopy(ref), student_code.CustomConv2d)
    assert len(conv_modules(custom)) == 20 and not any(type(m) is nn.Conv2d for m in custom.modules())
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    results = []
    for model in (ref, custom):
        out = model(x)
        F.cross_entropy(out, torch.tensor([0, 2])).backward()
        results.append((out.detach(), dict(model.named_parameters())))
    problems = [compare("logits", results[1][0], results[0][0], torch.float64)]
    problems += [compare(f"gradient of {name}", results[1][1][name].grad, p.grad, torch.float64)
                 for name, p in results[0][1].items()]
    problems = [p for p in problems if p]
    assert not problems, "\n  ".join(problems[:8])
