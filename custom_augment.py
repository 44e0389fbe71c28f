"""OpenCV/NumPy image transforms for the MiniPlaces pipelines.

Every transform up to :class:`ToTensor` takes and returns an image as a
``np.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB channel order (what
``custom_dataloader.MiniPlacesLoader`` yields).  :class:`ToTensor` turns it into
a ``float32`` tensor ``(3, H, W)`` in ``[0, 1]``; :class:`Normalize` and
:class:`Denormalize` work on tensors.

Sizes given as tuples are ``(w, h)`` -- width first, as in ``cv2.resize`` and
the course's original transforms (torchvision uses ``(h, w)``).

Randomness: every random transform draws from **torch's global RNG** (and only
from it).  ``torch.utils.data.DataLoader`` seeds torch differently in each worker
from the base seed, so ``torch.manual_seed(s)`` before building the loader makes
the augmentations reproducible; NumPy's and Python's RNGs are never touched.

With ``interpolations=None`` (the default, and what validation uses),
``Scale`` and ``RandomSizedCrop`` resize with a fixed rule: ``cv2.INTER_AREA``
when shrinking by a factor of 2 or more along a side (where bilinear would
alias), ``cv2.INTER_LINEAR`` otherwise (enlarging or mild shrinking, where
``INTER_AREA`` is several times slower for no visible gain).

Usage (a library, nothing runs on import)::

    from custom_augment import Compose, RandomSizedCrop, RandomHorizontalFlip, ToTensor, Normalize
    train_tf = Compose([RandomSizedCrop(128), RandomHorizontalFlip(), ToTensor(), Normalize()])
    tensor = train_tf(img)          # img: (H, W, 3) uint8 RGB -> (3, 128, 128) float32
"""

import math
import numbers

import cv2
import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Compose",
    "Scale",
    "CenterCrop",
    "RandomSizedCrop",
    "RandomHorizontalFlip",
    "RandomColor",
    "RandomRotate",
    "ToTensor",
    "Normalize",
    "Denormalize",
]

#: Per-channel (R, G, B) mean of ImageNet, for pixels in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: Per-channel (R, G, B) standard deviation of ImageNet, for pixels in [0, 1].
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERP_NAMES = {
    cv2.INTER_NEAREST: "INTER_NEAREST",
    cv2.INTER_LINEAR: "INTER_LINEAR",
    cv2.INTER_CUBIC: "INTER_CUBIC",
    cv2.INTER_AREA: "INTER_AREA",
    cv2.INTER_LANCZOS4: "INTER_LANCZOS4",
}


# ----------------------------------------------------------------------------- helpers
def _rand_uniform(low, high):
    """One float drawn uniformly from ``[low, high)`` with torch's global RNG."""
    return low + (high - low) * torch.rand(()).item()


def _rand_index(n):
    """One int drawn uniformly from ``range(n)`` with torch's global RNG."""
    return int(torch.randint(n, ()).item())


def _interp_name(code):
    return "cv2." + _INTERP_NAMES.get(code, str(code))


def _size_wh(size, what):
    """Normalize ``int`` or ``(w, h)`` to a ``(w, h)`` tuple of positive ints."""
    if isinstance(size, numbers.Integral):
        w = h = int(size)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: size must be an int or a (w, h) pair, got {size!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"{what}: size must be positive, got {size!r}")
    return w, h


def _check_image(img, what):
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        desc = (f"{type(img).__name__} {getattr(img, 'shape', '')} {getattr(img, 'dtype', '')}").strip()
        raise TypeError(f"{what} expects an (H, W, 3) uint8 numpy array, got {desc}")


def _check_interpolations(interpolations, what):
    """``None`` (fixed rule), one cv2 code, or a non-empty list of codes -> stored form."""
    if interpolations is None:
        return None
    if isinstance(interpolations, numbers.Integral):
        interpolations = [int(interpolations)]
    interpolations = [int(i) for i in interpolations]
    if not interpolations:
        raise ValueError(f"{what}: interpolations must be None or a non-empty list")
    unknown = [i for i in interpolations if i not in _INTERP_NAMES]
    if unknown:
        raise ValueError(f"{what}: unknown cv2 interpolation code(s) {unknown}")
    return tuple(interpolations)


