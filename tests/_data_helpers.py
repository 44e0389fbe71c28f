"""Helpers shared by the data tests (not a test module): tiny synthetic datasets
and a mean-colour-only baseline classifier (NumPy only)."""
import numpy as np

from custom_dataloader import MiniPlacesLoader, build_synthetic_dataset

TINY = dict(num_classes=3, train_per_class=4, val_per_class=2, test_per_class=1, image_size=32)


def make_tiny_dataset(root, **overrides):
    """Build a tiny synthetic dataset at `root` (3 classes of 32x32 images unless overridden)."""
    return build_synthetic_dataset(root, **dict(TINY, **overrides))


def mean_colours(dataset):
    """Per-image RGB means `(N, 3)` in [0, 1] and labels `(N,)` of a MiniPlacesLoader without transforms."""
    feats = np.stack([dataset[i][0].reshape(-1, 3).mean(axis=0) / 255.0 for i in range(len(dataset))])
    labels = np.array([label for _, label in dataset.samples])
    return feats, labels


def nearest_mean_colour_accuracy(root):
    """Accuracy on val of the nearest-class-mean classifier on per-image mean RGB, fitted on train."""
    train = MiniPlacesLoader(root, "train")
    val = MiniPlacesLoader(root, "val")
    f_tr, y_tr = mean_colours(train)
    f_va, y_va = mean_colours(val)
    centroids = np.stack([f_tr[y_tr == k].mean(axis=0) for k in range(train.num_classes)])
    pred = np.argmin(((f_va[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == y_va).mean()), 1.0 / train.num_classes
