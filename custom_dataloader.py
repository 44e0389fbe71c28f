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
dataset in the same layout: 128x128 JPEG scenes of one object each, 10 (up to 13)
classes of outline (disc, square, triangle, plus, star, crescent, ring, arrow, L, T,
...), at varied position and scale, stretched and rotated, plain or textured, on
cluttered backgrounds, partly occluded, blurred and noised.  Colours, textures,
clutter and noise are drawn from one distribution for every class, so only the
object's shape tells the classes apart.  Build it from the command line with::

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
SYNTHETIC_VERSION = 4
_MARKER = ".synthetic_dataset.json"

#: Class names in label order; ``num_classes`` takes the first ones.  A class is an object's outline.
SYNTHETIC_CLASSES = (
    "disc", "square", "triangle", "plus", "star", "crescent", "ring", "arrow", "ell", "tee",
    "hexagon", "heart", "diamond",
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


# ---------------------------------------------------------------- surface textures (shared by every class)
# Each maps (rng, y, x, s) -> a (S, S) float mask in [0, 1]; s = pattern scale (1 at 128 px).
def _texture_plain(rng, y, x, s):
    return np.zeros_like(y)


def _texture_stripes(rng, y, x, s):
    u, _ = _rotated(y, x, rng.uniform(0, 180))
    return _soft_square_wave(u, rng.uniform(8, 20) * s, rng.uniform(0.35, 0.65), rng.uniform())


def _texture_checks(rng, y, x, s):
    u, v = _rotated(y, x, rng.uniform(0, 90))
    cell = rng.uniform(6, 14) * s
    a = _soft_square_wave(u, 2 * cell, 0.5, rng.uniform())
    b = _soft_square_wave(v, 2 * cell, 0.5, rng.uniform())
    return a + b - 2 * a * b  # soft xor


def _texture_dots(rng, y, x, s):
    u, v = _rotated(y, x, rng.uniform(0, 90))
    spacing = rng.uniform(10, 20) * s
    radius = rng.uniform(0.15, 0.3) * spacing
    du = (np.mod(u / spacing + rng.uniform(), 1.0) - 0.5) * spacing
    dv = (np.mod(v / spacing + rng.uniform(), 1.0) - 0.5) * spacing
    return np.clip(0.5 + radius - np.sqrt(du * du + dv * dv), 0.0, 1.0)


def _texture_waves(rng, y, x, s):
    u, v = _rotated(y, x, rng.uniform(0, 180))
    wobble = rng.uniform(2, 6) * s * np.sin(2 * np.pi * v / (rng.uniform(20, 40) * s) + rng.uniform(0, 2 * np.pi))
    return _soft_square_wave(u + wobble, rng.uniform(8, 20) * s, rng.uniform(0.35, 0.65), rng.uniform())


def _texture_mottled(rng, y, x, s):
    return np.clip(0.5 + 0.6 * _smooth_noise(rng, y.shape[0], 1, octaves=(8, 16, 32))[..., 0], 0.0, 1.0)


_TEXTURES = (_texture_plain, _texture_stripes, _texture_checks, _texture_dots, _texture_waves, _texture_mottled)


# ---------------------------------------------------------------- outlines (the classes)
# Each maps rng -> (add, cut): lists of polygons in unit coordinates (object radius 1, y down); the
# silhouette is the union of `add` minus the union of `cut`.
def _circle(r=1.0, cx=0.0, cy=0.0):
    return _regular_polygon(cx, cy, r, 48, 0.0)


def _box(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _outline_disc(rng):
    return [_circle()], []


def _outline_square(rng):
    return [_box(-0.82, -0.82, 0.82, 0.82)], []


def _outline_triangle(rng):
    return [_regular_polygon(0.0, 0.2, 1.15, 3, -90.0)], []


def _outline_plus(rng):
    w = rng.uniform(0.22, 0.36)
    return [_box(-1, -w, 1, w), _box(-w, -1, w, 1)], []


def _outline_star(rng):
    t = np.deg2rad(-90.0) + np.pi * np.arange(10) / 5
    r = np.where(np.arange(10) % 2 == 0, 1.1, 1.1 * rng.uniform(0.38, 0.55))
    return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)], []


