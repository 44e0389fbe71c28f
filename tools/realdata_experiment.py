"""Experiment: why a CNN learns a small real-image set slowly, one cause at a time (staff tool).

    python tools/realdata_experiment.py [--data DIR] [--only NAME ...] [--epochs 6] [--img-size 128]
    python tools/realdata_experiment.py --data ~/.cache/miniplaces_kit/synthetic --epochs 16 --img-size 64 \
        --command='-b 64 --lr 0.1 --warmup 1 --gpu -1' --only reference old_reference plain_bn_cnn  # the demo's recipe

Every variant is the runner's own command, `main.py DATA --epochs 6 -b 32 --lr 0.05 --warmup 1 --gpu -1`
(plus the variant's flags), run in a child process on a small real-image set: the 10-class digit scans of
tests/_realdata.py (1500 train / 300 val, 128x128 JPEGs in MiniPlaces layout; built into DIR when DIR is
absent or empty). A variant changes one thing: a runner flag, the model (a patched `default_cnn_model`),
or the training transforms (a patched `get_train_transforms`). `--bn-recal` variants also report the
validation accuracy after re-estimating the BatchNorm statistics on un-augmented training images (is
the gap between train-time and eval-time statistics the problem?).

Prints one markdown row per variant: per-epoch validation top-1, the final and best epoch, the largest drop
from one epoch to the next, and the last epoch's training top-1. Runs are deterministic (seed 0).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import _realdata  # noqa: E402  (tests/_realdata.py: the digit scans and the plain BN CNN)
COMMAND = ["-b", "32", "--lr", "0.05", "--warmup", "1", "--gpu", "-1"]  # with --epochs 6 (the default)

# name -> (what it changes, extra runner flags, model patch, transform patch, bn recalibration)
VARIANTS = {
    "reference": ("the default CNN as it is", [], None, None, True),
    "old_reference": ("the previous reference (zero-init residual branches, 3x3/2 stem)", [], "old", None, True),
    "old_no_zero_init": ("previous reference, residual branches not zero-initialised", [], "old_no_zero_init",
                         None, False),
    "old_stem_stride1": ("previous reference, 3x3/1 stem (4x the compute)", [], "old_stem1", None, False),
    "old_no_aug": ("previous reference, no augmentation (eval transforms for training)", [], "old", "none", False),
    "old_mild_aug": ("previous reference, milder augmentation (crop scale 0.6-1, no rotation)", [], "old", "mild",
                     False),
    "old_lr_0.02": ("previous reference, --lr 0.02", ["--lr", "0.02"], "old", None, False),
    "old_lr_0.1": ("previous reference, --lr 0.1", ["--lr", "0.1"], "old", None, False),
    "old_warmup_0": ("previous reference, --warmup 0", ["--warmup", "0"], "old", None, False),
    "old_12_epochs": ("previous reference, --epochs 12", ["--epochs", "12"], "old", None, False),
    "ref_lr_0.1": ("the default CNN, --lr 0.1", ["--lr", "0.1"], None, None, False),
    "ref_warmup_0": ("the default CNN, --warmup 0", ["--warmup", "0"], None, None, False),
    "ref_no_aug": ("the default CNN, no augmentation", [], None, "none", False),
    "ref_mild_aug": ("the default CNN, milder augmentation", [], None, "mild", False),
    "plain_bn_cnn": ("plain 4-layer BN CNN (3x3 conv-BN-ReLU-maxpool, 32-256 channels)", [], "plain", None,
                     False),
    "simplenet": ("the given SimpleNet (--use-simplenet, same flags)", ["--use-simplenet"], None, None, False),
    "runner_defaults": ("the default CNN, runner defaults (--epochs 6 only: b 128, lr 0.1, default warmup)",
                        None, None, None, False),
}


def old_reference(conv_op, num_classes, zero_init=True, stem_stride=2):
    """The reference before this experiment (kept here to measure it): 3x3/2 stem, three stride-2 residual
    stages (32-64-128-256), zero-initialised last BatchNorm in every residual branch."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = conv_op(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = conv_op(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential(conv_op(cin, cout, kernel_size=1, stride=stride, padding=0, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)), inplace=True)
            return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)

    class Net(nn.Module):
        def __init__(self, widths=(32, 64, 128, 256)):
            super().__init__()
            self.stem = nn.Sequential(conv_op(3, widths[0], kernel_size=3, stride=stem_stride, padding=1,
                                              bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
            self.stages = nn.Sequential(*[Block(a, b, 2) for a, b in zip(widths[:-1], widths[1:])])
            self.fc = nn.Linear(widths[-1], num_classes)
            if zero_init:
                for block in self.stages:
                    nn.init.zeros_(block.bn2.weight)

        def forward(self, x):
            return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))

    return Net()


def patched_transforms(kind):
    import custom_augment as T
    import student_code

    if kind == "none":
        return student_code.get_val_transforms
    if kind == "mild":
        return lambda img_size=128: T.Compose([
            T.RandomSizedCrop(img_size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(), T.RandomColor(0.15),
            T.ToTensor(), T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)])
    raise ValueError(kind)


