"""Tests of fast_path.py's model and optimizer hooks: bf16 autocast wrapper, channels_last, torch.compile
wrapping (lazy: nothing compiles here), fused/foreach optimizer selection, and the runner's on-device
metrics (`accuracy(as_tensor=True)`, tensor-valued `AverageMeter`).

    python -m pytest tests/test_fast_path.py
"""
import argparse

import pytest
import torch
import torch.nn as nn

import fast_path
import main as runner
import student_code


def args_for(device, **levers):
    base = dict(amp=False, channels_last=False, compile=False, fused_optim=False)
    base.update(levers)
    return argparse.Namespace(device=device, **base)


def test_autocast_forward_is_bf16_inside_float32_outside(device):
    model = fast_path.prepare_model(student_code.SimpleNet(num_classes=5), args_for(device, channels_last=True))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    wrapped = fast_path.training_module(model, args_for(device, amp=True))
    seen = []
    hook = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).register_forward_hook(
        lambda m, i, o: seen.append(o.dtype))
    x = fast_path.to_device(torch.randn(2, 3, 32, 32), args_for(device, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)
    out = wrapped(x)
    hook.remove()
    assert seen == [torch.bfloat16] and out.dtype == torch.float32 and out.shape == (2, 5)
    ref = model(x)
    diff = (out - ref).abs().max().item()
    assert diff < 0.05 * ref.abs().max().item() + 1e-3, f"bf16 vs fp32 logits: largest difference {diff}"
    assert list(wrapped.parameters()) == list(model.parameters())  # no parameters of its own


def test_compile_wraps_only_when_asked():
    model = nn.Linear(3, 2)
    args = args_for(torch.device("cpu"), compile=True)
    assert isinstance(fast_path.training_module(model, args), torch._dynamo.eval_frame.OptimizedModule)
    assert fast_path.training_module(model, args, compile=False) is model
    assert fast_path.training_module(model, args_for(torch.device("cpu"))) is model


def test_fused_optimizer_where_supported(device):
    args = runner.get_args_parser().parse_args(["--fused-optim", "--use-simplenet"])
    runner.fill_defaults(args, embedded=True)
    args.device = device
    model = nn.Linear(4, 3).to(device)
    opt = runner.build_optimizer(args, model)
    from torch.optim.optimizer import _get_fused_kernels_supported_devices
    key = "fused" if device.type in _get_fused_kernels_supported_devices() else "foreach"
    assert all(g[key] for g in opt.param_groups), opt.param_groups[0]
    # the fused step gives the plain step's result
    plain_args = runner.get_args_parser().parse_args(["--use-simplenet"])
    runner.fill_defaults(plain_args, embedded=True)
    twin = nn.Linear(4, 3).to(device)
    twin.load_state_dict(model.state_dict())
    plain = runner.build_optimizer(plain_args, twin)
    x = torch.randn(8, 4, device=device)
    for m, o in ((model, opt), (twin, plain)):
        for _ in range(3):
            o.zero_grad()
            m(x).square().sum().backward()
            o.step()
    diff = (model.weight - twin.weight).abs().max().item()
    assert diff < 1e-5, f"fused vs plain SGD: largest difference {diff}"


def test_on_device_metrics_match_the_host_ones(device):
    out = torch.randn(50, 10, device=device)
    target = torch.randint(10, (50,), device=device)
    floats = runner.accuracy(out, target)
    tensors = runner.accuracy(out, target, as_tensor=True)
    assert all(t.device.type == device.type and t.dim() == 0 for t in tensors)
    assert [t.item() for t in tensors] == pytest.approx(floats)
    host, dev = runner.AverageMeter(), runner.AverageMeter()
    for k, (a, t) in enumerate(zip(floats, tensors)):
        host.update(a, k + 1), dev.update(t, k + 1)
    assert dev.avg == pytest.approx(host.avg)
