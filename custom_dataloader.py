"""The MiniPlaces dataset reader (OpenCV) and the embedded synthetic dataset.

On-disk layout (MiniPlaces, and the synthetic set alike)::

    root/train.txt          lines "<relpath> <label>", e.g. "train/a/abbey/00000001.jpg 0"
    root/val.txt            lines "<relpath> <label>", e.g. "val/00000001.jpg 71"
    root/test.txt           optional; "<relpath>" (labels may be missing)
    root/categories.txt     optional; lines "/a/abbey 0"
    root/images/<relpath>   the JPEG files

:class:`MiniPlacesLoader` reads one split; every data problem raises
:class:`DatasetError` with one message naming the file (and line).

:func:`ensure_synthetic_dataset` builds (once, cached) a deterministic synthetic
dataset in the same layout: 128x128 JPEGs of 10+ pattern classes (stripes,
checkerboards, rings, discs, polygons, ...) whose foreground/background colours
are drawn from one distribution for every class, so only shape and texture tell
the classes apart.  Build it from the command line with::

    python custom_dataloader.py [ROOT] [--seed 0]

OpenCV threads: the reader never changes OpenCV's thread count itself (that is
process-wide state).  Pass :func:`worker_init_fn` to ``DataLoader`` to turn
OpenCV's own threading off inside each worker (``cv2.setNumThreads(0)``; the
workers are the parallelism) and to seed NumPy / ``random`` from torch's
per-worker seed.
"""

import hashlib
import json
import os
import random
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "DatasetError",
    "MiniPlacesLoader",
    "read_image_rgb",
    "worker_init_fn",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_VERSION",
    "render_synthetic_image",
    "build_synthetic_dataset",
    "synthetic_dataset_root",
    "ensure_synthetic_dataset",
]

SPLITS = ("train", "val", "test")
DOWNLOAD_HINT = ("run `bash download_dataset.sh` to fetch MiniPlaces, "
                 "or omit the data folder to use the embedded synthetic dataset")


class DatasetError(Exception):
    """A problem with the data on disk; the message names the file (and line)."""


