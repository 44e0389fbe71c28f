"""Hidden (staff-only) tests of Part 1a, `custom_conv2d` / `CustomConv2d`: corner cases beyond the public set.

- wider layers and larger images in float32 (the sizes of a real network, still small enough to be fast);
- non-contiguous tensors: a channels-last or sliced input, a transposed weight, a channels-last upstream
  gradient;
- only some inputs requiring a gradient (the stem's image input needs none), and the results then;
- inputs left unchanged, dtype kept, repeated backward (retain_graph) and two convolutions in one graph;
- edge geometry: a 1x1 output, a stride larger than the kernel (input pixels no window sees), padding larger
  than the kernel (output borders that are only the bias);
- more float64 gradchecks; the forbidden-operator spy on a whole SimpleNet with CustomConv2d;
- `CustomConv2d` constructor conveniences (pairs, device/dtype, bias=False) as `nn.Conv2d` has them.
Comparisons use the public tests' `compare` (float64 1e-10, float32 1e-4 times the value scale).

Run: python -m pytest tests/hidden/test_conv_hidden.py
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from forbidden import CONV_OPS, forbid_aten
from test_conv import _one_cpu_thread, check_config, compare, make_case, out_size, \
    torch_conv  # noqa: F401 (_one_cpu_thread is an autouse fixture)

# (N, C_in, C_out, H, W, K, stride, padding, bias)
WIDE_CASES = [
    (4, 16, 32, 17, 23, 3, 1, 1, True),
    (2, 32, 16, 20, 15, 3, 2, 1, False),
    (3, 8, 24, 19, 21, 5, 2, 2, True),
    (2, 24, 40, 12, 12, 1, 1, 0, True),
    (2, 24, 40, 13, 11, 1, 2, 0, False),
    (1, 3, 16, 33, 29, 7, 2, 3, True),
    (5, 6, 6, 9, 9, 4, 3, 1, True),
]


@pytest.mark.parametrize("case", WIDE_CASES, ids=[f"N{c[0]}-{c[1]}to{c[2]}-{c[3]}x{c[4]}-K{c[5]}-s{c[6]}-p{c[7]}"
                                                  for c in WIDE_CASES])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float64, id="float64"),
                                   pytest.param(torch.float32, id="float32")])
def test_wide_layers(device, dtype, case):
    n, c_in, c_out, h, w, k, stride, padding, with_bias = case
    problems = check_config(n, c_in, c_out, h, w, k, stride, padding, with_bias, device, dtype)
    assert not problems, "; ".join(problems)


# (K, stride, padding, H, W): edge geometry
EDGE_CASES = [
    (5, 1, 0, 5, 5),   # 1x1 output, kernel covers the whole input
    (3, 2, 0, 3, 4),   # 1x1 output with a non-square input
    (2, 3, 0, 10, 8),  # stride > kernel: some input pixels are in no window (zero gradient)
    (1, 3, 0, 7, 7),   # 1x1 kernel with stride 3
    (1, 1, 3, 4, 5),   # padding > kernel: output borders are the bias only
    (3, 1, 3, 2, 3),   # input smaller than the kernel, rescued by padding
    (7, 3, 3, 7, 9),
]


@pytest.mark.parametrize("case", EDGE_CASES, ids=[f"K{c[0]}-s{c[1]}-p{c[2]}-{c[3]}x{c[4]}" for c in EDGE_CASES])
def test_edge_geometry(device, case):
    k, stride, padding, h, w = case
    for with_bias in (True, False):
        problems = check_config(2, 3, 2, h, w, k, stride, padding, with_bias, device, torch.float64)
        assert not problems, f"bias={with_bias}: " + "; ".join(problems)


@pytest.mark.parametrize("case", [(3, 1, 1), (1, 1, 0), (1, 2, 0), (4, 2, 1)],
                         ids=["K3-s1-p1", "K1-s1-p0", "K1-s2-p0", "K4-s2-p1"])
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed_weight"])
def test_non_contiguous_tensors(device, case, layout):
    k, stride, padding = case
    x, weight, bias = make_case(2, 4, 5, 11, 9, k, True, device, torch.float64, seed=4)
    if layout == "channels_last":
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
        assert not x.is_contiguous()
    elif layout == "sliced":
        big = torch.randn(2, 8, 13, 20, dtype=torch.float64, device=device)
        x = big[:, 1::2, 1:12, ::2].detach().requires_grad_()  # (2, 4, 11, 10)
        assert not x.is_contiguous()
    else:
        weight = weight.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
        assert not weight.is_contiguous()
    out_ref = F.conv2d(x, weight, bias, stride, padding)
    grad_output = torch.randn_like(out_ref).to(memory_format=torch.channels_last)  # non-contiguous too
    expected = torch_conv(x, weight, bias, stride, padding, grad_output)
    out = student_code.custom_conv2d(x, weight, bias, stride, padding)
    got = (out.detach(),) + torch.autograd.grad(out, (x, weight, bias), grad_output)
    problems = [compare(name, a, e, torch.float64)
                for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, expected)]
    problems = [p for p in problems if p]
    assert not problems, f"{layout}: " + "; ".join(problems)


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False), (False, False, True),
                                   (True, True, False), (False, True, False)],
                         ids=["stem-weight-bias", "input-only", "bias-only", "input-weight", "weight-only"])
def test_some_inputs_without_grad(device, needs):
    x, weight, bias = make_case(2, 3, 4, 9, 10, 3, True, device, torch.float64, seed=5)
    tensors = [t.detach().requires_grad_(r) for t, r in zip((x, weight, bias), needs)]
    grad_output = torch.randn(2, 4, 5, 5, dtype=torch.float64, device=device)
    expected = torch_conv(*tensors, 2, 1, grad_output)[1:]
    out = student_code.custom_conv2d(*tensors, 2, 1)
    assert out.requires_grad
    wanted = [t for t in tensors if t.requires_grad]
    got = torch.autograd.grad(out, wanted, grad_output)
    names = [n for n, t in zip(("grad_input", "grad_weight", "grad_bias"), tensors) if t.requires_grad]
    refs = [e for e, t in zip(expected, tensors) if t.requires_grad]
    problems = [p for p in (compare(n, a, e, torch.float64) for n, a, e in zip(names, got, refs)) if p]
    assert not problems, "; ".join(problems)


def test_no_grad_anywhere_gives_plain_output(device):
    x, weight, bias = make_case(2, 3, 4, 8, 8, 3, True, device, torch.float64)
    with torch.no_grad():
        out = student_code.custom_conv2d(x, weight, bias, 1, 1)
    assert not out.requires_grad
    reason = compare("output under no_grad", out, F.conv2d(x, weight, bias, 1, 1).detach(), torch.float64)
    assert reason is None, reason


def test_inputs_unchanged_and_dtype_kept(device):
    for dtype in (torch.float32, torch.float64):
        x, weight, bias = make_case(2, 3, 4, 8, 7, 3, True, device, dtype)
        copies = [t.detach().clone() for t in (x, weight, bias)]
        out = student_code.custom_conv2d(x, weight, bias, 2, 1)
        assert out.dtype == dtype and out.device.type == torch.device(device).type
        grad_output = torch.randn_like(out)
        grad_copy = grad_output.clone()
        out.backward(grad_output)
        for name, t, c in zip(("input", "weight", "bias"), (x, weight, bias), copies):
            assert torch.equal(t.detach(), c), f"custom_conv2d modified its {name}"
        assert torch.equal(grad_output, grad_copy), "backward modified grad_output in place"
        assert x.grad.dtype == weight.grad.dtype == bias.grad.dtype == dtype


def test_repeated_backward_and_two_convs_in_one_graph(device):
    x, weight, bias = make_case(2, 3, 3, 8, 8, 3, True, device, torch.float64)
    w2 = torch.randn(4, 3, 1, 1, dtype=torch.float64, device=device, requires_grad=True)
    out = student_code.custom_conv2d(F.relu(student_code.custom_conv2d(x, weight, bias, 1, 1)), w2, None, 2, 0)
    grad_output = torch.randn_like(out)
    first = torch.autograd.grad(out, (x, weight, bias, w2), grad_output, retain_graph=True)
    second = torch.autograd.grad(out, (x, weight, bias, w2), grad_output)
    for a, b in zip(first, second):
        assert torch.equal(a, b), "a second backward through the same graph gives other gradients"
    ref = F.conv2d(F.relu(F.conv2d(x, weight, bias, 1, 1)), w2, None, 2, 0)
    expected = torch.autograd.grad(ref, (x, weight, bias, w2), grad_output)
    for name, a, e in zip(("grad_input", "grad_weight1", "grad_bias1", "grad_weight2"), first, expected):
        reason = compare(name, a, e, torch.float64)
        assert reason is None, reason


GRADCHECK_MORE = [
    (2, 2, 2, 7, 5, 3, 3, 3, True),
    (1, 3, 2, 4, 6, 2, 1, 2, True),
    (3, 1, 1, 5, 5, 5, 2, 2, False),
    (1, 2, 3, 6, 4, 6, 1, 1, True),
    (2, 2, 2, 5, 8, 7, 1, 3, False),
]


@pytest.mark.parametrize("case", GRADCHECK_MORE, ids=[f"K{c[5]}-s{c[6]}-p{c[7]}-{c[3]}x{c[4]}" for c in GRADCHECK_MORE])
def test_more_gradchecks(device, case):
    n, c_in, c_out, h, w, k, stride, padding, with_bias = case
    x, weight, bias = make_case(n, c_in, c_out, h, w, k, with_bias, device, torch.float64, seed=6)
    assert torch.autograd.gradcheck(
        lambda a, b, c: student_code.custom_conv2d(a, b, c, stride, padding), (x, weight, bias),
        eps=1e-6, atol=1e-7, rtol=1e-5)


def test_simplenet_with_custom_conv_calls_no_convolution_routine(device):
    torch.manual_seed(0)
    model = student_code.SimpleNet(conv_op=student_code.CustomConv2d, num_classes=10).to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    with forbid_aten(*CONV_OPS, what="SimpleNet(conv_op=CustomConv2d)"):
        F.cross_entropy(model(x), torch.tensor([1, 2], device=device)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_custom_conv2d_constructor_like_nn_conv2d():
    mod = student_code.CustomConv2d(3, 4, (3, 3), stride=(2, 2), padding=(1, 1), bias=False, dtype=torch.float64)
    ref = nn.Conv2d(3, 4, (3, 3), stride=(2, 2), padding=(1, 1), bias=False, dtype=torch.float64)
    assert mod.weight.dtype == torch.float64 and mod.bias is None
    assert list(mod.state_dict()) == ["weight"]
    assert (mod.kernel_size, mod.stride, mod.padding) == (ref.kernel_size, ref.stride, ref.padding)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    reason = compare("output", mod(x).detach(), ref(x).detach(), torch.float64)
    assert reason is None, reason
    half = student_code.CustomConv2d(3, 4, 3).to(torch.float64)
    assert half.weight.dtype == torch.float64 and half.bias.dtype == torch.float64
    assert out_size(9, 3, 2, 1) == mod(x).shape[2]
