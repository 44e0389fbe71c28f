"""Benchmark of the fast path (staff tool): images/s and seconds per epoch of the runner's training loop
for SimpleNet, the default CNN and the ViT, lever by lever, next to the plain OpenCV-loader run, and the
share of the device's peak FLOP/s reached.

    python tools/bench_gpu.py                     # on a GPU: MiniPlaces-scale synthetic set (100 classes,
                                                  #   100k train / 10k val at 128 px), every model and lever
    python tools/bench_gpu.py --small --gpu -1    # CPU sizes (10 classes, 2000 / 200 images)
    python tools/bench_gpu.py --loader-only       # cache build and load speed, loader-only images/s
    python tools/bench_gpu.py --models simplenet --steps 300 --json out.json

The synthetic set is built once on the machine (parallel, under the kit's cache, `--data` to choose) in
MiniPlaces layout: 128x128 JPEGs of the embedded dataset's patterns (class c draws pattern c mod 13; it
measures throughput, not accuracy). Rows are cumulative: `opencv` is the plain runner (JPEG decoding and
OpenCV augmentation in `-j` workers), then `+cache` (--decoded-cache), `+gpu-augment`, `+amp` (bf16),
`+channels-last`, `+fused-optim`, and `+compile` (with `--with-compile`; on by default on CUDA). Each row
runs `main.train_one_epoch` for `--warmup` batches, then times `--steps` batches (0: one full epoch).
FLOPs per image of a training step (forward + backward) come from `torch.utils.flop_counter.FlopCounterMode`;
peak FLOP/s from a table by device name (bf16 dense peak with --amp, fp32 otherwise; TF32 stays off as in
the runner), "unknown" on CPU and unlisted devices.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODELS = {"simplenet": ["--use-simplenet"], "default_cnn": [], "vit": ["--use-vit"]}
LEVERS = [("opencv", []), ("+cache", ["--decoded-cache"]), ("+gpu-augment", ["--gpu-augment"]),
          ("+amp", ["--amp"]), ("+channels-last", ["--channels-last"]), ("+fused-optim", ["--fused-optim"]),
          ("+compile", ["--compile"])]
#: Dense peak FLOP/s (bf16, fp32 without TF32) by a substring of `torch.cuda.get_device_name()`; first match.
PEAK_FLOPS = [("H200", 989e12, 67e12), ("H100 PCIe", 756e12, 51e12), ("H100", 989e12, 67e12),
              ("A100", 312e12, 19.5e12), ("L40S", 362e12, 91.6e12), ("L4", 121e12, 30.3e12),
              ("A10", 125e12, 31.2e12), ("RTX 4090", 165e12, 82.6e12), ("V100", 0.0, 15.7e12)]
FULL = dict(classes=100, train=100_000, val=10_000)
SMALL = dict(classes=10, train=2000, val=200)


# ------------------------------------------------------------------------------------------ data
def _render_chunk(root, items, size, quality):
    """Worker: render and write `items` = [(relpath, label, seed)] as JPEGs."""
    import cv2

    import custom_dataloader as cd

    cv2.setNumThreads(1)
    for rel, label, seed in items:
        img = cd.render_synthetic_image(np.random.default_rng(seed), cd.SYNTHETIC_CLASSES[label % len(cd.SYNTHETIC_CLASSES)],
                                        image_size=size)
        path = os.path.join(root, "images", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"cannot write {path}")
    return len(items)


def build_bench_dataset(root, classes, n_train, n_val, size=128, workers=None, seed=0):
    """MiniPlaces-layout synthetic set at `root` (reused when its marker matches). Returns `root`."""
    from tqdm import tqdm

    root = Path(root)
    spec = {"classes": classes, "train": n_train, "val": n_val, "size": size, "seed": seed, "version": 1}
    marker = root / ".bench_dataset.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    root.mkdir(parents=True, exist_ok=True)
    train = [(f"train/{i % classes:03d}/{i:08d}.jpg", i % classes, [seed, 0, i]) for i in range(n_train)]
    val = [(f"val/{i:08d}.jpg", i % classes, [seed, 1, i]) for i in range(n_val)]
    items = train + val
    chunks = [items[s:s + 500] for s in range(0, len(items), 500)]
    with tqdm(total=len(items), desc="building the benchmark set", unit="img") as bar, \
            concurrent.futures.ProcessPoolExecutor(max_workers=workers or os.cpu_count(),  # spawn: no fork deadlock
                                                   mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in concurrent.futures.as_completed([pool.submit(_render_chunk, str(root), c, size, 90)
                                                     for c in chunks]):
            bar.update(done.result())
    for name, entries in (("train", train), ("val", val)):
        (root / f"{name}.txt").write_text("".join(f"{rel} {label}\n" for rel, label, _ in entries))
    (root / "categories.txt").write_text("".join(f"/c/class{c:03d} {c}\n" for c in range(classes)))
    marker.write_text(json.dumps(spec))  # last: a killed build is redone
    return root


# ------------------------------------------------------------------------------------------ measuring
def peak_flops(device, amp):
    """Dense peak FLOP/s of `device` for the run's precision, or None (CPU, unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, bf16, fp32 in PEAK_FLOPS:
        if key in name:
            return (bf16 if amp else fp32) or None
    return None