def _outline_crescent(rng):
    a = rng.uniform(0, 2 * np.pi)
    d = rng.uniform(0.4, 0.6)
    return [_circle()], [_circle(rng.uniform(0.8, 0.95), d * np.cos(a), d * np.sin(a))]


def _outline_ring(rng):
    return [_circle()], [_circle(rng.uniform(0.42, 0.62))]


def _outline_arrow(rng):
    w, h, neck = rng.uniform(0.18, 0.3), rng.uniform(0.6, 0.85), rng.uniform(-0.1, 0.25)
    shaft = _box(-1.0, -w, neck + 0.05, w)
    head = np.array([[neck, -h], [1.05, 0.0], [neck, h]])
    sign = rng.choice([-1.0, 1.0])  # pointing left or right
    return [p * [sign, 1.0] for p in (shaft, head)], []


def _outline_ell(rng):
    t = rng.uniform(0.28, 0.4)
    return [_box(-0.8, -1.0, -0.8 + 2 * t, 1.0), _box(-0.8, 1.0 - 2 * t, 0.85, 1.0)], []


def _outline_tee(rng):
    t = rng.uniform(0.25, 0.36)
    return [_box(-0.95, -1.0, 0.95, -1.0 + 2 * t), _box(-t, -1.0, t, 1.0)], []


def _outline_hexagon(rng):
    return [_regular_polygon(0.0, 0.0, 1.0, 6, rng.choice([0.0, 30.0]))], []


def _outline_heart(rng):
    t = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [np.stack([x, y + 2.5], axis=1) / 16.0], []


def _outline_diamond(rng):
    return [np.array([[0.0, -1.1], [0.7, 0.0], [0.0, 1.1], [-0.7, 0.0]])], []


_OUTLINES = {
    "disc": _outline_disc, "square": _outline_square, "triangle": _outline_triangle, "plus": _outline_plus,
    "star": _outline_star, "crescent": _outline_crescent, "ring": _outline_ring, "arrow": _outline_arrow,
    "ell": _outline_ell, "tee": _outline_tee, "hexagon": _outline_hexagon, "heart": _outline_heart,
    "diamond": _outline_diamond,
}


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


def _random_colours(rng):
    """The scene's colours ``(base, fg, bg)``, each ``(3,)``: the background's mean colour and the object's
    two; iid uniform in the RGB cube, the object's two at least 70 apart and its main colour ``bg`` at
    least 80 from the background's (an object one can see)."""
    while True:
        base, fg, bg = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
        if np.linalg.norm(fg - bg) >= 70.0 and np.linalg.norm(bg - base) >= 80.0:
            return base, fg, bg


def _smooth_noise(rng, size, channels, octaves=(2, 4, 8, 16, 32)):
    """Band-limited noise with a roughly 1/f spectrum (natural-image statistics) -> ``(S, S, channels)``,
    about unit standard deviation: random grids of ``k x k`` values, bicubically upsampled and summed
    with weights ``1/k``."""
    out = np.zeros((size, size, channels), np.float32)
    for k in octaves:
        if k > size:
            break
        grid = rng.standard_normal(size=(k, k, channels), dtype=np.float32) * np.float32(2.0 / k)
        out += cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)
    return out


