"""Benchmark: overhead of `main.py`'s training loop versus a bare PyTorch loop (staff tool).

    python tools/bench_runner.py [--epochs 3] [--model default_cnn|simplenet] [--img-size 64] [-b 64] [-j 2]

Both loops train the same model on the same DataLoader (the embedded dataset with the kit's train
transforms); epochs alternate bare / runner so that machine noise hits both alike. The runner's loop adds
the progress bar, meters, accuracy, LR schedule and TensorBoard logging. Prints images/s of each and the
ratio runner/bare (target: at least 0.9).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def bare_epoch(model, loader, criterion, optimizer, scheduler, device):
    model.train()
    for input, target in loader:
        input, target = input.to(device), target.to(device)
        loss = criterion(model(input), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def main():
    import main as runner

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs of each loop")
    p.add_argument("--model", default="default_cnn", choices=["default_cnn", "simplenet"])
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-j", "--workers", type=int, default=2)
    opts = p.parse_args()

    args = runner.get_args_parser().parse_args(
        ["--img-size", str(opts.img_size), "-b", str(opts.batch_size), "-j", str(opts.workers), "--gpu", "-1"]
        + (["--use-simplenet"] if opts.model == "simplenet" else []))
    args.device = torch.device("cpu")
    args.rank, args.world_size, args.distributed = 0, 1, False
    runner.fill_defaults(args, embedded=True)
    args.epochs = 2 * opts.epochs + 1
    train_loader, _, num_classes, root = runner.make_loaders(args, need_train=True)
    model = runner.build_model(args, num_classes)
    criterion = nn.CrossEntropyLoss()
    optimizer = runner.build_optimizer(args, model)
    scheduler = runner.build_scheduler(args, optimizer, len(train_loader))
    images = len(train_loader) * args.batch_size
    print(f"data: {root}, {images} images/epoch at {args.img_size}px, model {runner.model_name(args)}, "
          f"batch {args.batch_size}, {args.workers} workers, {torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as logdir:
        writer = runner.make_writer(logdir)
        bare_epoch(model, train_loader, criterion, optimizer, scheduler, args.device)  # warm-up
        times = {"bare": [], "runner": []}
        for epoch in range(opts.epochs):
            t0 = time.perf_counter()
            bare_epoch(model, train_loader, criterion, optimizer, scheduler, args.device)
            times["bare"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            runner.train_one_epoch(model, train_loader, criterion, optimizer, scheduler, epoch, args, writer=writer)
            times["runner"].append(time.perf_counter() - t0)
        writer.close()
    bare, ours = statistics.median(times["bare"]), statistics.median(times["runner"])
    print(f"{'loop':<8}{'s/epoch':>10}{'img/s':>10}")
    print(f"{'bare':<8}{bare:>10.2f}{images / bare:>10.1f}")
    print(f"{'runner':<8}{ours:>10.2f}{images / ours:>10.1f}")
    print(f"throughput ratio runner/bare: {bare / ours:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