# ============================================================================ reader
def read_image_rgb(path):
    """Decode an image file to a contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises :class:`DatasetError` naming ``path`` if it cannot be decoded.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        if not os.path.isfile(path):
            raise DatasetError(f"image file not found: {path}")
        raise DatasetError(f"cannot decode image (corrupt or not an image): {path}")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def _read_text_lines(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None


def _parse_list(path, labels_required):
    """Parse a split list -> list of ``(relpath, label, line_no)``; label -1 if absent."""
    if not os.path.isfile(path):
        raise DatasetError(f"list file not found: {path}")
    entries = []
    expected = "'<relative path> <label>'" if labels_required else "'<relative path> [<label>]'"
    for line_no, line in enumerate(_read_text_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or (labels_required and len(fields) != 2):
            raise DatasetError(f"{path}:{line_no}: malformed line {line.strip()!r}, expected {expected}")
        label = -1
        if len(fields) == 2:
            try:
                label = int(fields[1])
            except ValueError:
                raise DatasetError(f"{path}:{line_no}: label {fields[1]!r} is not an integer") from None
            if label < 0:
                raise DatasetError(f"{path}:{line_no}: negative label {label}")
        entries.append((fields[0], label, line_no))
    if not entries:
        raise DatasetError(f"list file is empty: {path}")
    return entries


def _parse_categories(path):
    """``/a/abbey 0`` lines -> list of names indexed by class (``'abbey'``)."""
    by_index = {}
    for line_no, line in enumerate(_read_text_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(f"{path}:{line_no}: malformed line {line.strip()!r}, expected '/a/abbey 0'")
        try:
            index = int(fields[1])
        except ValueError:
            raise DatasetError(f"{path}:{line_no}: class index {fields[1]!r} is not an integer") from None
        if index < 0 or index in by_index:
            raise DatasetError(f"{path}:{line_no}: class index {index} is negative or repeated")
        name = fields[0].lstrip("/")
        if len(name) > 2 and name[1] == "/":  # "/a/abbey" -> "abbey"
            name = name[2:]
        by_index[index] = name
    if not by_index:
        raise DatasetError(f"categories file is empty: {path}")
    if sorted(by_index) != list(range(len(by_index))):
        missing = sorted(set(range(max(by_index) + 1)) - set(by_index))
        raise DatasetError(f"{path}: class indices must be 0..{len(by_index) - 1}; missing {missing[:5]}")
    return [by_index[i] for i in range(len(by_index))]


class MiniPlacesLoader(Dataset):
    """One split of MiniPlaces (or any folder in its layout).

    Args:
        root_folder: the data folder (holding ``train.txt``, ``val.txt``, ``images/``).
        split: ``"train"``, ``"val"`` or ``"test"`` (reads ``<split>.txt``).
        transforms: callable applied to the ``(H, W, 3)`` uint8 RGB image, or ``None``.
        num_classes: number of classes; default from ``categories.txt`` if present,
            else ``max(label in train.txt) + 1``.

    Attributes:
        samples: list of ``(image path, label)``; label ``-1`` for unlabelled test entries.
        num_classes: int.  classes: list of ``num_classes`` names.

    ``dataset[i]`` -> ``(img, label)``: ``img`` is ``transforms(image)`` or, without
    transforms, the contiguous ``(H, W, 3)`` uint8 RGB array; ``label`` an int.
    List problems and missing images raise :class:`DatasetError` here; a corrupt
    image raises it when loaded.
    """

    def __init__(self, root_folder, split="train", transforms=None, num_classes=None):
        root = Path(root_folder)
        if not root.is_dir():
            raise DatasetError(f"data folder '{root}' does not exist; {DOWNLOAD_HINT}")
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.root = root
        self.split = split
        self.transforms = transforms

        list_path = root / f"{split}.txt"
        entries = _parse_list(list_path, labels_required=(split != "test"))

        categories_path = root / "categories.txt"
        names = _parse_categories(categories_path) if categories_path.is_file() else None
        if num_classes is not None:
            num_classes = int(num_classes)
            if num_classes <= 0:
                raise DatasetError(f"num_classes must be positive, got {num_classes}")
            if names is not None and len(names) != num_classes:
                raise DatasetError(f"{categories_path} lists {len(names)} classes "
                                   f"but num_classes={num_classes} was requested")
            source = f"num_classes={num_classes}"
        elif names is not None:
            num_classes, source = len(names), str(categories_path)
        else:
            train_path = root / "train.txt"
            train_entries = entries if split == "train" else _parse_list(train_path, labels_required=True)
            num_classes, source = max(label for _, label, _ in train_entries) + 1, str(train_path)
        self.num_classes = num_classes
        self.classes = list(names) if names is not None else [str(i) for i in range(num_classes)]

        images_dir = root / "images"
        samples = []
        missing = []
        for relpath, label, line_no in entries:
            if label >= num_classes:
                raise DatasetError(f"{list_path}:{line_no}: label {label} out of range "
                                   f"[0, {num_classes}) (number of classes from {source})")
            path = str(images_dir / relpath)
            if not os.path.isfile(path):
                missing.append((path, line_no))
            samples.append((path, label))
        if missing:
            path, line_no = missing[0]
            more = f" ({len(missing)} of {len(entries)} listed images are missing)" if len(missing) > 1 else ""
            raise DatasetError(f"image file not found: {path} (listed in {list_path}:{line_no}){more}")
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        img = read_image_rgb(path)
        if self.transforms is not None:
            img = self.transforms(img)
        return img, label

    def __repr__(self):
        return (f"{self.__class__.__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"samples={len(self.samples)}, num_classes={self.num_classes})")


def worker_init_fn(worker_id):
    """``DataLoader(worker_init_fn=...)``: no OpenCV threads inside a worker, and
    NumPy / ``random`` seeded from the worker's torch seed (the kit's transforms
    use torch's RNG only; this is for any other code)."""
    del worker_id
    cv2.setNumThreads(0)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ============================================================================ synthetic data