def build_model(kind, num_classes, conv_op=None):
    """The variant's model: `None` -> `student_code.default_cnn_model`, else one of the patches above."""
    import torch.nn as nn

    import student_code

    conv_op = conv_op or nn.Conv2d
    if kind is None:
        return student_code.default_cnn_model(conv_op=conv_op, num_classes=num_classes)
    builders = {"old": lambda: old_reference(conv_op, num_classes),
                "old_no_zero_init": lambda: old_reference(conv_op, num_classes, zero_init=False),
                "old_stem1": lambda: old_reference(conv_op, num_classes, stem_stride=1),
                "plain": lambda: _realdata.plain_bn_cnn(conv_op, num_classes)}
    return builders[kind]()


def bn_recalibrated_accuracy(run_dir, data, img_size, kind):
    """Val top-1 of the run's last checkpoint before and after re-estimating every BatchNorm's running
    statistics on the un-augmented training images (cumulative average over one pass)."""
    import torch
    import torch.nn as nn

    import custom_dataloader
    import student_code

    ckpt = torch.load(os.path.join(run_dir, "checkpoint.pth.tar"), map_location="cpu", weights_only=True)
    train = custom_dataloader.MiniPlacesLoader(data, "train", transforms=student_code.get_val_transforms(img_size))
    val = custom_dataloader.MiniPlacesLoader(data, "val", transforms=student_code.get_val_transforms(img_size))
    model = build_model(kind, train.num_classes)
    model.load_state_dict(ckpt["state_dict"])

    def val_top1():
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(val, batch_size=100):
                correct += (model(x).argmax(1) == y).sum().item()
        return 100.0 * correct / len(val)

    before = val_top1()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for x, _ in torch.utils.data.DataLoader(train, batch_size=100, shuffle=False):
            model(x)
    return before, val_top1()


def run_variant(name, data, epochs, img_size, log_dir, command):
    """Run one variant in this process (called in a child). Prints the runner's output."""
    import main as runner
    import student_code

    _, flags, model, transforms, _ = VARIANTS[name]
    if model is not None:
        student_code.default_cnn_model = lambda conv_op=None, num_classes=100: build_model(model, num_classes,
                                                                                            conv_op)
    if transforms is not None:
        student_code.get_train_transforms = patched_transforms(transforms)
    if flags is None:
        argv = [data, "--epochs", str(epochs), "--gpu", "-1"]
    else:
        argv = [data] + command + ["--epochs", str(epochs)] + flags  # a later flag wins
    argv += ["--img-size", str(img_size), "--log-dir", log_dir, "-p", "1000"]
    return runner.cli(argv)


EPOCH_RE = re.compile(r"epoch (\d+)/(\d+): train loss [\d.]+ acc@1 ([\d.]+) .*val acc@1 ([\d.]+)")
RUN_RE = re.compile(r"run folder: (\S+)")


def run_child(name, data, epochs, img_size, command, log_dir, timeout=None):
    """Run variant `name` in a child process -> `(completed process, [(train top-1, val top-1) per epoch])`."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, "--data", data,
                          "--epochs", str(epochs), "--img-size", str(img_size), f"--command={command}",
                          "--log-dir", log_dir], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return out, [(float(m.group(3)), float(m.group(4))) for m in EPOCH_RE.finditer(out.stdout)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="MiniPlaces-layout folder (default: digit scans in a temp dir)")
    p.add_argument("--only", nargs="*", default=None, choices=sorted(VARIANTS), help="variants to run")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--command", default=" ".join(COMMAND),
                   help="the runner flags every variant starts from (the demo's: --command='-b 64 --lr 0.1 --warmup 1')")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        sys.exit(run_variant(args.child, args.data, args.epochs, args.img_size, args.log_dir, args.command.split()))

    tmp = tempfile.mkdtemp(prefix="realdata_")
    data = args.data or os.path.join(tmp, "digits")
    if not os.path.isdir(data) or not os.listdir(data):
        _realdata.build_digit_scans(data)
    print(f"data: {data}; command: main.py DATA {args.command} --epochs {args.epochs} --img-size {args.img_size}",
          flush=True)
    print("| variant | what changes | val top-1 per epoch | final / best | largest drop | train top-1 | wall |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only or VARIANTS:
        t0 = time.time()
        out, epochs = run_child(name, data, args.epochs, args.img_size, args.command, os.path.join(tmp, "logs"))
        wall = time.time() - t0
        if out.returncode != 0 or not epochs:
            print(f"| {name} | failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]} |", flush=True)
            continue
        vals = [v for _, v in epochs]
        drop = max([0.0] + [a - b for a, b in zip(vals, vals[1:])])
        extra = ""
        if VARIANTS[name][4]:
            before, after = bn_recalibrated_accuracy(RUN_RE.search(out.stdout).group(1), data, args.img_size,
                                                     VARIANTS[name][2])
            extra = f"; BN re-estimated on clean train images: {before:.1f} -> {after:.1f}"
        print(f"| {name} | {VARIANTS[name][0]}{extra} | {', '.join(f'{v:.1f}' for v in vals)} | "
              f"{vals[-1]:.1f} / {max(vals):.1f} | {drop:.1f} | {epochs[-1][0]:.1f} | {wall:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