def _pick_interpolation(interpolations, src_wh, dst_wh):
    """Fixed rule when ``interpolations`` is None, otherwise a random (torch) choice."""
    if interpolations is None:
        strong_shrink = 2 * dst_wh[0] <= src_wh[0] or 2 * dst_wh[1] <= src_wh[1]
        return cv2.INTER_AREA if strong_shrink else cv2.INTER_LINEAR
    if len(interpolations) == 1:
        return interpolations[0]
    return interpolations[_rand_index(len(interpolations))]


def _resize(img, dst_wh, interpolation):
    h, w = img.shape[:2]
    if (w, h) == tuple(dst_wh):
        return img
    return cv2.resize(img, tuple(dst_wh), interpolation=interpolation)


def _interps_repr(interpolations):
    if interpolations is None:
        return "None"
    return "[" + ", ".join(_interp_name(i) for i in interpolations) + "]"


def _fmt_size(size):
    return str(size[0]) if size[0] == size[1] else f"(w={size[0]}, h={size[1]})"


# ----------------------------------------------------------------------------- transforms
class Compose:
    """Apply ``transforms`` one after the other: ``Compose([a, b])(x) == b(a(x))``."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        lines = [self.__class__.__name__ + "("]
        lines += [f"    {t!r}" for t in self.transforms]
        lines.append(")")
        return "\n".join(lines)


class Scale:
    """Resize an image.

    Args:
        size: an ``int`` resizes the *shorter* side to ``size`` keeping the aspect
            ratio (the longer side is rounded); a ``(w, h)`` pair resizes to exactly
            that width and height.
        interpolations: ``None`` (default) uses the fixed rule (``INTER_AREA`` when
            shrinking 2x or more, else ``INTER_LINEAR``); a single cv2 code always uses
            it; a list of codes picks one at random per call (train-time augmentation only).

    ``(H, W, 3) uint8 -> (H', W', 3) uint8``
    """

    def __init__(self, size, interpolations=None):
        if isinstance(size, numbers.Integral):
            if size <= 0:
                raise ValueError(f"Scale: size must be positive, got {size!r}")
            self.size = int(size)
        else:
            self.size = _size_wh(size, "Scale")
        self.interpolations = _check_interpolations(interpolations, "Scale")

    def output_size(self, w, h):
        """Output ``(w, h)`` for an input of width ``w`` and height ``h``."""
        if isinstance(self.size, tuple):
            return self.size
        if w <= h:
            return self.size, max(1, int(round(h * self.size / w)))
        return max(1, int(round(w * self.size / h))), self.size

    def __call__(self, img):
        _check_image(img, "Scale")
        h, w = img.shape[:2]
        dst = self.output_size(w, h)
        return _resize(img, dst, _pick_interpolation(self.interpolations, (w, h), dst))

    def __repr__(self):
        size = self.size if isinstance(self.size, int) else f"(w={self.size[0]}, h={self.size[1]})"
        return f"Scale(size={size}, interpolations={_interps_repr(self.interpolations)})"


class CenterCrop:
    """Crop the central ``size`` region (``int`` -> square, ``(w, h)`` pair).

    An image smaller than ``size`` along a side is zero-padded symmetrically on
    that side first (as torchvision does).

    ``(H, W, 3) uint8 -> (h, w, 3) uint8`` (a view when no padding is needed)
    """

    def __init__(self, size):
        self.size = _size_wh(size, "CenterCrop")

    def __call__(self, img):
        _check_image(img, "CenterCrop")
        cw, ch = self.size
        h, w = img.shape[:2]
        if w < cw or h < ch:
            pad_w, pad_h = max(cw - w, 0), max(ch - h, 0)
            img = cv2.copyMakeBorder(img, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2,
                                     cv2.BORDER_CONSTANT, value=(0, 0, 0))
            h, w = img.shape[:2]
        top = (h - ch) // 2
        left = (w - cw) // 2
        return img[top:top + ch, left:left + cw]

    def __repr__(self):
        return f"CenterCrop(size={_fmt_size(self.size)})"


class RandomSizedCrop:
    """Crop a random area / aspect-ratio region and resize it to ``size``.

    The crop covers a fraction of the image area drawn uniformly from ``scale``
    and has an aspect ratio (w / h) drawn log-uniformly from ``ratio``; up to 10
    draws are tried, after which the central crop of the whole image with the
    aspect ratio clamped into ``ratio`` is used.  This is torchvision's
    ``RandomResizedCrop``.

    Args:
        size: output size, ``int`` (square) or ``(w, h)``.
        scale: ``(min, max)`` fraction of the image area.
        ratio: ``(min, max)`` aspect ratio w / h.
        interpolations: as in :class:`Scale`.

    ``(H, W, 3) uint8 -> (h, w, 3) uint8``
    """

    def __init__(self, size, scale=(0.25, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolations=None):
        self.size = _size_wh(size, "RandomSizedCrop")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"RandomSizedCrop: need 0 < scale[0] <= scale[1] <= 1, got {scale!r}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomSizedCrop: need 0 < ratio[0] <= ratio[1], got {ratio!r}")
        self.interpolations = _check_interpolations(interpolations, "RandomSizedCrop")

    def get_params(self, w, h):
        """Random crop box ``(left, top, crop_w, crop_h)`` for a ``w`` x ``h`` image."""
        area = w * h
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        lo, hi = self.scale
        for _ in range(10):
            u_area, u_ratio, u_left, u_top = torch.rand(4).tolist()  # one RNG call per attempt
            target_area = area * (lo + (hi - lo) * u_area)
            aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
            cw = int(round(math.sqrt(target_area * aspect)))
            ch = int(round(math.sqrt(target_area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                left = min(int(u_left * (w - cw + 1)), w - cw)
                top = min(int(u_top * (h - ch + 1)), h - ch)
                return left, top, cw, ch
        # fallback: central crop, aspect ratio clamped into the allowed range
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            cw, ch = int(round(h * self.ratio[1])), h
        else:
            cw, ch = w, h
        return (w - cw) // 2, (h - ch) // 2, cw, ch

    def __call__(self, img):
        _check_image(img, "RandomSizedCrop")
        h, w = img.shape[:2]
        left, top, cw, ch = self.get_params(w, h)
        crop = img[top:top + ch, left:left + cw]
        return _resize(crop, self.size, _pick_interpolation(self.interpolations, (cw, ch), self.size))

    def __repr__(self):
        return (f"RandomSizedCrop(size={_fmt_size(self.size)}, scale=({self.scale[0]:.4g}, {self.scale[1]:.4g}), "
                f"ratio=({self.ratio[0]:.4g}, {self.ratio[1]:.4g}), "
                f"interpolations={_interps_repr(self.interpolations)})")


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``.

    ``(H, W, 3) uint8 -> (H, W, 3) uint8``
    """

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, img):
        _check_image(img, "RandomHorizontalFlip")
        if torch.rand(()).item() < self.p:
            return cv2.flip(img, 1)
        return img

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p:g})"