def train_flops_per_image(model, args, img_size, num_classes):
    """FLOPs of one training step (forward + backward) per image, counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, 3, img_size, img_size, device=args.device)
    y = torch.randint(num_classes, (2,), device=args.device)
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def run_config(data, model_flags, lever_flags, opts):
    """Build the runner's pieces for these flags and time `train_one_epoch`. Returns a result dict."""
    import fast_path
    import main as runner

    argv = [str(data), "-b", str(opts.batch_size), "-j", str(opts.workers), "--img-size", str(opts.img_size),
            "--epochs", "1", "--seed", "0", "-p", str(opts.print_freq)] + model_flags + lever_flags
    if opts.gpu is not None:
        argv += ["--gpu", str(opts.gpu)]
    args = runner.get_args_parser().parse_args(argv)
    args.device = runner.select_device(args)
    args.rank, args.world_size, args.distributed, args.local_rank = 0, 1, False, 0
    runner.fill_defaults(args, embedded=False)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    runner.seed_everything(0)
    train_loader, _, num_classes, _ = runner.make_loaders(args, need_train=True)
    model = fast_path.prepare_model(runner.build_model(args, num_classes), args)
    flops = train_flops_per_image(model, args, args.img_size, num_classes)
    optimizer = runner.build_optimizer(args, model)
    scheduler = runner.build_scheduler(args, optimizer, len(train_loader))
    net = fast_path.training_module(model, args)
    criterion = nn.CrossEntropyLoss()

    def timed(batches):
        args.limit_batches = batches
        sync(args.device)
        t0 = time.perf_counter()
        runner.train_one_epoch(net, train_loader, criterion, optimizer, scheduler, 0, args)
        sync(args.device)
        return time.perf_counter() - t0

    if opts.warmup:
        timed(opts.warmup)
    steps = opts.steps if opts.steps else len(train_loader)
    steps = min(steps, len(train_loader))
    seconds = timed(steps)
    images_per_s = steps * args.batch_size / seconds
    peak = peak_flops(args.device, args.amp)
    n_train = len(train_loader.sampler)
    return {"images_per_s": images_per_s, "s_per_epoch": n_train / images_per_s, "train_images": n_train,
            "gflops_per_image": flops / 1e9, "tflops_per_s": flops * images_per_s / 1e12,
            "peak_share": (flops * images_per_s / peak) if peak else None, "device": str(args.device)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_only(data, opts):
    """Cache build (fresh cache folder) and load speed, then images/s of iterating each train loader
    with no model: the plain OpenCV loader, the cache + OpenCV loader, the device loader."""
    import decoded_cache
    import main as runner

    results = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        t0 = time.perf_counter()
        split = decoded_cache.DecodedSplit(data, "train", size=128, cache_dir=cache_dir, workers=opts.workers or None,
                                           verbose=False)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        split = decoded_cache.DecodedSplit(data, "train", size=128, cache_dir=cache_dir, verbose=False)
        device = runner.select_device(argparse.Namespace(gpu=opts.gpu))
        images = split.as_tensor(device)
        sync(device)
        load = time.perf_counter() - t0
        del images
        n = len(split)
        results["cache build"] = {"images_per_s": n / build, "seconds": build, "images": n}
        results["cache load (open + copy to device)"] = {"images_per_s": n / load, "seconds": load, "images": n}
        os.environ["MINIPLACES_KIT_CACHE"] = cache_dir
        for name, flags in (("opencv loader", []), ("cache + opencv loader", ["--decoded-cache"]),
                            ("device loader (gpu-augment)", ["--gpu-augment"])):
            argv = [str(data), "-b", str(opts.batch_size), "-j", str(opts.workers), "--img-size",
                    str(opts.img_size)] + flags + ([] if opts.gpu is None else ["--gpu", str(opts.gpu)])
            args = runner.get_args_parser().parse_args(argv)
            args.device = runner.select_device(args)
            args.rank, args.world_size, args.distributed = 0, 1, False
            runner.fill_defaults(args, embedded=False)
            loader, _, _, _ = runner.make_loaders(args, need_train=True)
            steps = min(opts.steps or len(loader), len(loader))
            sync(args.device)
            t0 = time.perf_counter()
            for i, (x, _) in enumerate(loader):
                x = x.to(args.device, non_blocking=True)
                if i + 1 >= steps:
                    break
            sync(args.device)
            seconds = time.perf_counter() - t0
            results[name] = {"images_per_s": steps * args.batch_size / seconds, "seconds": seconds,
                             "images": steps * args.batch_size}
        del os.environ["MINIPLACES_KIT_CACHE"]
    return results


# ------------------------------------------------------------------------------------------ main
def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help=f"CPU sizes: {SMALL}")
    p.add_argument("--classes", type=int, default=None)
    p.add_argument("--train", type=int, default=None, help="training images (default 100000; --small 2000)")
    p.add_argument("--val", type=int, default=None, help="validation images (default 10000; --small 200)")
    p.add_argument("--data", default=None, help="where the synthetic set is built (default: under the kit's cache)")
    p.add_argument("--models", default="simplenet,default_cnn,vit", help="comma-separated: " + ",".join(MODELS))
    p.add_argument("--levers", default=None,
                   help="comma-separated row names to run (default: all; +compile only on CUDA or --with-compile)")
    p.add_argument("--with-compile", action="store_true", help="also time +compile on CPU")
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("-j", "--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader workers")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="timed batches per row (0: one full epoch)")
    p.add_argument("--warmup", type=int, default=20, help="untimed batches per row first")
    p.add_argument("-p", "--print-freq", type=int, default=50, help="the runner's print interval (host syncs)")
    p.add_argument("--gpu", type=int, default=None, help="as main.py: -1 for CPU")
    p.add_argument("--loader-only", action="store_true", help="cache build/load and loader images/s only")
    p.add_argument("--json", default=None, help="also write the results here")
    opts = p.parse_args(argv)
    sizes = dict(SMALL if opts.small else FULL)
    for key in ("classes", "train", "val"):
        if getattr(opts, key) is not None:
            sizes[key] = getattr(opts, key)
    if sizes["train"] < opts.batch_size:
        print(f"error: --train ({sizes['train']}) must be at least the batch size ({opts.batch_size})", file=sys.stderr)
        return 2
    import custom_dataloader
    import decoded_cache

    data = opts.data or (decoded_cache.cache_root().parent /
                         f"bench_{sizes['classes']}c_{sizes['train']}_{sizes['val']}")
    t0 = time.perf_counter()
    build_bench_dataset(data, sizes["classes"], sizes["train"], sizes["val"], workers=opts.workers or None)
    print(f"data: {data} ({sizes['classes']} classes, {sizes['train']} train / {sizes['val']} val, "
          f"ready in {time.perf_counter() - t0:.1f}s); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
          flush=True)
    out = {"sizes": sizes, "options": vars(opts)}
    try:
        if opts.loader_only:
            res = loader_only(data, opts)
            out["loader"] = res
            print("\n| loader | images/s | seconds | images |\n|---|---|---|---|")
            for name, r in res.items():
                print(f"| {name} | {r['images_per_s']:.0f} | {r['seconds']:.2f} | {r['images']} |")
        else:
            on_cuda = torch.cuda.is_available() and opts.gpu != -1
            chosen = opts.levers.split(",") if opts.levers else [n for n, _ in LEVERS
                                                                  if n != "+compile" or on_cuda or opts.with_compile]
            unknown = [n for n in chosen if n not in dict(LEVERS)] + [m for m in opts.models.split(",") if m not in MODELS]
            if unknown:
                print(f"error: unknown row or model {unknown[0]!r}", file=sys.stderr)
                return 2
            out["rows"] = []
            print("\n| model | row | images/s | s/epoch | GFLOP/img (train) | TFLOP/s | share of peak |\n"
                  "|---|---|---|---|---|---|---|", flush=True)
            for model in opts.models.split(","):
                flags, base = [], None
                for name, lever in LEVERS:
                    flags = flags + lever
                    if name not in chosen:
                        continue
                    r = run_config(data, MODELS[model], flags, opts)
                    base = base or r["images_per_s"]
                    r.update(model=model, row=name, flags=list(flags), speedup=r["images_per_s"] / base)
                    out["rows"].append(r)
                    share = "unknown" if r["peak_share"] is None else f"{100 * r['peak_share']:.1f}%"
                    print(f"| {model} | {name} | {r['images_per_s']:.0f} ({r['speedup']:.2f}x) | "
                          f"{r['s_per_epoch']:.1f} | {r['gflops_per_image']:.3f} | {fmt(r['tflops_per_s'], '.3f')} | "
                          f"{share} |", flush=True)
    except custom_dataloader.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
