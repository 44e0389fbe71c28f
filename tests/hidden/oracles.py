"""Staff-only oracles: the graded answers of Part 3 written out from plain autograd, for the hidden tests.

They are kept out of the public tests on purpose (each is a few lines away from a full answer); the public
tests check the same pieces against libraries (torchattacks, captum) and by their properties.
`tools/make_release.py` refuses to ship a public test that defines a `reference_*`, `ref_*` or `manual_*`
function.

- `reference_pgd`: the PGD of the spec (least-likely targeted without labels, untargeted with labels,
  optional random start);
- `manual_saliency`: the vanilla-gradient saliency map;
- `manual_step`: one adversarial training step on a copy of the model.
"""
import copy

import torch
import torch.nn as nn

from test_attack import pixel_bounds


def reference_pgd(model, x0, target, num_steps, step_size, epsilon, random_start=False,
                  loss_fn=nn.CrossEntropyLoss()):
    """The PGD of the spec, written out (runs on a deep copy of `model` in eval mode).

    `target=None`: labels = argmin of the clean logits, each step *descends* their loss. Otherwise the
    labels are `target` and each step *ascends*. Start at `x0`, or with `random_start` at
    `x0 + torch.empty_like(x0).uniform_(-epsilon, epsilon)` (one draw from the global RNG), projected. Each
    step: `x + sign * step_size * sign(grad)`, then clamp to `[x0 - eps, x0 + eps]` and to the valid range.
    """
    model = copy.deepcopy(model).eval()
    low, high = pixel_bounds(x0.dtype, x0.device)

    def project(x):
        return torch.minimum(torch.maximum(x, x0 - epsilon), x0 + epsilon).clamp(low, high)

    if target is None:
        with torch.no_grad():
            labels, direction = model(x0).argmin(dim=1), -1.0
    else:
        labels, direction = target, 1.0
    x = x0.clone()
    if random_start:
        x = project(x + torch.empty_like(x0).uniform_(-epsilon, epsilon))
    for _ in range(num_steps):
        x = x.detach().requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(model(x), labels), x)
        x = project(x.detach() + direction * step_size * grad.sign())
    return x.detach()


def manual_saliency(model, x, loss_fn):
    """The spec's map with plain autograd on an eval-mode copy of `model`: `(N, 1, H, W)`."""
    model = copy.deepcopy(model).eval()
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    grad, = torch.autograd.grad(loss_fn(logits, logits.argmax(dim=1)), x)  # (N, 3, H, W)
    return grad.abs().amax(dim=1, keepdim=True)  # (N, 1, H, W)


def manual_step(model, x, y, n_adv, craft, seed, make_optimizer):
    """The reference adversarial training step on a deep copy of `model`; returns `(copy, loss, output)`.
    `craft(model_copy, x[:n_adv], y[:n_adv])` gives the adversarial part; the training forward runs with the
    RNG seeded to `seed` (Dropout); `make_optimizer(model_copy)` builds the optimizer."""
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
