"""Public tests of Part 3b (bonus), `adversarial_training_step` in `student_code.py`.

A step is compared, in float64 to 1e-10, with the same step written out here (`manual_step`): craft the
adversarial part of the batch, forward the mixed batch in train mode, cross-entropy, zero the gradients,
backward, one SGD step (momentum and weight decay). Compared: the returned loss and output, every
parameter and buffer afterwards (so the BatchNorm statistics must have been updated by the final training
forward only, not while crafting). A spy attacker records what it was given and checks the model is in
eval mode while it crafts; an optimizer hook counts the steps (exactly one).

Run: python -m pytest tests/test_adv_training.py
"""
import copy

import pytest
import torch
import torch.nn as nn

import student_code
from test_attack import assert_close_report, make_model, random_images, reference_pgd, single_thread, \
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


def manual_step(model, x, y, n_adv, craft, seed):
    """The reference step on a deep copy of `model`; returns `(copy, loss, output)`. `craft(model_copy,
    x[:n_adv], y[:n_adv])` gives the adversarial part; the training forward runs with the RNG seeded to
    `seed` (Dropout)."""
    model = copy.deepcopy(model)
    optimizer = make_optimizer(model)
    if n_adv > 0:
        x = torch.cat([craft(model, x[:n_adv], y[:n_adv]), x[n_adv:]], dim=0)  # (N, 3, H, W)
    model.train()
    torch.manual_seed(seed)
    output = model(x)
    loss = nn.functional.cross_entropy(output, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return model, loss.detach(), output.detach()


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


def assert_same_training(model, loss, output, expected):
    """Compare a stepped model and its `(loss, output)` with `manual_step`'s result."""
    ref_model, ref_loss, ref_output = expected
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss), \
        f"loss must be a finite scalar tensor, got {loss!r}"
    assert not loss.requires_grad and not output.requires_grad, "return (loss, output) detached"
    assert output.shape == ref_output.shape, f"output must be (N, num_classes) {tuple(ref_output.shape)}, " \
                                             f"got {tuple(output.shape)}"
    assert_close_report(output, ref_output, 1e-10, "output of the training forward (on the mixed batch)")
    assert_close_report(loss, ref_loss, 1e-10, "loss")
    ref_state = ref_model.state_dict()
    for key, value in model.state_dict().items():
        hint = " (BatchNorm statistics: only the final training forward may update them; craft in eval " \
               "mode)" if "running" in key or "num_batches" in key else ""
        assert_close_report(value, ref_state[key], 1e-10, f"'{key}' after the step{hint}")
    assert all(m.training for m in model.modules()), "the model must be back in train mode after the step"


@pytest.mark.parametrize("adv_fraction, n_adv", [(1.0, 8), (0.5, 4), (0.0, 0)])
def test_step_with_spy_attacker(device, adv_fraction, n_adv):
    model = make_model(seed=31, device=device)
    x = random_images((8, 3, 16, 16), seed=32, device=device)
    y = torch.arange(8, device=device) % 5
    for p in model.parameters():  # stale gradients must not leak into the step
        p.grad = torch.full_like(p, 3.0)
    expected = manual_step(model, x, y, n_adv, lambda m, xa, ya: SpyAttacker.shift(xa), seed=33)
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
    assert_same_training(model, loss, output, expected)


def test_step_with_pgd(device):
    model = make_model(seed=34, device=device)
    x = random_images((6, 3, 16, 16), seed=35, device=device)
    y = torch.tensor([0, 1, 2, 3, 4, 0], device=device)
    attacker = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=3, step_size=0.02, epsilon=0.05)
    expected = manual_step(model, x, y, 6, lambda m, xa, ya: reference_pgd(m, xa, ya, 3, 0.02, 0.05), seed=36)
    loss, output = run_step(model, x, y, attacker, 1.0, seed=36)
    assert_same_training(model, loss, output, expected)
    assert model.bn1.num_batches_tracked.item() == 8, \
        f"num_batches_tracked must rise by exactly 1 (7 -> 8), got {model.bn1.num_batches_tracked.item()}"
