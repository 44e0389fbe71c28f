"""Public tests of Part 3b (bonus), `adversarial_training_step` in `student_code.py`.

What one step must do, checked by its effects in float64 (1e-10), see `assert_step_contract`: the attacker
gets the first `round(adv_fraction * N)` samples and their labels, with the model in eval mode and nothing
changed yet (a spy attacker records what it was given); the returned output and loss are the train-mode
forward of the mixed batch and its cross-entropy; the BatchNorm statistics are updated by that forward
only; the gradients are those of this loss (zeroed first); an optimizer hook counts exactly one step; the
model is back in train mode. The grader also compares a whole step, parameters included, with its own.

Run: python -m pytest tests/test_adv_training.py
"""
import copy

import pytest
import torch
import torch.nn as nn

import student_code
from test_attack import assert_close_report, make_model, random_images, single_thread, \
    snapshot_model  # noqa: F401 (single_thread: autouse fixture)


class SpyAttacker:
    """Records every `perturb` call (the batch, the labels, every module's mode and the model state at that
    moment), runs one forward pass the way a naive attacker would (without switching modes itself: in train
    mode it would update the BatchNorm statistics), and returns a fixed function of its input."""

    def __init__(self):
        self.calls = []

    @staticmethod
    def shift(x):
        """The 'adversarial' examples: a deterministic, model-independent change of the input."""
        return x + 0.05 * torch.cos(37.0 * x)

    def perturb(self, model, input, target=None):
        self.calls.append({
            "input": input.detach().clone(),
            "target": None if target is None else target.detach().clone(),
            "modes": {name: m.training for name, m in model.named_modules()},
            "state": snapshot_model(model)["state"],
        })
        with torch.no_grad():
            model(input)
        return self.shift(input.detach())


def make_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


def run_step(model, x, y, attacker, adv_fraction, seed):
    """`student_code.adversarial_training_step` with an optimizer whose steps are counted."""
    optimizer = make_optimizer(model)
    steps = []
    optimizer.register_step_post_hook(lambda *args: steps.append(1))
    torch.manual_seed(seed)
    loss, output = student_code.adversarial_training_step(model, x, y, nn.CrossEntropyLoss(), optimizer,
                                                          attacker, adv_fraction=adv_fraction)
    assert len(steps) == 1, f"adversarial_training_step must call optimizer.step() exactly once, got {len(steps)}"
    return loss, output


def spy_case(device):
    """`(model, x (8, 3, 16, 16), y (8,))` with stale gradients in the model (they must not leak into a step)."""
    model = make_model(seed=31, device=device)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    return model, random_images((8, 3, 16, 16), seed=32, device=device), torch.arange(8, device=device) % 5


def assert_step_contract(before, model, x_mixed, y, loss, output, seed):
    """What one adversarial training step must leave behind, given a copy `before` of the model as it was
    and the mixed batch `x_mixed (N, 3, H, W)` the step should have trained on (adversarial part first):

    - `(loss, output)`: a finite scalar and `(N, num_classes)`, detached; `output` is the model's train-mode
      forward of the mixed batch (RNG seeded to `seed` just before the step: Dropout) and `loss` is the
      cross-entropy of `output` against `y`;
    - the BatchNorm statistics were updated by that one forward only (not while crafting);
    - every `.grad` holds the gradient of that loss (fresh, not added to stale gradients);
    - the parameters moved (the optimizer stepped; `run_step` counts exactly one step);
    - every module is back in train mode."""
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss), \
        f"loss must be a finite scalar tensor, got {loss!r}"
    assert not loss.requires_grad and not output.requires_grad, "return (loss, output) detached"
    probe = copy.deepcopy(before).train()
    torch.manual_seed(seed)
    expected_output = probe(x_mixed)  # (N, num_classes): one train-mode forward of the mixed batch
    assert output.shape == expected_output.shape, \
        f"output must be (N, num_classes) {tuple(expected_output.shape)}, got {tuple(output.shape)}"
    assert_close_report(output, expected_output.detach(), 1e-10,
                        "output vs the model's train-mode forward of the mixed batch (adversarial part first)")
    assert_close_report(loss, nn.functional.cross_entropy(output, y), 1e-10,
                        "loss vs cross-entropy of the returned output")
    grads = torch.autograd.grad(nn.functional.cross_entropy(expected_output, y), list(probe.parameters()))
    for (name, p), g in zip(model.named_parameters(), grads):
        assert p.grad is not None, f"'{name}'.grad is None after the step: zero the gradients before backward"
        assert_close_report(p.grad, g, 1e-10, f"'{name}'.grad after the step (the gradient of this step's loss "
                                              f"only: zero the gradients before backward)")
    buffers = dict(probe.named_buffers())
    for name, value in model.named_buffers():
        assert_close_report(value, buffers[name], 1e-10, f"BatchNorm buffer '{name}' after the step (only the "
                                                         f"training forward may update it: craft in eval mode)")
    moved = [n for (n, p), q in zip(model.named_parameters(), before.parameters()) if not torch.equal(p, q)]
    assert moved, "no parameter changed: the step must call optimizer.step() after backward"
    assert all(m.training for m in model.modules()), "the model must be back in train mode after the step"


