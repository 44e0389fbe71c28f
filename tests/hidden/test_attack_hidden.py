"""Hidden (staff-only) tests of Part 3a, `PGDAttack` / `default_attack`: corner cases beyond the public set.

- the budget read from the attributes when `perturb` runs (the runner sets them after construction);
- `loss_fn` actually used (label smoothing, a margin loss), not a hard-coded cross-entropy;
- zero steps, zero budget, a batch of one, a channels-last input, repeated calls without hidden state;
- the random start: used (two seeds differ), reproducible (same seed), inside the ball and the range;
- the torchattacks oracle on more shapes.
Every comparison is float64 against `reference_pgd` of the public tests, tolerance 1e-10.

Run: python -m pytest tests/hidden/test_attack_hidden.py
"""
import pytest
import torch
import torch.nn as nn

import student_code
from test_attack import PixelSpace, assert_close_report, channel_stats, make_model, normalize, pixel_bounds, \
    random_images, reference_pgd, single_thread  # noqa: F401 (single_thread: autouse fixture)

MODES = [pytest.param(True, id="least-likely"), pytest.param(False, id="untargeted")]


def labels_for(targeted, n, device):
    return None if targeted else torch.arange(n, device=device) % 5


@pytest.mark.parametrize("targeted", MODES)
def test_budget_read_at_perturb_time(device, targeted):
    model = make_model(seed=41, device=device)
    x0 = random_images((4, 3, 16, 16), seed=42, device=device)
    attack = student_code.default_attack(nn.CrossEntropyLoss())
    attack.num_steps, attack.step_size, attack.epsilon, attack.random_start = 3, 0.03, 0.06, True
    labels = labels_for(targeted, 4, device)
    torch.manual_seed(5)
    adv = attack.perturb(model, x0, labels)
    torch.manual_seed(5)
    expected = reference_pgd(model, x0, labels, 3, 0.03, 0.06, True)
    assert_close_report(adv, expected, 1e-10, "PGD after changing num_steps/step_size/epsilon/random_start "
                                              "on the object (read them in perturb, not in __init__)")


@pytest.mark.parametrize("targeted", MODES)
@pytest.mark.parametrize("loss_fn", [nn.CrossEntropyLoss(label_smoothing=0.4), nn.MultiMarginLoss(),
                                     nn.CrossEntropyLoss(reduction="sum")], ids=["smoothing", "margin", "sum"])
def test_uses_the_given_loss(device, loss_fn, targeted):
    model = make_model(seed=43, device=device)
    x0 = random_images((6, 3, 16, 16), seed=44, device=device)
    labels = labels_for(targeted, 6, device)
    adv = student_code.PGDAttack(loss_fn, num_steps=4, step_size=0.02, epsilon=0.05).perturb(model, x0, labels)
    expected = reference_pgd(model, x0, labels, 4, 0.02, 0.05, loss_fn=loss_fn)
    assert_close_report(adv, expected, 1e-10, f"PGD with loss_fn={loss_fn}")


@pytest.mark.parametrize("targeted", MODES)
def test_zero_steps_and_zero_budget(device, targeted):
    model = make_model(seed=45, device=device)
    x0 = random_images((3, 3, 16, 16), seed=46, device=device)
    labels = labels_for(targeted, 3, device)
    adv = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=0).perturb(model, x0, labels)
    assert torch.equal(adv, x0), "num_steps=0 without random start must return the input unchanged"
    adv = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=5, step_size=0.05, epsilon=0.0,
                                 random_start=True).perturb(model, x0, labels)
    assert_close_report(adv, x0, 0.0, "epsilon=0 must return the input")
    torch.manual_seed(3)
    adv = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=0, epsilon=0.1,
                                 random_start=True).perturb(model, x0, labels)
    torch.manual_seed(3)
    expected = reference_pgd(model, x0, labels, 0, 0.01, 0.1, True)
    assert_close_report(adv, expected, 1e-10, "num_steps=0 with random start (the projected random start)")


@pytest.mark.parametrize("targeted", MODES)
def test_batch_of_one_and_channels_last(device, targeted):
    model = make_model(seed=47, device=device)
    attack = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=5, step_size=0.02, epsilon=0.07)
    x1 = random_images((1, 3, 9, 13), seed=48, device=device)
    labels = labels_for(targeted, 1, device)
    assert_close_report(attack.perturb(model, x1, labels), reference_pgd(model, x1, labels, 5, 0.02, 0.07),
                        1e-10, "PGD on a batch of one 9x13 image")
    x = random_images((4, 3, 16, 16), seed=49, device=device).contiguous(memory_format=torch.channels_last)
    labels = labels_for(targeted, 4, device)
    adv = attack.perturb(model, x, labels)
    assert adv.shape == x.shape, f"shape {tuple(adv.shape)} != {tuple(x.shape)}"
    assert_close_report(adv, reference_pgd(model, x.contiguous(), labels, 5, 0.02, 0.07), 1e-10,
                        "PGD on a channels-last input")
    again = attack.perturb(model, x, labels)
    assert torch.equal(adv, again), "two identical calls must give the same result (no state kept between calls)"


def test_random_start_is_random_reproducible_and_projected(device):
    model = make_model(seed=50, dtype=torch.float32, device=device)
    x0 = random_images((4, 3, 16, 16), seed=51, dtype=torch.float32, device=device)
    x0[0] = normalize(torch.zeros(1, 3, 16, 16, device=device))[0]
    attack = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=0, step_size=0.01, epsilon=0.1,
                                    random_start=True)
    torch.manual_seed(1)
    a = attack.perturb(model, x0)
    torch.manual_seed(1)
    b = attack.perturb(model, x0)
    torch.manual_seed(2)
    c = attack.perturb(model, x0)
    assert torch.equal(a, b), "with the same seed the random start must be the same"
    assert not torch.equal(a, c), "random_start=True must start at a random point (different seeds gave the same)"
    low, high = pixel_bounds(torch.float32, device)
    dist = (a - x0).abs().max().item()
    assert dist <= 0.1 + 1e-6 and dist > 0.09, f"random start {dist:.4g} from the input: expected uniform in the " \
                                               f"epsilon=0.1 ball"
    assert (a >= low - 1e-6).all() and (a <= high + 1e-6).all(), "the random start must be projected to the range"
    spread = (a[1:] - x0[1:]).std().item()
    assert abs(spread - 0.1 / 3 ** 0.5) < 0.01, f"the random start should be uniform in [-eps, eps]: std " \
                                                f"{spread:.4f}, expected {0.1 / 3 ** 0.5:.4f}"


@pytest.mark.parametrize("shape", [(1, 3, 12, 20), (5, 3, 8, 8)], ids=["1x3x12x20", "5x3x8x8"])
def test_matches_torchattacks_more_shapes(device, shape):
    torchattacks = pytest.importorskip("torchattacks")
    model = make_model(seed=52, device=device).eval()
    mean, std = channel_stats(torch.float64, device)
    pixels = (torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(53)).double() / 255).to(device)
    labels = torch.arange(shape[0], device=device) % 5
    pgd = torchattacks.PGD(PixelSpace(model, mean, std), eps=0.08 * std, alpha=0.015 * std, steps=7,
                           random_start=False)
    oracle = normalize(pgd(pixels, labels))
    adv = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=7, step_size=0.015, epsilon=0.08).perturb(
        model, normalize(pixels), labels)
    assert_close_report(adv, oracle, 1e-9, "PGD vs torchattacks.PGD (untargeted)")
