"""Hidden (staff-only) tests of the saliency part of 3a, `GradAttention`: the map against a plain autograd
computation (`oracles.manual_saliency`), float64 to 1e-12, for a mean- and a sum-reduced loss.

Run: python -m pytest tests/hidden/test_saliency_hidden.py
"""
import pytest
import torch.nn as nn

import student_code
from oracles import manual_saliency
from test_attack import assert_close_report, make_model, random_images, single_thread  # noqa: F401 (autouse)
from test_saliency import SHAPES


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", SHAPES)
def test_explain_matches_autograd(device, shape, reduction):
    model = make_model(seed=21, device=device)  # train mode: explain must run it in eval mode
    x = random_images(shape, seed=22, device=device)
    loss_fn = nn.CrossEntropyLoss(reduction=reduction)
    saliency = student_code.GradAttention(loss_fn).explain(model, x)
    assert saliency.shape == (shape[0], 1, shape[2], shape[3]), \
        f"saliency must be (N, 1, H, W) = {(shape[0], 1, shape[2], shape[3])}, got {tuple(saliency.shape)}"
    assert saliency.dtype == x.dtype and saliency.device == x.device, \
        f"saliency must have the input's dtype and device, got {saliency.dtype} {saliency.device}"
    assert_close_report(saliency, manual_saliency(model, x, loss_fn), 1e-12,
                        f"saliency vs autograd (loss reduction '{reduction}')")
