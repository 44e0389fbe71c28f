"""Public tests of Part 1a: `CustomConv2DFunction` / `custom_conv2d` and the `CustomConv2d` module.

Your convolution is compared with PyTorch's own: the output with `F.conv2d`, the input and weight gradients
with `torch.nn.grad.conv2d_input` / `conv2d_weight`, the bias gradient with the sum of the upstream
gradient. The grid covers kernel sizes 1..7, strides 1..3, paddings 0..3, with and without bias, one and
several samples, one input channel and non-square odd image sizes, in float64 (tolerance 1e-10) and float32
(tolerance 1e-4 times the size of the reference values); float64 `gradcheck` runs on a subset. A failing
case names its configuration and the largest difference. Also checked: no convolution routine runs (the
operators that actually reach PyTorch's dispatcher are watched, so aliases do not help), the output is a
fresh tensor that a following in-place ReLU may overwrite, the custom backward is the one that runs, and
`CustomConv2d` is a drop-in for `nn.Conv2d`.

Run: python -m pytest tests/test_conv.py
"""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from forbidden import CONV_OPS, ForbiddenCallError, forbid_aten

# atol = ATOL[dtype] * max(1, max |reference|), rtol = RTOL[dtype]
ATOL = {torch.float64: 1e-10, torch.float32: 1e-4}
RTOL = {torch.float64: 1e-8, torch.float32: 1e-4}

# (N, C_in, C_out, H, W): one sample with one input channel, several samples, non-square odd sizes
SHAPES = [(1, 1, 3, 9, 7), (3, 2, 4, 11, 8), (2, 3, 1, 5, 13)]
STRIDES = (1, 2, 3)
PADDINGS = (0, 1, 2, 3)
DTYPES = [pytest.param(torch.float64, id="float64"), pytest.param(torch.float32, id="float32")]


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """The tensors here are small: one intra-op CPU thread is faster than several, and does not slow to a
    crawl when other processes share the cores (threads waiting for each other)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def out_size(size, k, stride, padding):
    """`H_out = (H + 2 * padding - K) // stride + 1` (may be <= 0 when the kernel does not fit)."""
    return (size + 2 * padding - k) // stride + 1


def make_case(n, c_in, c_out, h, w, k, with_bias, device, dtype, seed=0):
    """Random `(x, weight, bias)` that all require gradients (`bias` is `None` when `with_bias` is false)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g, dtype=dtype).to(device).requires_grad_()
    weight = torch.randn(c_out, c_in, k, k, generator=g, dtype=dtype).to(device).requires_grad_()
    bias = torch.randn(c_out, generator=g, dtype=dtype).to(device).requires_grad_() if with_bias else None
    return x, weight, bias


def torch_conv(x, weight, bias, stride, padding, grad_output):
    """PyTorch's output and gradients `(out, grad_x, grad_w, grad_b or None)`."""
    with torch.no_grad():
        out = F.conv2d(x, weight, bias, stride, padding)
        grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_output, stride, padding)
        grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad_output, stride, padding)
        grad_b = grad_output.sum(dim=(0, 2, 3)) if bias is not None else None
    return out, grad_x, grad_w, grad_b


def student_conv(x, weight, bias, stride, padding, grad_output):
    """`custom_conv2d`'s output and gradients `(out, grad_x, grad_w, grad_b or None)`."""
    out = student_code.custom_conv2d(x, weight, bias, stride, padding)
    inputs = [x, weight] + ([bias] if bias is not None else [])
    grads = torch.autograd.grad(out, inputs, grad_output, allow_unused=True)
    return (out.detach(),) + tuple(grads) + ((None,) if bias is None else ())


