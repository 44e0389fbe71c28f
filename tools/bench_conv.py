"""Benchmark the reference `custom_conv2d` against `F.conv2d` on SimpleNet's convolution layers (staff tool).

Run:  python tools/bench_conv.py [--batch 32] [--threads 2] [--repeat 15] [--size 128] [--device cpu|cuda]

For every convolution of `SimpleNet` at a `size x size` input (stem 7x7/2 3->64 at 128x128, the 1x1 and 3x3
bottleneck layers at 32x32 and 16x16) it times one forward + backward pass of each implementation,
interleaved in the same process (custom, reference, custom, ... after a warm-up, alternating which goes
first) and reports the median of the repeats, the per-layer ratio custom / F.conv2d and the ratio of the
totals. The input of the stem needs no gradient (it is the image), the others do, as inside the network.

Peak memory: the largest amount of memory allocated during forward + backward on top of what was live
before it (inputs, weights, the upstream gradient), for each implementation, and their ratio.
- CPU: allocation and free events recorded by `torch.profiler` with `profile_memory=True` (every
  allocation through PyTorch's CPU allocator, including the workspaces inside `F.conv2d`/oneDNN), replayed
  in time order; the peak of the running sum is the figure. (`tracemalloc` does not see torch's memory.)
  These are allocated bytes, not touched ones: `F.fold` (col2im) allocates its output at the size of its
  input (then shrinks the view), so grad_input counts as large as the unfolded gradient here although only
  its first H*W*C_in*N elements are ever written.
- CUDA: `torch.cuda.max_memory_allocated()` after `torch.cuda.reset_peak_memory_stats()`.
Memory is measured in a separate pass from timing (the profiler slows things down).

Timings on a shared machine are noisy: compare only the ratios of one run, and repeat the run. With other
processes busy on the same cores, 2 threads can be much slower than 1 (threads wait for each other): try
`--threads 1` as well.
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from student_code import custom_conv2d  # noqa: E402

# name, C_in, C_out, K, stride, padding, input size as a fraction of the image size
SIMPLENET_LAYERS = (
    ("conv1 7x7/2", 3, 64, 7, 2, 3, 1),
    ("conv2a 1x1", 64, 64, 1, 1, 0, 4),
    ("conv2b 3x3", 64, 64, 3, 1, 1, 4),
    ("conv2c 1x1", 64, 256, 1, 1, 0, 4),
    ("conv3a 1x1", 256, 128, 1, 1, 0, 8),
    ("conv3b 3x3", 128, 128, 3, 1, 1, 8),
    ("conv3c 1x1", 128, 512, 1, 1, 0, 8),
)


def make_layer_inputs(layer, batch, size, device, dtype=torch.float32):
    """Random `(x, weight, bias, grad_output)` for one layer; `x` needs a gradient except for the stem."""
    _, c_in, c_out, k, stride, padding, div = layer
    hw = size // div
    x = torch.randn(batch, c_in, hw, hw, device=device, dtype=dtype, requires_grad=div != 1)
    weight = torch.randn(c_out, c_in, k, k, device=device, dtype=dtype) / (c_in * k * k) ** 0.5
    weight.requires_grad_(True)
    bias = torch.zeros(c_out, device=device, dtype=dtype, requires_grad=True)
    hw_out = (hw + 2 * padding - k) // stride + 1
    grad_output = torch.randn(batch, c_out, hw_out, hw_out, device=device, dtype=dtype)
    return x, weight, bias, grad_output


def forward_backward(conv, x, weight, bias, grad_output, stride, padding):
    """One forward + backward pass; the gradients are dropped afterwards."""
    y = conv(x, weight, bias, stride, padding)
    inputs = [t for t in (x, weight, bias) if t.requires_grad]
    torch.autograd.grad(y, inputs, grad_output)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_layer(layer, batch, size, device, repeat, warmup=2):
    """Median seconds of forward + backward for `(custom_conv2d, F.conv2d)`, measured interleaved."""
    x, weight, bias, grad_output = make_layer_inputs(layer, batch, size, device)
    stride, padding = layer[4], layer[5]
    convs = (custom_conv2d, F.conv2d)
    times = ([], [])
    for i in range(warmup + repeat):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for j in order:
            _sync(device)
            start = time.perf_counter()
            forward_backward(convs[j], x, weight, bias, grad_output, stride, padding)
            _sync(device)
            if i >= warmup:
                times[j].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler back end's C++ log lines (written straight to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn):
    """Peak of the running sum of CPU allocations minus frees while `fn()` runs (torch.profiler events)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        if event.device_type() != DeviceType.CPU:
            continue
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def _cuda_peak_bytes(fn, device):
    _sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def peak_memory_layer(layer, batch, size, device):
    """Extra peak bytes of forward + backward for `(custom_conv2d, F.conv2d)`."""
    x, weight, bias, grad_output = make_layer_inputs(layer, batch, size, device)
    stride, padding = layer[4], layer[5]
    peaks = []
    for conv in (custom_conv2d, F.conv2d):
        def run(conv=conv):
            forward_backward(conv, x, weight, bias, grad_output, stride, padding)
        run()  # warm-up (one-time weight re-layouts, allocator caches)
        peaks.append(_cuda_peak_bytes(run, device) if device.type == "cuda" else _cpu_peak_bytes(run))
    return tuple(peaks)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads, torch.set_num_threads (default 2)")
    parser.add_argument("--repeat", type=int, default=15, help="timed repeats per layer (default 15)")
    parser.add_argument("--size", type=int, default=128, help="image size fed to SimpleNet (default 128)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak memory pass")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_conv: --device cuda given but no CUDA GPU is available")
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    print(f"custom_conv2d vs F.conv2d, forward+backward, batch {args.batch}, {args.size}x{args.size} input, "
          f"device {device}, threads {torch.get_num_threads()}, median of {args.repeat} (torch {torch.__version__})")
    header = f"{'layer':<12} {'input':>16} {'custom ms':>10} {'F.conv2d ms':>12} {'ratio':>6}"
    if not args.no_memory:
        header += f" {'custom MiB':>11} {'F.conv2d MiB':>13} {'mem ratio':>9}"
    print(header)
    total = [0.0, 0.0]
    total_mem = [0, 0]
    for layer in SIMPLENET_LAYERS:
        t_custom, t_ref = time_layer(layer, args.batch, args.size, device, args.repeat)
        total[0] += t_custom
        total[1] += t_ref
        hw = args.size // layer[6]
        shape = f"{layer[1]}x{hw}x{hw}"
        line = f"{layer[0]:<12} {shape:>16} {t_custom * 1e3:>10.2f} {t_ref * 1e3:>12.2f} {t_custom / t_ref:>6.2f}"
        if not args.no_memory:
            m_custom, m_ref = peak_memory_layer(layer, args.batch, args.size, device)
            total_mem[0] = max(total_mem[0], m_custom)
            total_mem[1] = max(total_mem[1], m_ref)
            line += f" {m_custom / 2**20:>11.1f} {m_ref / 2**20:>13.1f} {m_custom / max(m_ref, 1):>9.2f}"
        print(line, flush=True)
    line = f"{'total':<12} {'':>16} {total[0] * 1e3:>10.2f} {total[1] * 1e3:>12.2f} {total[0] / total[1]:>6.2f}"
    if not args.no_memory:
        line += (f" {total_mem[0] / 2**20:>11.1f} {total_mem[1] / 2**20:>13.1f}"
                 f" {total_mem[0] / max(total_mem[1], 1):>9.2f}")
    print(line)
    if not args.no_memory:
        print("memory: extra peak bytes during forward+backward of one layer; 'total' row = the largest layer")


if __name__ == "__main__":
    main()