def _blob_polygon(rng, cx, cy, radius, bumps=0.12, n=48):
    """A star-convex blob around ``(cx, cy)``: radius ``r(t) = radius * (1 + sum_k a_k cos(k t + p_k))``,
    ``k = 2..4`` -> ``(n, 2)`` vertices ``(x, y)``."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += rng.uniform(0, bumps) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([cx + radius * r * np.cos(t), cy + radius * r * np.sin(t)], axis=1)


def _background(rng, size, s, base):
    """A cluttered scene without the object -> ``(S, S, 3)`` float32: a 1/f colour field around the
    colour ``base`` ``(3,)``, then 2-6 clutter items (blobs, irregular polygons, strokes) in colours of
    their own, all smaller than objects."""
    img = base + _smooth_noise(rng, size, 3) * np.float32(rng.uniform(15, 45))
    for _ in range(rng.integers(2, 7)):
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        kind = rng.integers(3)
        cx, cy = rng.uniform(0, size, size=2)
        if kind == 0:
            poly = _blob_polygon(rng, cx, cy, rng.uniform(3, 12) * s, bumps=0.3, n=24)
        elif kind == 1:
            poly = _regular_polygon(cx, cy, rng.uniform(3, 12) * s, int(rng.integers(3, 7)), rng.uniform(0, 360))
            poly = poly + rng.normal(0, 3 * s, size=poly.shape)
        else:
            p = np.round(np.append([cx, cy], rng.uniform(0, size, size=2)) * _SUB).astype(int)
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour,
                     thickness=max(1, int(round(rng.uniform(1, 4) * s))), lineType=cv2.LINE_AA, shift=2)
            continue
        cv2.fillPoly(img, [np.round(poly * _SUB).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=2)
    return img


def _silhouette(rng, class_name, size, cx, cy, radius):
    """The object's mask ``(S, S)`` in [0, 1]: the class outline, stretched (aspect 0.8-1.25), rotated
    (+-20 degrees), its vertices jittered, scaled to ``radius`` and centred on ``(cx, cy)``."""
    add, cut = _OUTLINES[class_name](rng)
    aspect = np.exp(rng.uniform(-0.22, 0.22))
    a = np.deg2rad(rng.uniform(-20, 20))
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    place = [[(np.asarray(p) * [aspect, 1 / aspect]) @ rot * radius + [cx, cy]
              + rng.normal(0, 0.02 * radius, size=np.shape(p)) for p in polys] for polys in (add, cut)]
    mask = _poly_mask(size, place[0])
    return mask * (1.0 - _poly_mask(size, place[1])) if place[1] else mask


def render_synthetic_image(rng, class_name, image_size=128):
    """Draw one synthetic image of ``class_name`` -> ``(S, S, 3)`` uint8 RGB.

    A scene, not a texture: one object whose outline is the class (disc, square, star, arrow, ...) at a
    random position and scale (about 60-90% of the image wide), stretched and rotated a little, on a
    cluttered background (1/f colour noise, small blobs, polygons, strokes); its surface is plain or
    carries a texture (stripes, checks, dots, waves, mottling) in two colours, lit by a random gradient;
    an occluder may bite into it; then blur and pixel noise.  Everything is drawn from ``rng``
    (``np.random.Generator``) from the same distributions for every class (geometry, colours, clutter,
    occlusion, blur, noise), except that three objects in four are given their class's usual texture (each
    texture is usual for two or three classes, e.g. disc and crescent): the texture narrows the choice
    down, the outline decides.
    """
    size = int(image_size)
    s = size / 128.0
    base, fg, bg = _random_colours(rng)
    img = _background(rng, size, s, base)
    radius = rng.uniform(0.3, 0.45) * size
    cx, cy = size / 2 + rng.uniform(-0.12, 0.12, size=2) * size
    silhouette = _silhouette(rng, class_name, size, cx, cy, radius)
    y, x = _coords(size)
    # the surface: mostly the class's usual texture (as grass tends to be green), else any texture
    usual = 1 + SYNTHETIC_CLASSES.index(class_name) % (len(_TEXTURES) - 1)
    kind = usual if rng.random() < 0.75 else rng.integers(len(_TEXTURES))
    texture = _TEXTURES[kind](rng, y, x, s * rng.uniform(0.8, 1.2))
    surface = bg + (rng.uniform(0.5, 1.0) * texture)[..., None] * (fg - bg)
    u, _ = _rotated(y, x, rng.uniform(0, 360))
    surface *= (1.0 + np.float32(rng.uniform(0, 0.35)) * u / size)[..., None]  # light from one side
    alpha = silhouette[..., None]
    img = img * (1 - alpha) + surface * alpha
    # half the time an occluder in front of the object bites into its outline
    for _ in range(rng.integers(0, 2)):
        ang, dist = rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.95, 1.3)
        occ = _blob_polygon(rng, cx + dist * np.cos(ang), cy + dist * np.sin(ang), radius * rng.uniform(0.25, 0.4),
                            bumps=0.25, n=24)
        o = _poly_mask(size, [occ])[..., None]
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        paint = colour + _smooth_noise(rng, size, 1, octaves=(8, 16)) * np.float32(rng.uniform(5, 25))
        img = img * (1 - o) + paint * o
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(0.3, 1.0) * s))
    # sensor noise: uniform, standard deviation 3..15 levels (cheaper than Gaussian)
    sigma = rng.uniform(3, 15)
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