@pytest.mark.parametrize("adv_fraction, n_adv", [(1.0, 8), (0.5, 4), (0.0, 0)])
def test_step_with_spy_attacker(device, adv_fraction, n_adv):
    model, x, y = spy_case(device)
    before = copy.deepcopy(model)
    spy = SpyAttacker()
    state_before = snapshot_model(model)["state"]
    loss, output = run_step(model, x, y, spy, adv_fraction, seed=33)

    if n_adv == 0:
        assert not spy.calls, "adv_fraction=0.0 must not call the attacker (a plain training step)"
    else:
        assert len(spy.calls) == 1, f"the attacker must be called once per step, got {len(spy.calls)} calls"
        call = spy.calls[0]
        assert call["input"].shape[0] == n_adv and torch.equal(call["input"], x[:n_adv]), \
            f"the attacker must get the first round(adv_fraction * N) = {n_adv} samples input[:{n_adv}], got " \
            f"{call['input'].shape[0]} samples"
        assert call["target"] is not None and torch.equal(call["target"], y[:n_adv]), \
            f"the attacker must get the labels target[:{n_adv}] (untargeted attack on the true labels)"
        in_train = [name or "model" for name, mode in call["modes"].items() if mode]
        assert not in_train, f"craft the adversarial examples with the model in eval mode; in train mode: {in_train}"
        for key, value in state_before.items():
            assert torch.equal(call["state"][key], value), f"'{key}' changed before the attacker was called"
    x_mixed = torch.cat([SpyAttacker.shift(x[:n_adv]), x[n_adv:]], dim=0)  # (8, 3, 16, 16)
    assert_step_contract(before, model, x_mixed, y, loss, output, seed=33)


def test_step_with_pgd(device):
    """With the real attack: the adversarial part of the batch must be PGD examples (inside the epsilon
    ball, different from the clean images), and the step contract holds for the batch they form."""
    model = make_model(seed=34, device=device)
    x = random_images((6, 3, 16, 16), seed=35, device=device)
    y = torch.tensor([0, 1, 2, 3, 4, 0], device=device)
    before = copy.deepcopy(model)
    attacker = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=3, step_size=0.02, epsilon=0.05)
    adv = attacker.perturb(before, x, y)  # PGD without random start draws nothing from the RNG
    loss, output = run_step(model, x, y, attacker, 1.0, seed=36)
    assert (adv - x).abs().max().item() > 0.01, "test set-up: PGD should move the images"
    assert_step_contract(before, model, adv, y, loss, output, seed=36)
    assert model.bn1.num_batches_tracked.item() == 8, \
        f"num_batches_tracked must rise by exactly 1 (7 -> 8), got {model.bn1.num_batches_tracked.item()}"