def compare(name, actual, expected, dtype):
    """`None` when `actual` matches `expected` within the tolerance of `dtype`, else a one-line reason with the
    largest difference."""
    if actual is None:
        return f"{name} is None"
    if not isinstance(actual, torch.Tensor):
        return f"{name} is a {type(actual).__name__}, not a tensor"
    if actual.shape != expected.shape:
        return f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"{name} has dtype {actual.dtype}, expected {expected.dtype}"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    diff = (actual - expected).abs()
    max_diff = diff.max().item() if diff.numel() else 0.0
    tol = ATOL[dtype] * scale + RTOL[dtype] * expected.abs()
    if not bool((diff <= tol).all()):
        return f"{name}: max |diff| {max_diff:.3g} (reference values up to {scale:.3g}, atol {ATOL[dtype] * scale:.3g})"
    return None


def check_config(n, c_in, c_out, h, w, k, stride, padding, with_bias, device, dtype):
    """List of failure messages for one configuration (empty when everything matches)."""
    x, weight, bias = make_case(n, c_in, c_out, h, w, k, with_bias, device, dtype)
    grad_output = torch.randn(n, c_out, out_size(h, k, stride, padding), out_size(w, k, stride, padding),
                              dtype=dtype, device=device)
    expected = torch_conv(x, weight, bias, stride, padding, grad_output)
    try:
        actual = student_conv(x, weight, bias, stride, padding, grad_output)
    except Exception as exc:  # report the configuration, not just the traceback
        return [f"raised {type(exc).__name__}: {exc}"]
    problems = []
    for name, a, e in zip(("output", "grad_input", "grad_weight", "grad_bias"), actual, expected):
        if e is None:
            if a is not None:
                problems.append(f"{name} should be None for bias=None")
            continue
        reason = compare(name, a, e, dtype)
        if reason:
            problems.append(reason)
    return problems


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", range(1, 8), ids=lambda k: f"K{k}")
def test_conv_matches_pytorch_over_grid(device, dtype, k):
    """Output and all three gradients against PyTorch for every stride, padding, bias and shape of the grid."""
    failures = []
    n_run = 0
    for (n, c_in, c_out, h, w), stride, padding, with_bias in itertools.product(SHAPES, STRIDES, PADDINGS,
                                                                                  (True, False)):
        if out_size(h, k, stride, padding) <= 0 or out_size(w, k, stride, padding) <= 0:
            continue  # the kernel does not fit: no output
        n_run += 1
        for problem in check_config(n, c_in, c_out, h, w, k, stride, padding, with_bias, device, dtype):
            failures.append(f"K={k} stride={stride} padding={padding} bias={with_bias} "
                            f"input=({n}, {c_in}, {h}, {w}) C_out={c_out}: {problem}")
    assert n_run > 0
    if failures:
        pytest.fail(f"{len(failures)} problem(s) in {n_run} configurations, first ones:\n  "
                    + "\n  ".join(failures[:8]), pytrace=False)


# (N, C_in, C_out, H, W, K, stride, padding, bias): a cheap subset for finite differences
GRADCHECK_CASES = [
    (2, 2, 3, 5, 6, 3, 1, 1, True),
    (1, 1, 2, 6, 5, 2, 2, 0, False),
    (2, 3, 2, 4, 4, 1, 1, 0, True),
    (1, 2, 2, 5, 7, 1, 2, 1, True),
    (2, 1, 2, 7, 6, 4, 3, 2, False),
    (1, 2, 1, 3, 4, 5, 1, 3, True),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES,
                         ids=[f"N{c[0]}-Cin{c[1]}-Cout{c[2]}-{c[3]}x{c[4]}-K{c[5]}-s{c[6]}-p{c[7]}-bias{c[8]}"
                              for c in GRADCHECK_CASES])
def test_conv_gradcheck_float64(device, case):
    n, c_in, c_out, h, w, k, stride, padding, with_bias = case
    x, weight, bias = make_case(n, c_in, c_out, h, w, k, with_bias, device, torch.float64, seed=1)
    assert torch.autograd.gradcheck(
        lambda a, b, c: student_code.custom_conv2d(a, b, c, stride, padding), (x, weight, bias),
        eps=1e-6, atol=1e-7, rtol=1e-5), "gradcheck failed"


