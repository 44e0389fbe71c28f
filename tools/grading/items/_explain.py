"""Helpers of the optional Part 4 items (4a-4d, explanations): the model the items explain, the written-out
attributions they are compared with, and the checks every explainer shares (trusted grading process only;
never shipped to the sandbox).

Part 4 ships only when the kit's `course_parts.json` names it (`tools/make_release.py --parts 1,2,3,4`);
its points come from there too (`grade.Kit`), each item module's `POINTS` being the default.
"""
import torch
import torch.nn as nn

from .. import childlib, static
from ..compare import close, generator
from ._common import small_cnn, small_cnn_setup

OPTIONAL_PART = "4"
FORBIDDEN = static.ATTRIBUTION
F64 = torch.float64


def setup_and_images(seed, n=3, h=12, w=12):
    """A SmallCNN state (train mode, a frozen parameter, existing .grads) and seeded images."""
    return {"setup": small_cnn_setup(seed, frozen=("bn1.bias",), grads=("conv1.weight", "fc.bias")),
            "x": childlib.seeded_images(generator(seed + 10), n, h, w)}


def frozen_model(inp):
    return small_cnn(inp["setup"]).eval()


def pristine(inp):
    return childlib.model_snapshot(small_cnn(inp["setup"]))


def untouched(snapshot, want):
    """'' when the model state after a call equals `want`, else what changed."""
    if not isinstance(snapshot, dict):
        return "the model state after the call did not come back"
    state, grads = snapshot.get("state"), snapshot.get("grads")
    if not isinstance(state, dict) or set(state) != set(want["state"]):
        return "the model's parameters/buffers changed names"
    for name, value in want["state"].items():
        got = state[name]
        if not isinstance(got, torch.Tensor) or got.shape != value.shape or not torch.equal(got, value):
            kind = "BatchNorm statistic" if "running" in name or "num_batches" in name else "parameter"
            return f"{kind} {name} was changed (run the model in eval mode: _FrozenEval)"
    if not isinstance(grads, dict) or set(grads) != set(want["grads"]) or any(
            not isinstance(grads[k], torch.Tensor) or not torch.equal(grads[k], v) for k, v in want["grads"].items()):
        return "the parameters' .grad changed (differentiate with torch.autograd.grad, not backward())"
    for key, what in (("requires_grad", "requires_grad flags"), ("training", "train/eval modes")):
        got = snapshot.get(key)
        if not isinstance(got, torch.Tensor) or not torch.equal(got, want[key]):
            return f"the model's {what} were not restored"
    return ""


def compare_case(r, want, what, pristine_state=None, tol=(1e-10, 1e-8)):
    """`(match problem, side-effect problem)` of one returned case `r` against `want`."""
    if not isinstance(r, dict) or "out" not in r:
        err = r.get("error") if isinstance(r, dict) else None
        problem = f"{what} raised {err}" if err else f"{what}: nothing came back"
        return problem, problem  # nothing to check: no side-effect credit either
    ok, msg = close(r["out"], want, what=what, tol=tol)
    side = ""
    if r.get("requires_grad"):
        side = f"{what} returns a tensor that requires grad (return it detached)"
    elif pristine_state is not None:
        side = untouched(r.get("model"), pristine_state)
        side = f"{what}: {side}" if side else ""
        if not side and r.get("hooks"):
            side = f"{what} left {int(r['hooks'])} hook(s) on the model (remove them in a finally)"
        if not side and r.get("rng_changed"):
            side = f"{what} drew from the global RNG (use the seeded torch.Generator)"
    return ("" if ok else msg), side


def manual_smoothgrad(model, x, loss_fn, num_samples, noise_std, seed):
    with torch.no_grad():
        labels = model(x).argmax(1)
    noise = noise_std * torch.randn((x.shape[0], num_samples) + tuple(x.shape[1:]), generator=generator(seed),
                                    dtype=x.dtype)  # (N, S, 3, H, W)
    total = torch.zeros_like(x)
    for s in range(num_samples):
        xs = (x + noise[:, s]).requires_grad_(True)
        total += torch.autograd.grad(loss_fn(model(xs), labels), xs)[0].abs()
    return (total / num_samples).amax(1, keepdim=True)  # (N, 1, H, W)


def manual_cam(model, layer, x, target, plus_plus):
    store = []
    handle = layer.register_forward_hook(lambda m, a, out: store.append(out))
    try:
        logits = model(x.clone().requires_grad_(True))
    finally:
        handle.remove()
    acts = store[-1]
    if target is None:
        target = logits.argmax(1)
    grads = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), acts)[0]
    if plus_plus:
        alpha = grads ** 2 / (2 * grads ** 2 + acts.sum((2, 3), keepdim=True) * grads ** 3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = (alpha * grads.clamp_min(0)).sum((2, 3), keepdim=True)
    else:
        weights = grads.mean((2, 3), keepdim=True)
    return (weights * acts).sum(1, keepdim=True).clamp_min(0).detach()  # (N, 1, h, w)


def manual_ig(model, x, baseline, target, steps):
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(1)
    total = torch.zeros_like(x)
    for k in range(steps):
        p = (baseline + (k + 0.5) / steps * (x - baseline)).requires_grad_(True)
        total += torch.autograd.grad(model(p).gather(1, target.view(-1, 1)).sum(), p)[0]
    return (x - baseline) * total / steps  # (N, 3, H, W)


def manual_rollout(maps):
    out = None
    for a in maps:
        a = a.mean(1) + torch.eye(a.shape[-1], dtype=a.dtype)
        a = a / a.sum(-1, keepdim=True)
        out = a if out is None else a @ out
    return out  # (N, L, L)


LOSSES = {"mean": nn.CrossEntropyLoss(), "sum": nn.CrossEntropyLoss(reduction="sum")}