class RandomColor:
    """Random per-channel multiplicative colour jitter.

    Each of R, G, B is multiplied by its own factor drawn uniformly from
    ``[1 - color_range, 1 + color_range]``; results are rounded and clipped to
    ``[0, 255]``.

    ``(H, W, 3) uint8 -> (H, W, 3) uint8``
    """

    def __init__(self, color_range):
        if not 0.0 <= color_range < 1.0:
            raise ValueError(f"RandomColor: color_range must be in [0, 1), got {color_range!r}")
        self.color_range = float(color_range)

    def __call__(self, img):
        _check_image(img, "RandomColor")
        r = self.color_range
        factors = (1.0 - r + 2.0 * r * torch.rand(3)).tolist()
        # cv2.multiply rounds and saturates to uint8 (no intermediate float copy)
        return cv2.multiply(img, (factors[0], factors[1], factors[2], 0.0))

    def __repr__(self):
        return f"RandomColor(color_range={self.color_range:g})"


class RandomRotate:
    """Rotate about the image centre by an angle drawn uniformly from
    ``[-degree_range, degree_range]`` degrees (bilinear, reflected border).

    ``(H, W, 3) uint8 -> (H, W, 3) uint8``
    """

    def __init__(self, degree_range):
        if degree_range < 0:
            raise ValueError(f"RandomRotate: degree_range must be >= 0, got {degree_range!r}")
        self.degree_range = float(degree_range)

    def __call__(self, img):
        _check_image(img, "RandomRotate")
        angle = _rand_uniform(-self.degree_range, self.degree_range)
        h, w = img.shape[:2]
        matrix = cv2.getRotationMatrix2D(((w - 1) * 0.5, (h - 1) * 0.5), angle, 1.0)
        return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    def __repr__(self):
        return f"RandomRotate(degree_range={self.degree_range:g})"


