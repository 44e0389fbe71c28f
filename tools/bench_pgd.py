"""Benchmark the reference `PGDAttack` against torchattacks' `PGD` on the same model and batch (staff tool).

Run:  python tools/bench_pgd.py [--threads 2] [--batch 32] [--sizes 64 128] [--model default|simple]
                                [--steps 10] [--repeat 5] [--device cpu|cuda]

Both attacks run the same untargeted L-inf PGD (no random start, cross-entropy, `--steps` steps of 0.01,
epsilon 0.1 in normalized units) on a randomly initialized model (`default_cnn_model` or `SimpleNet`,
100 classes, eval mode) and the same batch of random 8-bit images. The kit works on normalized images;
torchattacks on pixels in [0, 1], so it gets the model `p -> model((p - mean) / std)` and the per-channel
pixel budgets `eps * std`, `alpha * std` ((1, 3, 1, 1) tensors): the same attack (see
tests/test_attack.py::test_pgd_matches_torchattacks). The normalization inside the wrapper is part of the
library's cost (two elementwise ops on the image per forward and backward, small next to the model).

Timing: interleaved in one process (kit, library, library, kit, ... after a warm-up, alternating which goes
first), median of `--repeat` runs, reported as images/s and the ratio of times kit / library (target
<= 1.05); `(best-of)` is the same ratio of the fastest runs, less sensitive to other load on the machine. `fwd+bwd` is the floor: `--steps` forward passes plus input-gradient backward passes of the
model alone. The outputs are compared (in normalized units): largest difference and the share of elements
that differ by more than 1e-5 (float32 rounding differs between the two parametrizations, which can flip
the sign of a near-zero gradient element: such an element then differs by up to 2 step sizes).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
import custom_augment  # noqa: E402
import student_code  # noqa: E402
from test_attack import PixelSpace  # noqa: E402 (the pixel-space wrapper the torchattacks oracle test uses)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fwd_bwd_floor(model, x, y, steps):
    """`steps` forward passes and input-gradient backward passes of `model` alone (no attack arithmetic)."""
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(x), y), x)


def bench(model_name, size, args, device):
    """Time the three contenders at `size x size`; returns a dict of figures."""
    import torchattacks

    torch.manual_seed(0)
    build = student_code.SimpleNet if model_name == "simple" else student_code.default_cnn_model
    model = build(num_classes=100).to(device).eval()
    for p in model.parameters():  # as in main.py -a after loading a checkpoint: a plain trainable model
        p.requires_grad_(True)
    mean = torch.tensor(custom_augment.IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(custom_augment.IMAGENET_STD, device=device).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(1)
    pixels = (torch.randint(0, 256, (args.batch, 3, size, size), generator=g).float() / 255).to(device)
    x = (pixels - mean) / std  # (N, 3, H, W) normalized, as the data pipeline gives them
    with torch.no_grad():
        y = model(x).argmax(1)  # attack the model's own predictions

    kit = student_code.PGDAttack(nn.CrossEntropyLoss(), num_steps=args.steps, step_size=0.01, epsilon=0.1)
    lib = torchattacks.PGD(PixelSpace(model, mean, std), eps=0.1 * std, alpha=0.01 * std, steps=args.steps,
                           random_start=False)
    runs = {
        "kit": lambda: kit.perturb(model, x, y),
        "torchattacks": lambda: (lib(pixels, y) - mean) / std,
        "fwd+bwd": lambda: fwd_bwd_floor(model, x, y, args.steps),
    }
    names = list(runs)
    times = {n: [] for n in names}
    outputs = {}
    for i in range(args.warmup + args.repeat):
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            _sync(device)
            start = time.perf_counter()
            out = runs[n]()
            _sync(device)
            if i >= args.warmup:
                times[n].append(time.perf_counter() - start)
            outputs[n] = out
    diff = (outputs["kit"] - outputs["torchattacks"]).abs()
    med = {n: statistics.median(t) for n, t in times.items()}
    best = {n: min(t) for n, t in times.items()}
    return {"med": med, "best": best, "max_diff": diff.max().item(), "frac_diff": (diff > 1e-5).double().mean().item()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--model", choices=["default", "simple"], default="default",
                        help="default_cnn_model (reference ResidualCNN) or the given SimpleNet")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps (default 10, as default_attack)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    try:
        import torchattacks
    except ImportError:
        sys.exit("bench_pgd: torchattacks is not installed (pip install --no-deps torchattacks==3.5.1 scipy)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_pgd: --device cuda but no CUDA GPU is available")
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}, model {args.model}, batch {args.batch}, {args.steps} steps, "
          f"median of {args.repeat}")
    print(f"{'size':>5} {'kit img/s':>10} {'lib img/s':>10} {'fwd+bwd img/s':>14} {'kit/lib time':>13} "
          f"{'(best-of)':>10} {'kit/floor':>10} {'max diff':>9} {'>1e-5':>8}")
    for size in args.sizes:
        r = bench(args.model, size, args, device)
        med = r["med"]
        print(f"{size:>5} {args.batch / med['kit']:>10.1f} {args.batch / med['torchattacks']:>10.1f} "
              f"{args.batch / med['fwd+bwd']:>14.1f} {med['kit'] / med['torchattacks']:>13.3f} "
              f"{r['best']['kit'] / r['best']['torchattacks']:>10.3f} "
              f"{med['kit'] / med['fwd+bwd']:>10.3f} {r['max_diff']:>9.2e} {100 * r['frac_diff']:>7.3f}%",
              flush=True)


if __name__ == "__main__":
    main()
