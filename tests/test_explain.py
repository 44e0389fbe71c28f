# OPTIONAL PART 4 (tools/make_release.py ships this file only with --parts 1,2,3,4)
"""Public tests of the optional Part 4 (explanations): `SmoothGrad` (4a), `GradCAM` / `GradCAMPlusPlus`
(4b), `IntegratedGradients` (4c), `attention_rollout` (4d).

Oracles are the attribution libraries the field uses (test-only; students must not call them):
- Captum 0.9 (`requirements.txt`): `NoiseTunnel(Saliency)` for SmoothGrad (same seed, same noise layout;
  float32, to 1e-6 of the map's maximum), `LayerGradCam` for the raw Grad-CAM map (float64, 1e-10),
  `IntegratedGradients(method="riemann_middle")` for IG (float64, 1e-6 of the largest attribution:
  captum keeps the step sizes 1/m in float32);
- pytorch-grad-cam 1.5.5 (`requirements-oracles.txt`, installed with `--no-deps`): `GradCAM` and
  `GradCAMPlusPlus` for the upsampled, [0, 1]-scaled maps (float64, 1e-3: OpenCV's fixed-point resize)
  and their `get_cam_weights` for `channel_weights` (1e-12);
on a tiny BatchNorm CNN, the given `SimpleNet`, your `default_cnn_model` and torchvision's ResNet-18
(random weights), at 32x32 with 2 images. Properties: IG completeness (attributions sum to
F(x) - F(baseline)), SmoothGrad with zero noise equals `GradAttention`, seeding, batch independence (each
image's map does not depend on the others), no side effects on the model (mode, parameters, `.grad`,
`requires_grad`, hooks), detached outputs on the input's dtype and device; rollout's rows sum to 1 and
rollout composes layer by layer. The runner's metrics (`explain.spearman`, `explain.topk_overlap`) are
checked against SciPy.

Run: python -m pytest tests/test_explain.py
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import explain
import student_code
from test_attack import assert_close_report, assert_model_unchanged, make_model, random_images, \
    single_thread, snapshot_model  # noqa: F401 (single_thread: autouse fixture)

pytestmark = pytest.mark.skipif(not hasattr(student_code, "SmoothGrad"),
                                reason="Part 4 is not part of this release of student_code.py")

SIZE = 32
NUM_CLASSES = 5
MODELS = ("tiny", "simplenet", "default_cnn", "resnet18")  # the CNNs (Grad-CAM needs a feature map)
GRADIENT_MODELS = MODELS + ("vit",)  # the gradient methods apply to the ViT as well


def build(name, dtype=torch.float64, device="cpu"):
    """`(model in train mode, Grad-CAM layer)` with seeded random weights and non-trivial BN statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        if name == "tiny":
            model = make_model(seed=31, dtype=dtype, device=device)
            return model, model.bn2
        if name == "simplenet":
            model = student_code.SimpleNet(num_classes=NUM_CLASSES)
        elif name == "default_cnn":
            model = student_code.default_cnn_model(num_classes=NUM_CLASSES)
        elif name == "vit":  # 4x4 tokens, one windowed block (2x2 windows) and one global block
            model = student_code.SimpleViT(img_size=SIZE, num_classes=NUM_CLASSES, patch_size=8, embed_dim=32,
                                           depth=2, num_heads=4, window_size=2, window_block_indexes=(0,))
        else:
            import torchvision

            model = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
    model = model.to(device=device, dtype=dtype).train()
    x = random_images((1, 3, SIZE, SIZE), seed=1, dtype=dtype, device=device)
    if name == "resnet18":
        return model, model.layer3  # layer4 is 1x1 at 32x32
    if name == "vit":
        return model, None  # no Grad-CAM layer: the tokens are not a feature map of the CNN kind
    return model, explain.default_target_layer(model, x)[1]


def images(n=2, dtype=torch.float64, device="cpu", seed=40):
    return random_images((n, 3, SIZE, SIZE), seed=seed, dtype=dtype, device=device)


def predicted(model, x):
    with torch.no_grad():
        return copy.deepcopy(model).eval()(x).argmax(dim=1)


def check_map(out, x, channels=1):
    assert out.shape == (x.shape[0], channels) + tuple(x.shape[2:]), \
        f"expected {(x.shape[0], channels) + tuple(x.shape[2:])}, got {tuple(out.shape)}"
    assert out.dtype == x.dtype and out.device == x.device, f"expected {x.dtype} on {x.device}, got " \
                                                            f"{out.dtype} on {out.device}"
    assert not out.requires_grad and out.grad_fn is None, "the result must be detached"


