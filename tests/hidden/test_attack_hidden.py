"""Hidden (staff-only) tests of Part 3a, `PGDAttack` / `default_attack`: corner cases beyond the public set.

- the budget read from the attributes when `perturb` runs (the runner sets them after construction);
- `loss_fn` actually used (label smoothing, a margin loss), not a hard-coded cross-entropy;
- zero steps, zero budget, a batch of one, a channels-last input, repeated calls without hidden state;
- the seeded reference loop (`oracles.reference_pgd`, random start included) over the public budgets and
  shapes, float64 (1e-10) and float32 (at most 1% of the elements off by more than 1e-5);
- the torchattacks oracle on more shapes.
Unless stated, every comparison is float64 against `oracles.reference_pgd`, tolerance 1e-10.

Run: python -m pytest tests/hidden/test_attack_hidden.py
"""
import pytest
import torch
import torch.nn as nn

import student_code
from oracles import reference_pgd
from test_attack import BUDGETS, MODES, SHAPES, assert_close_report, assert_float32_attack_close, make_model, \
    random_images, random_pixels, single_thread, torchattacks_pgd  # noqa: F401 (single_thread: autouse fixture)


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


@pytest.mark.parametrize("shape", [(1, 3, 12, 20), (5, 3, 8, 8)], ids=["1x3x12x20", "5x3x8x8"])
@pytest.mark.parametrize("targeted", MODES)
def test_matches_torchattacks_more_shapes(device, shape, targeted):
    model = make_model(seed=52, device=device).eval()
    x0, labels, oracle = torchattacks_pgd(model, random_pixels(shape, 53, torch.float64, device), 7, 0.015, 0.08,
                                          targeted)
    adv = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=7, step_size=0.015, epsilon=0.08).perturb(
        model, x0, labels)
    assert_close_report(adv, oracle, 1e-9, "PGD vs torchattacks.PGD")


def attack_and_reference(model, x0, labels, budget, seed):
    """`(student's PGD, oracles.reference_pgd)` on the same input, each run right after seeding `seed`."""
    num_steps, step_size, epsilon, random_start = budget
    attack = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=num_steps, step_size=step_size,
                                    epsilon=epsilon, random_start=random_start)
    torch.manual_seed(seed)
    adv = attack.perturb(model, x0, labels)
    torch.manual_seed(seed)
    return adv, reference_pgd(model, x0, labels, num_steps, step_size, epsilon, random_start)


@pytest.mark.parametrize("targeted", MODES)
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("shape", SHAPES)
def test_pgd_matches_reference_float64(device, shape, budget, targeted):
    model = make_model(seed=1, device=device)
    x0 = random_images(shape, seed=2, device=device)
    adv, expected = attack_and_reference(model, x0, labels_for(targeted, shape[0], device), budget, seed=11)
    hint = " (random start: draw exactly input + torch.empty_like(input).uniform_(-epsilon, epsilon), " \
           "and nothing else from the RNG)" if budget[3] else ""
    assert_close_report(adv, expected, 1e-10, f"PGD ({'least-likely' if targeted else 'untargeted'}) "
                                             f"vs the reference loop, float64{hint}")


@pytest.mark.parametrize("targeted", MODES)
@pytest.mark.parametrize("budget", BUDGETS)
def test_pgd_matches_reference_float32(device, budget, targeted):
    model = make_model(seed=3, dtype=torch.float32, device=device)
    x0 = random_images((8, 3, 16, 16), seed=4, dtype=torch.float32, device=device)
    adv, expected = attack_and_reference(model, x0, labels_for(targeted, 8, device), budget, seed=12)
    assert_float32_attack_close(adv, expected, "PGD vs the reference loop, float32")