#: Bump when the generator's output changes; it is part of the cache key.
SYNTHETIC_VERSION = 2
_MARKER = ".synthetic_dataset.json"

#: Class names in label order; ``num_classes`` takes the first ones.
SYNTHETIC_CLASSES = (
    "horizontal_stripes", "vertical_stripes", "diagonal_stripes", "checkerboard", "concentric_rings",
    "discs", "squares", "triangles", "crosses", "dot_grid", "wavy_stripes", "grid_lines", "circle_outlines",
)


def _coords(size):
    """Pixel-centre coordinates ``(y, x)``, each ``(size, size)`` float32, origin at the centre."""
    c = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    return np.meshgrid(c, c, indexing="ij")


def _rotated(y, x, angle_deg):
    a = np.deg2rad(angle_deg)
    u = x * np.float32(np.cos(a)) + y * np.float32(np.sin(a))
    v = -x * np.float32(np.sin(a)) + y * np.float32(np.cos(a))
    return u, v


def _soft_square_wave(u, period, duty, phase):
    """Anti-aliased periodic bands along ``u``: 1 inside (fraction ``duty``), 0 outside."""
    t = np.mod(u / period + phase, 1.0)
    d_in = np.minimum(t, duty - t) * period
    d_out = -np.minimum(t - duty, 1.0 - t) * period
    return np.clip(0.5 + np.where(t < duty, d_in, d_out), 0.0, 1.0)


def _stripes(rng, y, x, s, base_angle, jitter):
    angle = base_angle + rng.uniform(-jitter, jitter)
    u, _ = _rotated(y, x, angle)
    return _soft_square_wave(u, rng.uniform(8, 22) * s, rng.uniform(0.35, 0.65), rng.uniform())


def _mask_horizontal_stripes(rng, y, x, s):
    return _stripes(rng, y, x, s, 90.0, 15.0)


def _mask_vertical_stripes(rng, y, x, s):
    return _stripes(rng, y, x, s, 0.0, 15.0)


def _mask_diagonal_stripes(rng, y, x, s):
    return _stripes(rng, y, x, s, rng.choice([45.0, 135.0]), 10.0)


def _mask_checkerboard(rng, y, x, s):
    u, v = _rotated(y, x, rng.uniform(-25, 25))
    cell = rng.uniform(8, 22) * s
    a = _soft_square_wave(u, 2 * cell, 0.5, rng.uniform())
    b = _soft_square_wave(v, 2 * cell, 0.5, rng.uniform())
    return a + b - 2 * a * b  # soft xor


def _mask_concentric_rings(rng, y, x, s):
    span = y.shape[0] * 0.4
    cy, cx = rng.uniform(-span, span, size=2)
    r = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    return _soft_square_wave(r, rng.uniform(9, 20) * s, rng.uniform(0.35, 0.65), rng.uniform())


def _mask_wavy_stripes(rng, y, x, s):
    u, v = _rotated(y, x, rng.uniform(0, 180))
    wobble = rng.uniform(3, 7) * s * np.sin(2 * np.pi * v / (rng.uniform(22, 45) * s) + rng.uniform(0, 2 * np.pi))
    return _soft_square_wave(u + wobble, rng.uniform(10, 22) * s, rng.uniform(0.35, 0.65), rng.uniform())


def _mask_grid_lines(rng, y, x, s):
    u, v = _rotated(y, x, rng.uniform(-25, 25))
    period = rng.uniform(10, 24) * s
    duty = rng.uniform(2.5, 5.0) * s / period
    a = _soft_square_wave(u, period, duty, rng.uniform())
    b = _soft_square_wave(v, period, duty, rng.uniform())
    return a + b - a * b  # soft or


def _mask_dot_grid(rng, y, x, s):
    u, v = _rotated(y, x, rng.uniform(0, 90))
    spacing = rng.uniform(14, 24) * s
    radius = rng.uniform(0.14, 0.24) * spacing
    du = (np.mod(u / spacing + rng.uniform(), 1.0) - 0.5) * spacing
    dv = (np.mod(v / spacing + rng.uniform(), 1.0) - 0.5) * spacing
    return np.clip(0.5 + radius - np.sqrt(du * du + dv * dv), 0.0, 1.0)


