"""Batched training augmentation on the device, with the parameter distributions of the OpenCV pipeline.

`get_train_transforms` (custom_augment: random sized crop -> horizontal flip -> colour jitter -> rotation
-> ToTensor -> Normalize) runs per image on CPU workers. :class:`DeviceAugment` does the same steps on a
whole uint8 batch ``(B, H, W, 3)`` on the batch's device:

- random sized crop: the box is drawn exactly as ``RandomSizedCrop.get_params`` (10 attempts of area /
  log-aspect / position, then the clamped central fallback), vectorized; crop + resize with
  ``torchvision.ops.roi_align`` (one bilinear sample per output pixel, cv2's ``INTER_LINEAR`` mapping, when
  not shrinking 2x or more; a per-bin average, ``INTER_AREA``'s role, when shrinking 2x or more);
- flip with probability ``p``; per-channel colour factors uniform in ``[1 - r, 1 + r]``;
- rotation by an angle uniform in ``[-d, d]`` about the centre, bilinear with reflected borders
  (``F.affine_grid`` + ``F.grid_sample``, padding ``reflection`` = cv2 ``BORDER_REFLECT``);
- uint8 rounding after every step (as the OpenCV path stores uint8 images), then ``/255`` and Normalize.

The parameters come from the given pipeline object (:meth:`DeviceAugment.from_pipeline`), so an edited
pipeline with the same transform types carries over; any other transform raises ``ValueError`` (use the
OpenCV path). Randomness: parameters are drawn on CPU from the ``torch.Generator`` passed in (the loader
seeds it per epoch), so a batch is a pure function of (images, generator state) on any device.

    aug = DeviceAugment.from_pipeline(student_code.get_train_transforms(128))
    x = aug(batch_uint8_bhwc, generator)      # (B, 3, 128, 128) float32, normalized
"""
import math

import torch
import torch.nn.functional as F

ATTEMPTS = 10  # RandomSizedCrop.get_params tries 10 draws before the fallback