def close_relative(actual, expected, rtol, what):
    assert_close_report(actual, expected, rtol * max(expected.abs().max().item(), 1e-30), what)


################################################################################
# 4a SmoothGrad
################################################################################
@pytest.mark.part("4a")
@pytest.mark.parametrize("name", GRADIENT_MODELS)
def test_smoothgrad_matches_captum_noise_tunnel(name):
    """captum: `NoiseTunnel(Saliency(f)).attribute(x, nt_type="smoothgrad", nt_samples=S, stdevs=std,
    abs=True)` adds `torch.normal(0, std)` noise of shape `(N*S, 3, H, W)` drawn from the global RNG (seeded
    like SmoothGrad's generator, same values in float32) to `x.repeat_interleave(S, 0)`, i.e. copy `s` of
    image `i` is row `i*S + s`: our `(N, S, 3, H, W)` layout. With `f` = the per-sample cross-entropy
    against the clean prediction, its map (max over channels) is SmoothGrad's with a sum-reduced loss."""
    captum_attr = pytest.importorskip("captum.attr", reason="pip install -r requirements.txt (captum)")
    model, _ = build(name, torch.float32)
    x = images(dtype=torch.float32)
    labels = predicted(model, x)
    ours = student_code.SmoothGrad(nn.CrossEntropyLoss(reduction="sum"), num_samples=4, noise_std=0.3,
                                   seed=11).explain(model, x)
    check_map(ours, x)
    frozen = copy.deepcopy(model).eval()
    torch.manual_seed(11)
    oracle = captum_attr.NoiseTunnel(captum_attr.Saliency(
        lambda inp, y: F.cross_entropy(frozen(inp), y, reduction="none"))).attribute(
        x, nt_type="smoothgrad", nt_samples=4, stdevs=0.3, abs=True,
        additional_forward_args=(labels,)).amax(dim=1, keepdim=True)  # (N, 1, H, W)
    close_relative(ours, oracle, 1e-5, f"SmoothGrad vs captum NoiseTunnel(Saliency) on {name}")


@pytest.mark.part("4a")
def test_smoothgrad_without_noise_is_saliency_and_seed_decides(device):
    model = make_model(seed=32, device=device)
    x = images(3, device=device)
    loss = nn.CrossEntropyLoss()
    plain = student_code.GradAttention(loss).explain(model, x)
    zero = student_code.SmoothGrad(loss, num_samples=3, noise_std=0.0).explain(model, x)
    assert_close_report(zero, plain, 1e-12, "SmoothGrad with noise_std=0 vs GradAttention")
    state = torch.get_rng_state()
    a = student_code.SmoothGrad(loss, num_samples=3, seed=1).explain(model, x)
    assert torch.equal(torch.get_rng_state(), state), "SmoothGrad must draw from its own seeded generator, " \
                                                      "not the global RNG"
    b = student_code.SmoothGrad(loss, num_samples=3, seed=1).explain(model, x)
    c = student_code.SmoothGrad(loss, num_samples=3, seed=2).explain(model, x)
    assert torch.equal(a, b), "the same seed must give the same map"
    assert (a - c).abs().max() > 1e-6, "another seed must give another noise draw"
    assert (a - plain).abs().max() > 1e-6, "noise_std > 0 must change the map"


################################################################################
# 4b Grad-CAM, Grad-CAM++
################################################################################
@pytest.mark.part("4b")
@pytest.mark.parametrize("name", MODELS)
def test_gradcam_layer_cam_matches_captum_layer_gradcam(name):
    """captum's `LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)`:
    `relu(sum_k mean_hw(dscore/dA_k) * A_k)` at the layer's resolution, float64."""
    captum_attr = pytest.importorskip("captum.attr", reason="pip install -r requirements.txt (captum)")
    model, layer = build(name)
    x = images()
    ours = student_code.GradCAM(model, layer).layer_cam(x)
    frozen = copy.deepcopy(model).eval()
    frozen_layer = dict(frozen.named_modules())[next(n for n, m in model.named_modules() if m is layer)]
    labels = predicted(model, x)
    for target in (None, (labels + 1) % NUM_CLASSES):
        ours = student_code.GradCAM(model, layer).layer_cam(x, target)
        oracle = captum_attr.LayerGradCam(frozen, frozen_layer).attribute(
            x, target=labels if target is None else target, relu_attributions=True)
        assert ours.shape == oracle.shape, f"layer_cam must be (N, 1, h, w) = {tuple(oracle.shape)}, got " \
                                           f"{tuple(ours.shape)}"
        assert not ours.requires_grad, "layer_cam must be detached"
        close_relative(ours, oracle, 1e-10, f"GradCAM.layer_cam vs captum LayerGradCam on {name} "
                                            f"(target {'predicted' if target is None else 'given'})")