_SUB = 4  # cv2 drawing with 2 fractional bits of sub-pixel precision


def _poly_mask(size, polygons):
    mask = np.zeros((size, size), np.uint8)
    for poly in polygons:  # one at a time: overlaps give the union
        pts = np.round(np.asarray(poly) * _SUB).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=2)
    return mask.astype(np.float32) / 255.0


def _regular_polygon(cx, cy, radius, n_vertices, angle_deg):
    a = np.deg2rad(angle_deg) + 2 * np.pi * np.arange(n_vertices) / n_vertices
    return np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], axis=1)


def _centres(rng, size, count, margin):
    return rng.uniform(margin, size - margin, size=(count, 2))


def _mask_discs(rng, y, x, s):
    size = y.shape[0]
    mask = np.zeros((size, size), np.uint8)
    for cx, cy in _centres(rng, size, rng.integers(2, 7), 10 * s):
        r = rng.uniform(10, 22) * s
        cv2.circle(mask, (int(round(cx * _SUB)), int(round(cy * _SUB))), int(round(r * _SUB)), 255,
                   thickness=-1, lineType=cv2.LINE_AA, shift=2)
    return mask.astype(np.float32) / 255.0


def _mask_squares(rng, y, x, s):
    size = y.shape[0]
    # roughly axis-aligned (vertices at 45 +- 12 degrees): horizontal and vertical edges
    polys = [_regular_polygon(cx, cy, rng.uniform(13, 26) * s, 4, 45 + rng.uniform(-12, 12))
             for cx, cy in _centres(rng, size, rng.integers(2, 6), 10 * s)]
    return _poly_mask(size, polys)


def _mask_triangles(rng, y, x, s):
    size = y.shape[0]
    polys = []
    for cx, cy in _centres(rng, size, rng.integers(2, 6), 10 * s):
        # apex up or down (+- 12 degrees): a horizontal base and two 60-degree sides
        tri = _regular_polygon(cx, cy, rng.uniform(14, 28) * s, 3, rng.choice([-90.0, 90.0]) + rng.uniform(-12, 12))
        polys.append(tri + rng.normal(0, 1.5 * s, size=tri.shape))
    return _poly_mask(size, polys)


def _mask_crosses(rng, y, x, s):
    size = y.shape[0]
    bars = []
    for cx, cy in _centres(rng, size, rng.integers(1, 5), 14 * s):
        arm, half_w = rng.uniform(14, 26) * s, rng.uniform(3, 6) * s
        angle = np.deg2rad(45 + rng.uniform(-12, 12))  # diagonal crosses (X shapes)
        c, si = np.cos(angle), np.sin(angle)
        for (a, b) in ((arm, half_w), (half_w, arm)):
            corners = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
            bars.append(corners @ np.array([[c, si], [-si, c]]) + [cx, cy])
    return _poly_mask(size, bars)


def _mask_circle_outlines(rng, y, x, s):
    size = y.shape[0]
    mask = np.zeros((size, size), np.uint8)
    for cx, cy in _centres(rng, size, rng.integers(2, 6), 10 * s):
        r = rng.uniform(10, 22) * s
        cv2.circle(mask, (int(round(cx * _SUB)), int(round(cy * _SUB))), int(round(r * _SUB)), 255,
                   thickness=max(2, int(round(rng.uniform(3, 6) * s))), lineType=cv2.LINE_AA, shift=2)
    return mask.astype(np.float32) / 255.0


_MASKS = {
    "horizontal_stripes": _mask_horizontal_stripes,
    "vertical_stripes": _mask_vertical_stripes,
    "diagonal_stripes": _mask_diagonal_stripes,
    "checkerboard": _mask_checkerboard,
    "concentric_rings": _mask_concentric_rings,
    "discs": _mask_discs,
    "squares": _mask_squares,
    "triangles": _mask_triangles,
    "crosses": _mask_crosses,
    "dot_grid": _mask_dot_grid,
    "wavy_stripes": _mask_wavy_stripes,
    "grid_lines": _mask_grid_lines,
    "circle_outlines": _mask_circle_outlines,
}


