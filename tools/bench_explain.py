"""Cost of each explanation method (Part 4 and the saliency of Part 3a) against the library that does the same.

    python tools/bench_explain.py                      # default CNN and SimpleViT, 16 images at 64x64, 2 threads
    python tools/bench_explain.py --img-size 128 --images 8 --repeat 5

For every method it times, in one run and interleaved, the kit's reference (`student_code.py`, as the runner's
`--explain` calls it) and its library counterpart with the same settings: Captum `Saliency`,
`NoiseTunnel(Saliency)` (16 samples, std 0.3), `IntegratedGradients` (32 steps, riemann_middle) and
pytorch-grad-cam `GradCAM` / `GradCAMPlusPlus` on the layer `explain.py` picks; attention rollout (ViT) has no
library counterpart here and is timed alone. Prints ms per image (median of `--repeat` runs after one warm-up
call) and the ratio kit / library. Weights are random (the cost does not depend on them).
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def median_ms(fn, x, repeat):
    """Median wall time of `fn(x)` in ms per image, after one warm-up call."""
    fn(x)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / len(x)


def library_counterparts(model, layer, labels_of):
    """`{method: fn(x) -> attributions}` of Captum / pytorch-grad-cam with the runner's settings."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    frozen = copy.deepcopy(model).eval()
    frozen_layer = dict(frozen.named_modules())[next(n for n, m in model.named_modules() if m is layer)]
    per_sample = lambda inp, y: F.cross_entropy(frozen(inp), y, reduction="none")  # noqa: E731

    def cam(cls):
        def run(x):
            with cls(model=frozen, target_layers=[frozen_layer]) as c:
                return c(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in labels_of(x)])
        return run

    return {
        "saliency": lambda x: Saliency(per_sample).attribute(x, additional_forward_args=(labels_of(x),)),
        "smoothgrad": lambda x: NoiseTunnel(Saliency(per_sample)).attribute(
            x, nt_type="smoothgrad", nt_samples=16, stdevs=0.3, abs=True, additional_forward_args=(labels_of(x),)),
        "gradcam": cam(GradCAM),
        "gradcam++": cam(GradCAMPlusPlus),
        "ig": lambda x: IntegratedGradients(frozen).attribute(x, baselines=0.0, target=labels_of(x), n_steps=32,
                                                              method="riemann_middle"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import explain
    import student_code

    model = student_code.default_cnn_model(num_classes=10).eval()
    x = torch.randn(args.images, 3, args.img_size, args.img_size)  # (N, 3, H, W)
    criterion = nn.CrossEntropyLoss()
    _, layer = explain.default_target_layer(model, x[:1])

    def labels_of(inp):
        with torch.no_grad():
            return model(inp).argmax(1)

    libs = library_counterparts(model, layer, labels_of)
    print(f"{args.images} images of {args.img_size}x{args.img_size}, {args.threads} threads, median of "
          f"{args.repeat} (ms per image)")
    print(f"{'method':<11} {'kit':>9} {'library':>9} {'kit/library':>12}  library")
    names = {"saliency": "captum Saliency", "smoothgrad": "captum NoiseTunnel(Saliency), 16 samples",
             "gradcam": "pytorch-grad-cam GradCAM", "gradcam++": "pytorch-grad-cam GradCAMPlusPlus",
             "ig": "captum IntegratedGradients, 32 steps"}
    for method in ("saliency", "smoothgrad", "gradcam", "gradcam++", "ig"):
        ours = explain.make_explainer(method, model, criterion, x[:1])
        kit_ms = median_ms(ours, x, args.repeat)
        lib_ms = median_ms(libs[method], x, args.repeat)
        print(f"{method:<11} {kit_ms:>9.1f} {lib_ms:>9.1f} {kit_ms / lib_ms:>12.2f}  {names[method]}")
    vit = student_code.default_vit_model(num_classes=10).eval()
    rollout = explain.make_explainer("rollout", vit, criterion, x[:1])
    print(f"{'rollout':<11} {median_ms(rollout, x, args.repeat):>9.1f} {'-':>9} {'-':>12}  (SimpleViT; no "
          f"library counterpart)")


if __name__ == "__main__":
    main()