@pytest.mark.part("4b")
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["GradCAM", "GradCAMPlusPlus"])
def test_gradcam_explain_matches_pytorch_grad_cam(name, method):
    """pytorch-grad-cam's `GradCAM` / `GradCAMPlusPlus` with `ClassifierOutputTarget(predicted class)`:
    the map scaled to [0, 1], resized with OpenCV (bilinear) and scaled again; float64 model, 1e-3: OpenCV's
    bilinear resize uses fixed-point coefficients (11 bits, steps of 5e-4) where `F.interpolate` is exact."""
    gradcam = pytest.importorskip("pytorch_grad_cam", reason="pip install --no-deps -r requirements-oracles.txt")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer = build(name)
    x = images()
    ours = getattr(student_code, method)(model, layer).explain(x)
    check_map(ours, x)
    frozen = copy.deepcopy(model).eval()  # the library puts the model in eval mode for good
    frozen_layer = dict(frozen.named_modules())[next(n for n, m in model.named_modules() if m is layer)]
    with getattr(gradcam, method)(model=frozen, target_layers=[frozen_layer]) as cam:
        oracle = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in predicted(model, x)])
    assert_close_report(ours[:, 0], torch.from_numpy(oracle), 1e-3, f"{method}.explain vs pytorch-grad-cam on {name}")


@pytest.mark.part("4b")
@pytest.mark.parametrize("method", ["GradCAM", "GradCAMPlusPlus"])
def test_channel_weights_match_pytorch_grad_cam(method):
    """`channel_weights` against the library's own `get_cam_weights` on the same activations and gradients
    (float64, 1e-12): exact, where the end-to-end maps above differ by OpenCV's fixed-point resize."""
    gradcam = pytest.importorskip("pytorch_grad_cam", reason="pip install --no-deps -r requirements-oracles.txt")
    g = torch.Generator().manual_seed(3)
    acts = F.relu(torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64))
    grads = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    grads[0, 0] = 0.0  # a channel without gradient
    grads[1, 2, 1] = 0.0
    ours = getattr(student_code, method)(None, None).channel_weights(acts, grads)
    assert ours.shape == (2, 4, 1, 1), f"channel_weights must be (N, K, 1, 1), got {tuple(ours.shape)}"
    lib = getattr(gradcam, method).__new__(getattr(gradcam, method))  # only its weight formula is used
    oracle = lib.get_cam_weights(None, None, None, acts.numpy(), grads.numpy())  # (N, K)
    assert_close_report(ours.view(2, 4), torch.from_numpy(oracle), 1e-12, f"{method}.channel_weights vs pytorch-grad-cam")


################################################################################
# 4c Integrated Gradients
################################################################################
@pytest.mark.part("4c")
@pytest.mark.parametrize("name", GRADIENT_MODELS)
@pytest.mark.parametrize("baseline", ["zeros", "random"])
def test_integrated_gradients_matches_captum(name, baseline):
    captum_attr = pytest.importorskip("captum.attr", reason="pip install -r requirements.txt (captum)")
    model, _ = build(name)
    x = images()
    base = None if baseline == "zeros" else images(1, seed=41)
    ours = student_code.IntegratedGradients(model, baseline=base, steps=6).attribute(x)
    check_map(ours, x, channels=3)
    frozen = copy.deepcopy(model).eval()
    oracle = captum_attr.IntegratedGradients(frozen).attribute(
        x, baselines=0.0 if base is None else base.expand_as(x), target=predicted(model, x), n_steps=6,
        method="riemann_middle")
    close_relative(ours, oracle, 1e-6, f"IntegratedGradients vs captum (riemann_middle) on {name}, {baseline} baseline")


@pytest.mark.part("4c")
def test_integrated_gradients_completeness_and_target():
    """The attributions of each image sum to F(x) - F(baseline) (the discretization error falls with the
    number of steps), for the predicted class and for a given one."""
    model = make_model(seed=33)
    x = images(3)
    base = images(1, seed=42)
    frozen = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits, base_logits = frozen(x), frozen(base.expand_as(x))
    for target in (None, torch.tensor([0, 3, 1])):
        labels = logits.argmax(1) if target is None else target
        gap = (logits - base_logits).gather(1, labels.view(-1, 1)).squeeze(1)  # (N,)
        errors = []
        for steps in (4, 64):
            attr = student_code.IntegratedGradients(model, baseline=base, steps=steps).attribute(x, target)
            errors.append((attr.sum(dim=(1, 2, 3)) - gap).abs().max().item())
        scale = gap.abs().max().item()
        assert errors[1] <= 0.02 * scale, f"completeness: attributions sum to F(x) - F(x') within 2% at 64 steps; " \
                                          f"largest error {errors[1]:.3g} for gaps up to {scale:.3g}"
        assert errors[1] <= errors[0] + 1e-12, f"more steps must not be worse: {errors}"