def _random_colour_pair(rng):
    """Foreground and background RGB, iid uniform in the RGB cube, at least 70 apart."""
    while True:
        fg, bg = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        if np.linalg.norm(fg - bg) >= 70.0:
            return fg, bg


def render_synthetic_image(rng, class_name, image_size=128):
    """Draw one synthetic image of ``class_name`` -> ``(S, S, 3)`` uint8 RGB.

    The pattern's geometry, its two colours and their contrast, a faint smooth
    background texture, distractor strokes and blobs, blur and pixel noise are
    all drawn from ``rng`` (``np.random.Generator``), from the same
    distributions for every class: only the pattern's shape carries the label.
    """
    size = int(image_size)
    s = size / 128.0
    y, x = _coords(size)
    mask = _MASKS[class_name](rng, y, x, s).astype(np.float32)
    fg, bg = _random_colour_pair(rng)
    strength = rng.uniform(0.45, 1.0)
    img = bg + (strength * mask)[..., None] * (fg - bg)
    # faint low-frequency texture, per channel: random 4x4 DCT coefficients
    basis = np.cos(np.pi * np.outer(np.arange(size) + 0.5, np.arange(4)) / size).astype(np.float32)
    coeffs = rng.standard_normal(size=(3, 4, 4), dtype=np.float32) * np.float32(rng.uniform(0, 12))
    img += (basis @ coeffs @ basis.T).transpose(1, 2, 0)
    # distractors in other colours: thin strokes and small blobs
    for _ in range(rng.integers(0, 4)):
        p = np.round(rng.uniform(0, size, size=4) * _SUB).astype(int)
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour,
                 thickness=1, lineType=cv2.LINE_AA, shift=2)
    for _ in range(rng.integers(0, 2)):
        centre = tuple(int(v) for v in np.round(rng.uniform(0, size, size=2) * _SUB))
        axes = tuple(int(v) for v in np.round(rng.uniform(2, 5, size=2) * s * _SUB))
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0.0, 360.0, colour,
                    thickness=-1, lineType=cv2.LINE_AA, shift=2)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(0.3, 1.1) * s))
    # pixel noise: uniform, standard deviation 3..18 levels (cheaper than Gaussian)
    sigma = rng.uniform(3, 18)
    img += (rng.random(size=img.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(sigma * 12 ** 0.5)
    np.clip(img, 0, 255, out=img)
    return np.rint(img, out=img).astype(np.uint8)


def _synthetic_params(seed, num_classes, train_per_class, val_per_class, test_per_class, image_size, quality):
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(SYNTHETIC_CLASSES)}], got {num_classes}")
    for name, n in (("train_per_class", train_per_class), ("val_per_class", val_per_class),
                    ("test_per_class", test_per_class)):
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    params = {"version": SYNTHETIC_VERSION, "seed": int(seed), "num_classes": int(num_classes),
              "train_per_class": int(train_per_class), "val_per_class": int(val_per_class),
              "test_per_class": int(test_per_class), "image_size": int(image_size), "quality": int(quality)}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return params, key


def _marker_key(root):
    try:
        with open(Path(root) / _MARKER, "r", encoding="utf-8") as f:
            return json.load(f).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def _write_split(tmp, split, split_code, params, classes):
    """Render and write one split; returns the list-file lines."""
    k, seed, size, quality = params["num_classes"], params["seed"], params["image_size"], params["quality"]
    n = params[f"{split}_per_class"]
    labels = np.repeat(np.arange(k), n)
    if split != "train":  # val / test: flat folder, classes interleaved (as in MiniPlaces)
        labels = np.random.default_rng([seed, split_code, 2**31]).permutation(labels)
    lines = []
    for index, label in enumerate(labels):
        name = classes[label]
        if split == "train":
            relpath = f"train/{name}/{index % n + 1:08d}.jpg"
        else:
            relpath = f"{split}/{index + 1:08d}.jpg"
        rng = np.random.default_rng([seed, split_code, index])
        img = render_synthetic_image(rng, name, size)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise DatasetError(f"cannot encode synthetic image {relpath}")
        out = tmp / "images" / relpath
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buf.tobytes())
        lines.append(relpath if split == "test" else f"{relpath} {label}")
    return lines


