"""Public tests of the saliency part of 3a: `GradAttention`, `default_attention`, `default_visfunction`.

`GradAttention(loss_fn).explain(model, input)` is `|d loss_fn(model(x), argmax model(x)) / dx|`, max over
the colour channels, `(N, 1, H, W)`, with the model in eval mode. It must equal, to 1e-12 in float64,
captum's `Saliency` (in requirements.txt; skipped, visibly, without it) for a sum- and a mean-reduced loss,
see `test_explain_matches_captum`; the grader also compares it with a plain autograd computation. The model must be left as found and
the output detached. `default_visfunction` must return a `(3, H', W')` float image grid in [0, 1].

Run: python -m pytest tests/test_saliency.py
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import student_code
from test_attack import assert_close_report, assert_model_unchanged, denormalize, make_model, random_images, \
    single_thread, snapshot_model  # noqa: F401 (single_thread: autouse fixture)

SHAPES = [pytest.param((5, 3, 16, 16), id="5x3x16x16"), pytest.param((2, 3, 12, 20), id="2x3x12x20"),
          pytest.param((1, 3, 8, 8), id="1x3x8x8")]


def test_default_attention():
    loss_fn = nn.CrossEntropyLoss()
    attention = student_code.default_attention(loss_fn)
    assert isinstance(attention, student_code.GradAttention), "default_attention must return a GradAttention"
    assert attention.loss_fn is loss_fn, "default_attention must keep the given loss_fn"


@pytest.mark.parametrize("shape", SHAPES)
def test_explain_matches_captum(device, shape):
    """captum's `Saliency(f).attribute(x, target=t, abs=True)` is `|d sum_i f(x)[i, t_i] / dx|` (per input
    element). With `f = log_softmax(model(x))` and `t` = the predicted labels, `f(x)[i, t_i] = -CE_i`, the
    per-sample cross-entropy against the prediction; each sample's output depends only on its own image
    (eval mode), so captum's map is `|d CE_i / dx_i|`, exactly our map for `CrossEntropyLoss(reduction='sum')`
    once reduced by the max over channels, and N times our map for the default mean reduction."""
    captum_attr = pytest.importorskip("captum.attr", reason="pip install captum (requirements.txt): the "
                                                            "saliency oracle")
    model = make_model(seed=23, device=device)  # train mode: explain must run it in eval mode
    x = random_images(shape, seed=24, device=device)
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        pred = reference(x).argmax(dim=1)
    oracle = captum_attr.Saliency(lambda inp: F.log_softmax(reference(inp), dim=1)).attribute(
        x.clone().requires_grad_(True), target=pred, abs=True).amax(dim=1, keepdim=True)  # (N, 1, H, W)
    summed = student_code.GradAttention(nn.CrossEntropyLoss(reduction="sum")).explain(model, x)
    assert summed.shape == (shape[0], 1, shape[2], shape[3]), \
        f"saliency must be (N, 1, H, W) = {(shape[0], 1, shape[2], shape[3])}, got {tuple(summed.shape)}"
    assert summed.dtype == x.dtype and summed.device == x.device, \
        f"saliency must have the input's dtype and device, got {summed.dtype} {summed.device}"
    assert_close_report(summed, oracle, 1e-12, "saliency (sum-reduced CE) vs captum Saliency")
    mean = student_code.GradAttention(nn.CrossEntropyLoss()).explain(model, x)
    assert_close_report(mean * x.shape[0], oracle, 1e-12, "N * saliency (mean-reduced CE) vs captum Saliency")


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_explain_leaves_model_and_input_as_found(device, mode):
    model = make_model(seed=25, dtype=torch.float32, device=device)
    if mode == "eval":
        model.eval()
    elif mode == "mixed":
        model.bn1.eval()
    model.conv2.weight.grad = torch.randn_like(model.conv2.weight)
    model.fc.weight.requires_grad_(False)
    before = snapshot_model(model)
    x = random_images((3, 3, 16, 16), seed=26, dtype=torch.float32, device=device).requires_grad_(True)
    kept = x.detach().clone()
    saliency = student_code.GradAttention(nn.CrossEntropyLoss()).explain(model, x)
    assert_model_unchanged(model, before, what="explain")
    assert torch.equal(x.detach(), kept) and x.grad is None, "explain modified its input or its .grad"
    assert not saliency.requires_grad and saliency.grad_fn is None, "the saliency map must be detached"
    assert (saliency >= 0).all() and saliency.max() > 0, "a saliency map is |gradient|: >= 0 and not all 0"


@pytest.mark.part("given")  # default_visfunction is given code: no rubric item (points_plugin)
@pytest.mark.parametrize("n, nrow", [(5, 8), (6, 4), (1, 8)])
@pytest.mark.parametrize("with_map", [False, True], ids=["images", "saliency"])
def test_visfunction_grid(n, nrow, with_map):
    from torchvision.utils import make_grid

    h, w = 16, 12
    x = random_images((n, 3, h, w), seed=27, dtype=torch.float32)
    kept = x.clone()
    maps = torch.rand(n, 1, h, w) if with_map else None
    grid = student_code.default_visfunction(x, maps, nrow=nrow)
    cols = min(n, nrow)
    rows = (n + cols - 1) // cols
    expected_shape = (3, h, w) if n == 1 else (3, rows * (h + 2) + 2, cols * (w + 2) + 2)
    assert isinstance(grid, torch.Tensor) and grid.dtype == torch.float32 and tuple(grid.shape) == expected_shape, \
        f"expected a float32 (3, H', W') = {expected_shape} grid, got {getattr(grid, 'dtype', type(grid))} " \
        f"{tuple(getattr(grid, 'shape', ()))}"
    assert grid.min() >= 0 and grid.max() <= 1, f"grid values must lie in [0, 1]: [{grid.min()}, {grid.max()}]"
    assert torch.equal(x, kept), "default_visfunction modified its input"
    plain = make_grid(denormalize(x).clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    if with_map:
        assert (grid - plain).abs().max() > 0.05, "the saliency overlay is missing"
    else:
        assert_close_report(grid, plain, 1e-6, "grid of denormalized images")