################################################################################
# 4d attention rollout
################################################################################
def random_attention(n, heads, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, heads, length, length, generator=g, dtype=torch.float64).softmax(dim=-1)


@pytest.mark.part("4d")
def test_rollout_one_layer_identity_and_composition():
    a1, a2, a3 = (random_attention(2, 3, 5, s) for s in (1, 2, 3))
    eye = torch.eye(5, dtype=torch.float64)
    one = student_code.attention_rollout([a1])
    assert one.shape == (2, 5, 5), f"rollout must be (N, L, L), got {tuple(one.shape)}"
    assert_close_report(one, (a1.mean(dim=1) + eye) / 2, 1e-12, "one layer: (head mean + I) / 2")
    ident = student_code.attention_rollout([eye.expand(2, 3, 5, 5)] * 4)
    assert_close_report(ident, eye.expand(2, 5, 5), 1e-12, "identity attention rolls out to the identity")
    three = student_code.attention_rollout([a1, a2, a3])
    step = [student_code.attention_rollout([a]) for a in (a1, a2, a3)]
    assert_close_report(three, step[2] @ step[1] @ step[0], 1e-12, "rollout = A_3 @ A_2 @ A_1 (last layer first)")
    assert_close_report(three.sum(-1), torch.ones(2, 5, dtype=torch.float64), 1e-12, "rows of the rollout sum to 1")
    # unnormalized rows (e.g. windowed maps with padding) are renormalized after adding the identity
    half = student_code.attention_rollout([a1 * 0.5])
    expected = a1.mean(1) * 0.5 + eye
    assert_close_report(half, expected / expected.sum(-1, keepdim=True), 1e-12, "rows renormalized after + I")


@pytest.mark.part("4d")
def test_rollout_on_vit_attention_maps(device):
    """Rollout of a SimpleViT's per-layer maps (`custom_blocks.attention_maps`, global blocks): `(N, L, L)`,
    rows sum to 1, each image independent of the others; the runner's windowed -> global conversion keeps
    rows stochastic."""
    from custom_blocks import attention_maps

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        vit = student_code.SimpleViT(img_size=SIZE, num_classes=NUM_CLASSES, patch_size=8, embed_dim=32, depth=2,
                                     num_heads=2, window_block_indexes=()).to(device).eval()
    x = images(3, dtype=torch.float32, device=device)
    maps = attention_maps(vit, x)
    out = student_code.attention_rollout(maps)
    assert out.shape == (3, 16, 16) and out.device == x.device, f"expected (3, 16, 16) on {x.device}, got " \
                                                                f"{tuple(out.shape)} on {out.device}"
    assert_close_report(out.sum(-1), torch.ones(3, 16, device=device), 1e-5, "rollout rows sum to 1")
    single = student_code.attention_rollout([m[1:2] for m in maps])
    assert_close_report(single, out[1:2], 1e-6, "image 1 alone vs in the batch")
    token_map = explain.rollout_map(vit, x, student_code.attention_rollout)
    check_map(token_map, x)


################################################################################
# Every method: batches, side effects
################################################################################
def all_methods(model, layer):
    loss = nn.CrossEntropyLoss(reduction="sum")
    return {
        "smoothgrad": lambda x: student_code.SmoothGrad(loss, num_samples=3, seed=4).explain(model, x),
        "gradcam": lambda x: student_code.GradCAM(model, layer).explain(x),
        "gradcam++": lambda x: student_code.GradCAMPlusPlus(model, layer).explain(x),
        "ig": lambda x: student_code.IntegratedGradients(model, steps=5).attribute(x),
    }