def build_synthetic_dataset(root, seed=0, num_classes=10, train_per_class=240, val_per_class=50,
                            test_per_class=20, image_size=128, quality=90):
    """Build the synthetic dataset at ``root`` (MiniPlaces layout) unless it is already there.

    Deterministic: the same arguments give byte-identical files (on one machine;
    another CPU or OpenCV build may round a few pixels differently).  Written
    atomically (built in a temporary folder beside ``root``, then renamed); a
    marker file ``root/.synthetic_dataset.json`` records the generator version
    and parameters, and a ``root`` whose marker matches is reused as it is.  A
    ``root`` holding an older synthetic build is replaced; any other existing,
    non-empty ``root`` raises :class:`DatasetError` rather than being touched.

    Returns ``root`` as a ``pathlib.Path``.
    """
    root = Path(root).expanduser().absolute()
    params, key = _synthetic_params(seed, num_classes, train_per_class, val_per_class,
                                    test_per_class, image_size, quality)
    if _marker_key(root) == key:
        return root

    def replaceable():
        return (not root.exists() or (root.is_dir() and not any(root.iterdir()))
                or _marker_key(root) is not None)

    if not replaceable():
        raise DatasetError(f"refusing to build the synthetic dataset into '{root}': "
                           "the folder exists and is not a synthetic dataset")
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root.parent / f".{root.name}.building-{tag}"
    old = root.parent / f".{root.name}.old-{tag}"
    try:
        tmp.mkdir()
        classes = SYNTHETIC_CLASSES[:num_classes]
        for split_code, split in enumerate(SPLITS):
            lines = _write_split(tmp, split, split_code, params, classes)
            (tmp / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "categories.txt").write_text(
            "".join(f"/{name[0]}/{name} {i}\n" for i, name in enumerate(classes)), encoding="utf-8")
        (tmp / _MARKER).write_text(json.dumps({"key": key, "params": params}, indent=1, sort_keys=True) + "\n",
                                   encoding="utf-8")
        if root.exists():
            if _marker_key(root) == key:  # someone else finished the same build meanwhile
                return root
            if not replaceable():
                raise DatasetError(f"refusing to replace '{root}': it is not a synthetic dataset")
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            if _marker_key(root) == key:  # lost a race against an identical build
                return root
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return root


def synthetic_dataset_root(cache_dir=None):
    """Where the default synthetic dataset lives: ``<cache>/synthetic`` with
    ``<cache>`` = ``cache_dir``, else ``$MINIPLACES_KIT_CACHE``, else
    ``~/.cache/miniplaces_kit``."""
    if cache_dir is None:
        cache_dir = os.environ.get("MINIPLACES_KIT_CACHE") or Path.home() / ".cache" / "miniplaces_kit"
    return Path(cache_dir).expanduser().absolute() / "synthetic"


def ensure_synthetic_dataset(root=None, seed=0, **kwargs):
    """Build the synthetic dataset if needed (see :func:`build_synthetic_dataset`,
    whose keyword arguments ``kwargs`` are) and return its root; ``root``
    defaults to :func:`synthetic_dataset_root`."""
    return build_synthetic_dataset(synthetic_dataset_root() if root is None else root, seed=seed, **kwargs)


def _main(argv=None):
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Build the embedded synthetic MiniPlaces-layout dataset.")
    parser.add_argument("root", nargs="?", default=None, help="target folder (default: the cache)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = ensure_synthetic_dataset(args.root, seed=args.seed)
    print(f"synthetic dataset ready at {root} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    _main()