class ToTensor:
    """``(H, W, 3) uint8`` RGB array -> contiguous ``float32`` tensor ``(3, H, W)`` in ``[0, 1]``."""

    def __call__(self, img):
        _check_image(img, "ToTensor")
        chw = np.ascontiguousarray(img.transpose(2, 0, 1))
        return torch.from_numpy(chw).to(torch.float32).div_(255.0)

    def __repr__(self):
        return "ToTensor()"


def _stats_tensors(values):
    """``(C,)`` floats -> ``(C, 1, 1)`` float32 CPU tensor, built once per transform."""
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


def _channel_stats(transform, tensor):
    """The transform's mean / std as ``(C, 1, 1)`` tensors of ``tensor``'s dtype and device."""
    if tensor.dtype == torch.float32 and tensor.device.type == "cpu":
        return transform._mean_t, transform._std_t
    mean_t = torch.tensor(transform.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std_t = torch.tensor(transform.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return mean_t, std_t


def _check_tensor(tensor, n_channels, what):
    if not torch.is_tensor(tensor) or tensor.dim() < 3 or tensor.shape[-3] != n_channels:
        shape = tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__
        raise TypeError(f"{what} expects a tensor (..., {n_channels}, H, W), got {shape}")
    if not tensor.is_floating_point():
        raise TypeError(f"{what} expects a floating-point tensor, got {tensor.dtype}")


class Normalize:
    """``(x - mean) / std`` per channel on a ``(3, H, W)`` or ``(N, 3, H, W)``
    float tensor (any leading dims work); returns a new tensor."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: mean and std lengths differ ({len(self.mean)} vs {len(self.std)})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Normalize: std must be positive, got {self.std}")
        self._mean_t, self._std_t = _stats_tensors(self.mean), _stats_tensors(self.std)

    def __call__(self, tensor):
        _check_tensor(tensor, len(self.mean), "Normalize")
        mean_t, std_t = _channel_stats(self, tensor)
        return torch.sub(tensor, mean_t).div_(std_t)

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


class Denormalize:
    """Inverse of :class:`Normalize`: ``x * std + mean`` per channel on a
    ``(..., 3, H, W)`` float tensor; returns a new tensor, clamped to ``[0, 1]``
    when ``clamp`` is true (for visualization)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, clamp=False):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"Denormalize: mean and std lengths differ ({len(self.mean)} vs {len(self.std)})")
        self.clamp = bool(clamp)
        self._mean_t, self._std_t = _stats_tensors(self.mean), _stats_tensors(self.std)

    def __call__(self, tensor):
        _check_tensor(tensor, len(self.mean), "Denormalize")
        mean_t, std_t = _channel_stats(self, tensor)
        out = torch.mul(tensor, std_t).add_(mean_t)
        return out.clamp_(0.0, 1.0) if self.clamp else out

    def __repr__(self):
        return f"Denormalize(mean={self.mean}, std={self.std}, clamp={self.clamp})"