def test_conv_backward_from_sum(device):
    """`y.sum().backward()` hands backward an expanded (non-contiguous) `grad_output`: use `reshape`, not
    `view`, on it."""
    x, weight, bias = make_case(2, 3, 4, 7, 6, 3, True, device, torch.float64)
    student_code.custom_conv2d(x, weight, bias, 2, 1).sum().backward()
    got = (x.grad, weight.grad, bias.grad)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    F.conv2d(x2, w2, b2, 2, 1).sum().backward()
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), got, (x2.grad, w2.grad, b2.grad)):
        reason = compare(name, a, e, torch.float64)
        assert reason is None, reason


def test_conv_calls_no_convolution_routine(device):
    """Forward and backward run without any convolution operator (F.conv2d, torch.conv2d, torch.nn.grad,
    transposed convolutions, aten::convolution, ...), whatever name it is reached under."""
    for k, stride, padding, with_bias in ((3, 1, 1, True), (1, 1, 0, False), (1, 2, 0, True), (7, 2, 3, False)):
        x, weight, bias = make_case(2, 3, 4, 12, 9, k, with_bias, device, torch.float32)
        with forbid_aten(*CONV_OPS, what="custom_conv2d"):
            out = student_code.custom_conv2d(x, weight, bias, stride, padding)
            out.backward(torch.randn_like(out))
        assert x.grad is not None and weight.grad is not None


_sneaky_conv = F.conv2d  # an alias made at import time: the spy still sees the operator that runs


class _CheatingForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        return _sneaky_conv(x, weight, bias, stride, padding)