def sample_crop_boxes(n, w, h, scale, ratio, generator=None):
    """``n`` random sized crop boxes for a ``w`` x ``h`` image, distributed as
    ``custom_augment.RandomSizedCrop.get_params``. Returns int64 tensors ``(left, top, cw, ch)``, each ``(n,)``."""
    u = torch.rand(n, ATTEMPTS, 4, generator=generator, dtype=torch.float64)  # (n, 10, [area, ratio, left, top])
    area = w * h
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    cw = torch.round(torch.sqrt(target * aspect)).long()  # round half to even, as Python's round
    ch = torch.round(torch.sqrt(target / aspect)).long()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)  # (n, 10)
    left = torch.minimum((u[..., 2] * (w - cw + 1)).long(), w - cw)
    top = torch.minimum((u[..., 3] * (h - ch + 1)).long(), h - ch)
    first = torch.where(ok.any(1), ok.long().argmax(1), torch.zeros(n, dtype=torch.long))  # first success
    pick = lambda t: t.gather(1, first[:, None])[:, 0]  # noqa: E731  (n, 10) -> (n,)
    left, top, cw, ch = pick(left), pick(top), pick(cw), pick(ch)
    # fallback (no attempt fitted): central crop, aspect ratio clamped into the range
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(h * ratio[1])), h
    else:
        fw, fh = w, h
    none = ~ok.any(1)
    left = torch.where(none, (w - fw) // 2, left)
    top = torch.where(none, (h - fh) // 2, top)
    cw = torch.where(none, fw, cw)
    ch = torch.where(none, fh, ch)
    return left, top, cw, ch


def crop_resize(x, left, top, cw, ch, out_wh):
    """Crop boxes of ``x (B, C, H, W)`` float and resize each to ``out_wh = (w, h)`` -> ``(B, C, h, w)``.

    cv2's rule: ``INTER_LINEAR`` (one bilinear sample per output pixel centre) unless shrinking by 2x or
    more along a side, then an area average (``roi_align`` averages ``ceil(crop / out)`` samples per axis)."""
    from torchvision.ops import roi_align

    out_w, out_h = out_wh
    boxes = torch.stack([torch.arange(x.shape[0]), left, top, left + cw, top + ch], 1).to(x.dtype)  # (B, 5) CPU
    strong = (2 * out_w <= cw) | (2 * out_h <= ch)  # (B,) CPU: choosing the groups costs no device sync
    out = x.new_empty(x.shape[0], x.shape[1], out_h, out_w)
    for mask, ratio in ((~strong, 1), (strong, -1)):
        if mask.any():
            rows = mask.nonzero()[:, 0]
            part = roi_align(x, boxes[rows].to(x.device), (out_h, out_w), spatial_scale=1.0, sampling_ratio=ratio,
                             aligned=True)
            out.index_copy_(0, rows.to(x.device), part)
    return out


def rotate(x, angles_deg):
    """Rotate ``x (B, C, H, W)`` about the centre by ``angles_deg (B,)`` degrees (counter-clockwise as
    ``cv2.getRotationMatrix2D``), bilinear, reflected borders -> ``(B, C, H, W)``."""
    B, _, H, W = x.shape
    a = torch.deg2rad(angles_deg.to(torch.float64))
    cos, sin = torch.cos(a), torch.sin(a)
    # output pixel -> source pixel is the inverse rotation; in normalized coordinates (x/W, y/H scaled)
    theta = torch.zeros(B, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * H / W
    theta[:, 1, 0], theta[:, 1, 1] = sin * W / H, cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), (B, x.shape[1], H, W), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class DeviceAugment:
    """The train pipeline as batched tensor ops (see the module docstring). Fields mirror the OpenCV
    transforms; ``None`` for a step the pipeline does not have."""

    def __init__(self, size_wh, scale=None, ratio=None, flip_p=None, color_range=None, degree_range=None,
                 mean=None, std=None):
        self.size_wh = tuple(size_wh)
        self.scale, self.ratio, self.flip_p = scale, ratio, flip_p
        self.color_range, self.degree_range, self.mean, self.std = color_range, degree_range, mean, std

    @classmethod
    def from_pipeline(cls, pipeline):
        """Read the parameters of a ``custom_augment.Compose`` of (in this order, each optional but
        ToTensor) RandomSizedCrop, RandomHorizontalFlip, RandomColor, RandomRotate, ToTensor, Normalize.
        Raises ``ValueError`` naming the first transform it cannot run on the device."""
        import custom_augment as ca

        order = [ca.RandomSizedCrop, ca.RandomHorizontalFlip, ca.RandomColor, ca.RandomRotate, ca.ToTensor,
                 ca.Normalize]
        transforms = getattr(pipeline, "transforms", None)
        if transforms is None:
            raise ValueError(f"--gpu-augment needs a custom_augment.Compose pipeline, got {type(pipeline).__name__}")
        kw, position = {}, 0
        for t in transforms:
            kinds = [k for k in order[position:] if type(t) is k]
            if not kinds:
                raise ValueError(f"--gpu-augment cannot run {t!r} on the device (supported, in this order: "
                                 f"{', '.join(k.__name__ for k in order)}); drop --gpu-augment to use the OpenCV path")
            position = order.index(kinds[0]) + 1
            if isinstance(t, ca.RandomSizedCrop):
                if t.interpolations is not None:
                    raise ValueError("--gpu-augment: RandomSizedCrop with a random interpolation choice is not "
                                     "supported; drop --gpu-augment to use the OpenCV path")
                kw.update(size_wh=t.size, scale=t.scale, ratio=t.ratio)
            elif isinstance(t, ca.RandomHorizontalFlip):
                kw["flip_p"] = t.p
            elif isinstance(t, ca.RandomColor):
                kw["color_range"] = t.color_range
            elif isinstance(t, ca.RandomRotate):
                kw["degree_range"] = t.degree_range
            elif isinstance(t, ca.Normalize):
                kw.update(mean=t.mean, std=t.std)
        if ca.ToTensor not in [type(t) for t in transforms]:
            raise ValueError("--gpu-augment: the pipeline has no ToTensor")
        return cls(kw.pop("size_wh", None), **kw)

    def sample_params(self, n, w, h, generator=None):
        """Every random draw for ``n`` images of ``w`` x ``h`` (CPU tensors): dict of ``box`` (4 x ``(n,)``),
        ``flip`` ``(n,)`` bool, ``color`` ``(n, 3)``, ``angle`` ``(n,)`` degrees."""
        p = {}
        if self.scale is not None:
            p["box"] = sample_crop_boxes(n, w, h, self.scale, self.ratio, generator)
        if self.flip_p is not None:
            p["flip"] = torch.rand(n, generator=generator) < self.flip_p
        if self.color_range is not None:
            r = self.color_range
            p["color"] = 1.0 - r + 2.0 * r * torch.rand(n, 3, generator=generator, dtype=torch.float64)
        if self.degree_range is not None:
            d = self.degree_range
            p["angle"] = -d + 2 * d * torch.rand(n, generator=generator, dtype=torch.float64)
        return p

    def __call__(self, images, generator=None, memory_format=torch.contiguous_format):
        """``images (B, H, W, 3)`` uint8 RGB on any device -> ``(B, 3, h, w)`` float32 normalized."""
        B, H, W, _ = images.shape
        p = self.sample_params(B, W, H, generator)
        x = images.permute(0, 3, 1, 2).float()  # (B, 3, H, W), values 0..255
        if "box" in p:
            x = crop_resize(x, *p["box"], self.size_wh).round_().clamp_(0, 255)
        if "flip" in p:
            flip = p["flip"].to(x.device)[:, None, None, None]
            x = torch.where(flip, x.flip(-1), x)
        if "color" in p:
            x = (x * p["color"].to(x.device, x.dtype)[:, :, None, None]).round_().clamp_(0, 255)
        if "angle" in p:
            x = rotate(x, p["angle"]).round_().clamp_(0, 255)
        return normalize(x.div_(255.0), self.mean, self.std).contiguous(memory_format=memory_format)


def normalize(x, mean=None, std=None):
    """``(x - mean) / std`` per channel of ``x (B, C, H, W)``; identity when ``mean`` is None."""
    if mean is None:
        return x
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def val_transform(images, size, mean, std, memory_format=torch.contiguous_format):
    """The val pipeline (Scale shorter side -> CenterCrop -> ToTensor -> Normalize) on ``images (B, H, W, 3)``
    uint8 -> ``(B, 3, size, size)`` float32. Identity resize when ``H == W == size`` (MiniPlaces at 128)."""
    x = images.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    B, _, H, W = x.shape
    if (H, W) != (size, size):
        s = size / min(H, W)
        nh, nw = max(1, round(H * s)), max(1, round(W * s))
        zero, full = torch.zeros(B, dtype=torch.long), torch.ones(B, dtype=torch.long)
        x = crop_resize(x, zero, zero, full * W, full * H, (nw, nh)).round_().clamp_(0, 255)  # Scale's rule
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    return normalize(x.div_(255.0), mean, std).contiguous(memory_format=memory_format)
