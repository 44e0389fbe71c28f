"""Benchmark of the reference `Attention` (Part 2a) against PyTorch's fused attention, and ViT training speed.

    python tools/bench_attention.py [--threads 2] [--repeats 21] [--steps 5] [--skip-train]

1. `student_code.Attention.forward` + backward vs an SDPA-based equivalent (the same module's `qkv` split per
   the SPEC layout, `F.scaled_dot_product_attention`, heads merged, `proj`) at the ViT's sizes: global
   attention over 8x8 tokens (B=64, dim 192, 4 heads) and window attention over 4x4 windows (B=64*4 windows).
   The two run interleaved (alternating order) in one process; the table gives the median time of each and
   the median of the per-repeat ratios (target: at most 1.3x).
2. `SimpleViT` (defaults, 100 classes) training throughput in images/s: batch 64 at 128x128 and 64x64, one
   step = forward, cross-entropy, backward, gradient clipping (norm 1.0, as `main.py --use-vit`) and an AdamW
   step; again interleaved with the same model using the SDPA attention.

CPU only (the figures are for the course's CPU path); timings on a shared machine are noisy, so compare the
ratios, which are measured side by side. Staff tool: not shipped to students.
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
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import student_code  # noqa: E402


def sdpa_attention_forward(attn, x):
    """The same computation as `Attention.forward` with `F.scaled_dot_product_attention`:
    `x (B, H, W, C)` -> `(B, H, W, C)`."""
    B, H, W, C = x.shape
    nh = attn.num_heads
    qkv = attn.qkv(x).reshape(B, H * W, 3, nh, C // nh)  # (B, L, 3, nh, hd)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, L, hd)
    out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, L, hd)
    return attn.proj(out.transpose(1, 2).reshape(B, H, W, C))  # (B, H, W, C)


class SDPAAttention(student_code.Attention):
    """`Attention` whose forward is `sdpa_attention_forward` (same parameters, so weights can be shared)."""

    def forward(self, x):
        return sdpa_attention_forward(self, x)


def time_once(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns, repeats, warmup=2):
    """Run the callables of `fns` (name -> fn) in alternating order `repeats` times; returns name -> list of
    seconds."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(time_once(fns[name]))
    return times


def attention_step(module, x, grad_out):
    """One forward + backward of `module` on `x`; the gradients are discarded."""
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad_out)
    return step


def bench_attention(repeats):
    """Rows `(case, reference ms, SDPA ms, ratio)` for the ViT's global and windowed attention sizes."""
    rows = []
    for case, shape in (("global 8x8, B=64", (64, 8, 8, 192)), ("window 4x4, B=64*4", (256, 4, 4, 192))):
        torch.manual_seed(0)
        ref = student_code.Attention(192, num_heads=4)
        fused = SDPAAttention(192, num_heads=4)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(*shape, requires_grad=True)
        grad_out = torch.randn(*shape)
        with torch.no_grad():  # the comparison is meaningful only if both compute the same thing
            err = (ref(x) - fused(x)).abs().max().item()
        assert err < 1e-4, f"reference and SDPA attention differ by {err}"
        times = interleaved({"ref": attention_step(ref, x, grad_out), "sdpa": attention_step(fused, x, grad_out)},
                            repeats)
        ratios = [a / b for a, b in zip(times["ref"], times["sdpa"])]
        rows.append((case, 1e3 * statistics.median(times["ref"]), 1e3 * statistics.median(times["sdpa"]),
                     statistics.median(ratios)))
    return rows


def train_step(model, optimizer, images, labels):
    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def use_sdpa(model):
    """Swap every `Attention` of `model` for an `SDPAAttention` holding the same parameters (in place)."""
    for block in model.blocks:
        fused = SDPAAttention(block.attn.proj.in_features, num_heads=block.attn.num_heads)
        fused.qkv, fused.proj = block.attn.qkv, block.attn.proj
        block.attn = fused
    return model


def bench_training(steps, batch=64):
    """Rows `(input size, reference img/s, SDPA img/s, ratio of step times)`."""
    rows = []
    for size in (128, 64):
        torch.manual_seed(0)
        images, labels = torch.randn(batch, 3, size, size), torch.randint(0, 100, (batch,))
        models = {"ref": student_code.SimpleViT(num_classes=100).train()}
        models["sdpa"] = use_sdpa(student_code.SimpleViT(num_classes=100).train())
        models["sdpa"].load_state_dict(models["ref"].state_dict())
        fns = {name: train_step(m, torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.05), images, labels)
               for name, m in models.items()}
        times = interleaved(fns, steps, warmup=1)
        ratios = [a / b for a, b in zip(times["ref"], times["sdpa"])]
        rows.append((f"{size}x{size}", batch / statistics.median(times["ref"]),
                     batch / statistics.median(times["sdpa"]), statistics.median(ratios)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=21, help="timed repeats per attention case (default 21)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model and size (default 5)")
    parser.add_argument("--skip-train", action="store_true", help="only the attention benchmark")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32")
    print("\nAttention forward+backward, dim 192, 4 heads (median of "
          f"{args.repeats} interleaved repeats)")
    print(f"{'case':<22}{'reference ms':>14}{'SDPA ms':>10}{'ratio':>8}")
    for case, ref_ms, sdpa_ms, ratio in bench_attention(args.repeats):
        print(f"{case:<22}{ref_ms:>14.2f}{sdpa_ms:>10.2f}{ratio:>7.2f}x")
    if not args.skip_train:
        print(f"\nSimpleViT training throughput, batch 64, AdamW + clipping (median of {args.steps} interleaved "
              "steps)")
        print(f"{'input':<22}{'reference img/s':>16}{'SDPA img/s':>12}{'ratio':>8}")
        for size, ref_ips, sdpa_ips, ratio in bench_training(args.steps):
            print(f"{size:<22}{ref_ips:>16.1f}{sdpa_ips:>12.1f}{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