PIECE = {"smoothgrad": "4a", "gradcam": "4b", "gradcam++": "4b", "ig": "4c"}


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.part(p)) for m, p in PIECE.items()])
def test_each_image_is_explained_on_its_own(method, device):
    """Image `i`'s map is the same in a batch of 3 as alone (SmoothGrad: its noise is `noise[i]` of the
    batch's draw, so image 0 alone draws the same noise as image 0 in the batch)."""
    model, layer = build("tiny", device=device)
    x = images(3, device=device)
    fn = all_methods(model, layer)[method]
    batch = fn(x)
    alone = fn(x[:1])
    close_relative(alone, batch[:1], 1e-9, f"{method}: image 0 alone vs in a batch of 3")
    assert (batch[1] - batch[0]).abs().max() > 1e-6, f"{method}: different images must get different maps"


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.part(p)) for m, p in PIECE.items()])
@pytest.mark.parametrize("mode", ["train", "mixed"])
def test_explainers_leave_model_and_input_as_found(method, mode, device):
    model, layer = build("tiny", dtype=torch.float32, device=device)
    if mode == "mixed":
        model.bn1.eval()
    model.conv2.weight.grad = torch.randn_like(model.conv2.weight)
    model.fc.weight.requires_grad_(False)
    before = snapshot_model(model)
    hooks = {name: (len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
             for name, m in model.named_modules()}
    x = images(2, dtype=torch.float32, device=device).requires_grad_(True)
    kept = x.detach().clone()
    out = all_methods(model, layer)[method](x)
    assert_model_unchanged(model, before, what=method)
    assert hooks == {name: (len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
                     for name, m in model.named_modules()}, f"{method} left a hook on the model"
    assert torch.equal(x.detach(), kept) and x.grad is None, f"{method} modified its input or its .grad"
    check_map(out, x.detach(), channels=3 if method == "ig" else 1)


@pytest.mark.part("4b")
def test_gradcam_removes_its_hook_on_error():
    model, layer = build("tiny")
    check_map(student_code.GradCAM(model, layer).explain(images(2)), images(2))
    bad = images(2)[:, :2]  # 2 channels: the model fails
    with pytest.raises(RuntimeError, match="channels"):
        student_code.GradCAM(model, layer).layer_cam(bad)
    assert not layer._forward_hooks, "the forward hook must be removed in a `finally`, also when the model fails"


################################################################################
# The runner's comparison metrics (given code)
################################################################################
@pytest.mark.part("given")
def test_runner_metrics_match_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy (installed with torchattacks)")
    g = torch.Generator().manual_seed(8)
    a = torch.rand(3, 1, 6, 6, generator=g)
    b = a + 0.3 * torch.rand(3, 1, 6, 6, generator=g)
    b[2] = (b[2] * 4).round()  # ties
    ours = explain.spearman(a, b)
    for i in range(3):
        assert abs(ours[i].item() - stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic) < 1e-10
    assert torch.allclose(explain.spearman(a, a), torch.ones(3, dtype=torch.float64))
    assert torch.equal(explain.topk_overlap(a, a, 0.1), torch.ones(3, dtype=torch.float64))
    assert explain.topk_overlap(a, -a, 0.1).max() == 0.0
    flat = torch.arange(36.0).view(1, 1, 6, 6)
    shifted = torch.roll(flat, 2, dims=3)
    k = 4  # ceil(0.1 * 36)
    top_a, top_b = set(flat.flatten().topk(k).indices.tolist()), set(shifted.flatten().topk(k).indices.tolist())
    assert explain.topk_overlap(flat, shifted, 0.1).item() == len(top_a & top_b) / k


################################################################################
# The runner with the Part 4 methods
################################################################################
@pytest.mark.parametrize("method, flags", [
    pytest.param("smoothgrad", ["--use-simplenet"], marks=pytest.mark.part("4a")),
    pytest.param("gradcam", ["--use-simplenet"], marks=pytest.mark.part("4b")),
    pytest.param("gradcam++", [], marks=pytest.mark.part("4b")),
    pytest.param("ig", ["--use-simplenet"], marks=pytest.mark.part("4c")),
    pytest.param("rollout", ["--use-vit"], marks=pytest.mark.part("4d")),
])
def test_runner_explains_clean_and_adversarial_images(method, flags, tmp_path, capsys):
    import glob
    import json
    import os

    import custom_dataloader
    import main as runner

    root = tmp_path / "data"
    custom_dataloader.build_synthetic_dataset(root, seed=2, num_classes=3, train_per_class=1, val_per_class=2,
                                              test_per_class=1)
    code = runner.cli([str(root), "-a", "-v", "--explain", method, "--attack-steps", "1", "--img-size", "32",
                       "-b", "6", "-j", "0", "--limit-batches", "1", "--log-dir", str(tmp_path / "logs")] + flags)
    out, err = capsys.readouterr()
    assert code == 0, err
    run = glob.glob(os.path.join(str(tmp_path / "logs"), "*_*"))[0]
    result = json.load(open(os.path.join(run, f"explain_{method}.json")))
    assert result["images"] == 6 and os.path.isfile(os.path.join(run, f"explain_{method}_clean_vs_adv.png"))
