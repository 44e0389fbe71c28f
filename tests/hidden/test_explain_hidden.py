# OPTIONAL PART 4 (tools/make_release.py ships this file only with --parts 1,2,3,4)
"""Hidden (staff-only) tests of the optional Part 4: each piece against a plain autograd computation written
out here (kept out of the public tests: each is a few lines from an answer), in float64 to 1e-10, for a
mean-reduced loss, given targets, windowed ViT maps (through the runner's conversion) and CUDA when present.

Run: python -m pytest tests/hidden/test_explain_hidden.py
"""
import copy

import torch
import torch.nn as nn

import explain
import student_code
from test_attack import assert_close_report, make_model, random_images, single_thread  # noqa: F401 (autouse)


def manual_smoothgrad(model, x, loss_fn, num_samples, noise_std, seed):
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        labels = model(x).argmax(1)
    g = torch.Generator(device=x.device).manual_seed(seed)
    noise = noise_std * torch.randn((x.shape[0], num_samples) + tuple(x.shape[1:]), generator=g, dtype=x.dtype,
                                    device=x.device)
    total = torch.zeros_like(x)
    for s in range(num_samples):
        xs = (x + noise[:, s]).requires_grad_(True)
        total += torch.autograd.grad(loss_fn(model(xs), labels), xs)[0].abs()
    return (total / num_samples).amax(1, keepdim=True)


def manual_cam(model, layer_name, x, target, plus_plus):
    model = copy.deepcopy(model).eval()
    layer = dict(model.named_modules())[layer_name]
    store = {}
    handle = layer.register_forward_hook(lambda m, a, out: store.setdefault("a", out))
    x = x.clone().requires_grad_(True)
    logits = model(x)
    handle.remove()
    acts = store["a"]
    grads = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), acts)[0]
    if plus_plus:
        alpha = grads ** 2 / (2 * grads ** 2 + acts.sum((2, 3), keepdim=True) * grads ** 3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        w = (alpha * grads.clamp_min(0)).sum((2, 3), keepdim=True)
    else:
        w = grads.mean((2, 3), keepdim=True)
    return (w * acts).sum(1, keepdim=True).clamp_min(0).detach()


def manual_ig(model, x, baseline, target, steps):
    model = copy.deepcopy(model).eval()
    total = torch.zeros_like(x)
    for k in range(steps):
        p = (baseline + (k + 0.5) / steps * (x - baseline)).requires_grad_(True)
        total += torch.autograd.grad(model(p).gather(1, target.view(-1, 1)).sum(), p)[0]
    return (x - baseline) * total / steps


def manual_rollout(maps):
    out = torch.eye(maps[0].shape[-1], dtype=maps[0].dtype, device=maps[0].device).expand_as(maps[0][:, 0])
    for a in maps:
        a = a.mean(1) + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        out = (a / a.sum(-1, keepdim=True)) @ out
    return out


def test_smoothgrad_matches_autograd_mean_loss(device):
    model = make_model(seed=51, device=device)
    x = random_images((3, 3, 12, 16), seed=52, device=device)
    loss_fn = nn.CrossEntropyLoss()
    ours = student_code.SmoothGrad(loss_fn, num_samples=5, noise_std=0.2, seed=9).explain(model, x)
    assert_close_report(ours, manual_smoothgrad(model, x, loss_fn, 5, 0.2, 9), 1e-12, "SmoothGrad vs autograd")


def test_gradcam_and_plus_plus_match_autograd_with_given_targets(device):
    model = make_model(seed=53, device=device)
    x = random_images((3, 3, 16, 12), seed=54, device=device)
    target = torch.tensor([4, 0, 2], device=device)
    for cls, pp in ((student_code.GradCAM, False), (student_code.GradCAMPlusPlus, True)):
        for layer in ("bn2", "conv2", "bn1"):
            ours = cls(model, dict(model.named_modules())[layer]).layer_cam(x, target)
            assert_close_report(ours, manual_cam(model, layer, x, target, pp), 1e-10,
                                f"{cls.__name__}.layer_cam at {layer} vs autograd")


def test_integrated_gradients_matches_autograd(device):
    model = make_model(seed=55, device=device)
    x = random_images((2, 3, 16, 16), seed=56, device=device)
    base = random_images((1, 3, 16, 16), seed=57, device=device)
    target = torch.tensor([1, 3], device=device)
    ours = student_code.IntegratedGradients(model, baseline=base, steps=7).attribute(x, target)
    assert_close_report(ours, manual_ig(model, x, base.expand_as(x), target, 7), 1e-10, "IG vs autograd")


def test_rollout_matches_manual_on_windowed_vit(device):
    from custom_blocks import attention_maps

    torch.manual_seed(3)
    vit = student_code.SimpleViT(img_size=48, num_classes=5, patch_size=8, embed_dim=32, depth=3, num_heads=2,
                                 window_size=4, window_block_indexes=(0,)).to(device).double().eval()
    x = random_images((2, 3, 48, 48), seed=58, device=device)
    maps = [explain.windowed_to_global(m, 2, (6, 6)) for m in attention_maps(vit, x)]  # 6x6 tokens, padded windows
    assert all(m.shape == (2, 2, 36, 36) for m in maps)
    assert_close_report(student_code.attention_rollout(maps), manual_rollout(maps), 1e-12, "rollout vs manual")