class _CheatingBackward(torch.autograd.Function):
    """Allowed forward (unfold and a matrix product), forbidden backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding)
        n, _, h, w = x.shape
        k = weight.shape[-1]
        cols = F.unfold(x, k, padding=padding, stride=stride)  # (N, C_in*K*K, L)
        out = weight.reshape(weight.shape[0], -1) @ cols  # (N, C_out, L)
        return out.reshape(n, -1, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.conf
        grad_w = torch.nn.grad.conv2d_weight(x, weight.shape, grad_output, stride, padding)
        return None, grad_w, None, None, None


@pytest.mark.part("given")  # checks the checker, not your code
def test_forbidden_call_detector_catches_aliases():
    """The detector used above is not fooled by an alias, nor by a forbidden call that only happens in
    backward; its message says which operator ran."""
    x = torch.randn(1, 2, 6, 6)
    weight = torch.randn(3, 2, 3, 3, requires_grad=True)
    with pytest.raises(ForbiddenCallError, match=r"forbidden operator .*conv.* was called inside cheat"):
        with forbid_aten(*CONV_OPS, what="cheat"):
            _CheatingForward.apply(x, weight, None, 1, 1)
    with pytest.raises(ForbiddenCallError, match=r"forbidden operator .*conv"):
        with forbid_aten(*CONV_OPS, what="cheat"):
            _CheatingBackward.apply(x, weight, None, 1, 1).sum().backward()


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (1, 1, 0), (1, 2, 0), (2, 2, 0)],
                         ids=["K3-s1-p1", "K1-s1-p0", "K1-s2-p0", "K2-s2-p0"])
def test_output_is_fresh_and_inplace_relu_works(device, k, stride, padding):
    """The output is a new tensor (not a view, not sharing the input's memory): an in-place ReLU right after
    the convolution, as in `SimpleNet`, must work and give the right gradients."""
    x, weight, bias = make_case(2, 3, 4, 8, 8, k, True, device, torch.float64)
    out = student_code.custom_conv2d(x, weight, bias, stride, padding)
    assert not out._is_view(), "custom_conv2d returned a view: return a fresh tensor (e.g. write with out=)"
    assert out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr(), "the output shares the input's memory"
    assert type(out.grad_fn).__name__ == "CustomConv2DFunctionBackward", \
        f"the output's grad_fn is {type(out.grad_fn).__name__}: custom_conv2d must be CustomConv2DFunction.apply"
    grad_output = torch.randn_like(out)
    torch.relu_(out).backward(grad_output)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    torch.relu_(F.conv2d(x2, w2, b2, stride, padding)).backward(grad_output)
    for name, a, e in zip(("grad_input", "grad_weight", "grad_bias"), (x.grad, weight.grad, bias.grad),
                          (x2.grad, w2.grad, b2.grad)):
        reason = compare(name, a, e, torch.float64)
        assert reason is None, f"after an in-place ReLU: {reason}"


def test_custom_backward_is_used(monkeypatch):
    """`custom_conv2d` is `CustomConv2DFunction.apply` and gradients come from its `backward`."""
    calls = []
    original = student_code.CustomConv2DFunction.backward

    def counting_backward(ctx, grad_output):
        calls.append(tuple(grad_output.shape))
        return original(ctx, grad_output)

    monkeypatch.setattr(student_code.CustomConv2DFunction, "backward", staticmethod(counting_backward))
    x, weight, bias = make_case(2, 3, 4, 6, 6, 3, True, "cpu", torch.float64)
    student_code.custom_conv2d(x, weight, bias, 1, 1).sum().backward()
    assert calls == [(2, 4, 6, 6)], f"CustomConv2DFunction.backward ran {len(calls)} times, expected once"


# (in, out, kernel_size, stride, padding, bias)
MODULE_CASES = [(3, 8, 3, 1, 1, True), (4, 6, 1, 2, 0, False), (2, 5, 7, 2, 3, True), (1, 2, 2, 1, 0, True)]


@pytest.mark.parametrize("case", MODULE_CASES, ids=[f"{c[0]}to{c[1]}-K{c[2]}-s{c[3]}-p{c[4]}-bias{c[5]}"
                                                    for c in MODULE_CASES])
def test_custom_conv2d_module_is_a_drop_in_for_nn_conv2d(device, case):
    c_in, c_out, k, stride, padding, with_bias = case
    torch.manual_seed(3)
    ref = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=with_bias)
    torch.manual_seed(3)
    mod = student_code.CustomConv2d(c_in, c_out, k, stride=stride, padding=padding, bias=with_bias)
    # same attributes, state_dict keys, shapes and (same seed) the same initial values as nn.Conv2d
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding"):
        assert getattr(mod, attr) == getattr(ref, attr), f"CustomConv2d.{attr}"
    ref_state, mod_state = ref.state_dict(), mod.state_dict()
    assert list(mod_state) == list(ref_state), "state_dict keys differ from nn.Conv2d's"
    for key in ref_state:
        assert mod_state[key].shape == ref_state[key].shape, f"{key} shape"
        assert torch.equal(mod_state[key], ref_state[key]), f"{key}: initialization differs from nn.Conv2d's"
    # nn.Conv2d weights load into CustomConv2d and give the same outputs
    ref.reset_parameters()
    mod.load_state_dict(ref.state_dict())
    ref, mod = ref.to(device), mod.to(device)
    x = torch.randn(2, c_in, 9, 10, device=device)
    out = mod(x)
    assert type(out.grad_fn).__name__ == "CustomConv2DFunctionBackward", "CustomConv2d does not use custom_conv2d"
    reason = compare("CustomConv2d output", out.detach(), ref(x).detach(), torch.float32)
    assert reason is None, reason


@pytest.mark.part("given")  # CustomConv2d's constructor is given
def test_custom_conv2d_init_distribution():
    """Kaiming-uniform weights with bound 1/sqrt(fan_in) (a=sqrt(5)) and bias in [-1/sqrt(fan_in), 1/sqrt(fan_in)],
    as nn.Conv2d, checked on fresh draws (not the same seed)."""
    mod = student_code.CustomConv2d(16, 64, 3)
    bound = 1.0 / (16 * 9) ** 0.5
    for name, p in (("weight", mod.weight), ("bias", mod.bias)):
        assert p.abs().max().item() <= bound, f"{name} exceeds the bound {bound:.4f}"
        assert p.abs().max().item() > 0.9 * bound, f"{name} does not fill [-{bound:.4f}, {bound:.4f}]"
        assert abs(p.mean().item()) < 0.1 * bound, f"{name} is not centred"
