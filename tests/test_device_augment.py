"""Tests of device_augment.py: the batched device augmentation against the OpenCV pipeline
(custom_augment / student_code.get_train_transforms).

- each step against OpenCV on the same parameters (crop+resize vs cv2.resize, rotation vs cv2.warpAffine
  with BORDER_REFLECT, colour vs cv2.multiply, flip vs cv2.flip), with stated tolerances;
- the crop-box distribution against `RandomSizedCrop.get_params` and the whole pipeline's output
  statistics against the OpenCV pipeline's (two-sample Kolmogorov-Smirnov tests, scipy; seeded, so the
  p-values are fixed numbers, not flaky);
- the CPU and CUDA results agree for the same generator state.

    python -m pytest tests/test_device_augment.py
"""
import cv2
import numpy as np
import pytest
import torch
from scipy import stats

import custom_augment as ca
import custom_dataloader
import device_augment as da
import student_code

P_MIN = 1e-3  # KS tests: reject "same distribution" below this p-value


def make_image(seed=0, size=128):
    """A synthetic (size, size, 3) uint8 image with structure everywhere (an object on clutter and noise)."""
    rng = np.random.default_rng(seed)
    return custom_dataloader.render_synthetic_image(rng, "ring", image_size=size)


def to_batch(img):
    return torch.from_numpy(np.ascontiguousarray(img))[None]  # (1, H, W, 3)


def chw_u8(x):
    """(1, 3, H, W) float 0..255 -> (H, W, 3) uint8."""
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def test_from_pipeline_reads_the_train_transforms():
    pipe = student_code.get_train_transforms(96)
    aug = da.DeviceAugment.from_pipeline(pipe)
    crop, flip, color, rot = pipe.transforms[:4]
    assert aug.size_wh == crop.size and aug.scale == crop.scale and aug.ratio == crop.ratio
    assert aug.flip_p == flip.p and aug.color_range == color.color_range and aug.degree_range == rot.degree_range
    assert aug.mean == ca.IMAGENET_MEAN and aug.std == ca.IMAGENET_STD


@pytest.mark.parametrize("pipeline", [
    ca.Compose([ca.Scale(64), ca.ToTensor()]),
    ca.Compose([ca.RandomRotate(10), ca.RandomSizedCrop(64), ca.ToTensor()]),  # order differs
    ca.Compose([ca.RandomSizedCrop(64, interpolations=[cv2.INTER_LINEAR, cv2.INTER_CUBIC]), ca.ToTensor()]),
    ca.Compose([ca.RandomSizedCrop(64)]),  # no ToTensor
])
def test_unsupported_pipeline_is_refused(pipeline):
    with pytest.raises(ValueError, match="gpu-augment"):
        da.DeviceAugment.from_pipeline(pipeline)


@pytest.mark.parametrize("w,h,scale", [(128, 128, (0.35, 1.0)), (160, 90, (0.08, 1.0))])
def test_crop_box_distribution_matches_get_params(w, h, scale):
    n = 3000
    crop = ca.RandomSizedCrop(64, scale=scale)
    torch.manual_seed(1)
    ref = np.array([crop.get_params(w, h) for _ in range(n)])  # (n, 4) left, top, cw, ch
    ours = torch.stack(da.sample_crop_boxes(n, w, h, crop.scale, crop.ratio, torch.Generator().manual_seed(2)), 1)
    ours = ours.numpy()
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= w).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= h).all()
    for j, name in enumerate(("left", "top", "crop width", "crop height")):
        p = stats.ks_2samp(ref[:, j], ours[:, j]).pvalue
        assert p > P_MIN, f"{name}: KS p-value {p:.2g} (means {ref[:, j].mean():.2f} vs {ours[:, j].mean():.2f})"


def test_crop_box_fallback_is_the_clamped_central_crop():
    # a very tall image: no draw of aspect ratio in [3/4, 4/3] covering 90% of the area fits
    crop = ca.RandomSizedCrop(32, scale=(0.9, 1.0))
    left, top, cw, ch = (t.tolist() for t in da.sample_crop_boxes(20, 10, 100, crop.scale, crop.ratio))
    assert set(zip(left, top, cw, ch)) == {crop.get_params(10, 100)}


@pytest.mark.parametrize("box,out", [((10, 20, 90, 70), 64), ((0, 0, 128, 128), 64), ((30, 5, 60, 60), 100)])
def test_crop_resize_matches_cv2(box, out):
    """Mild shrink / enlarge: cv2.INTER_LINEAR; 2x shrink: cv2.INTER_AREA (the OpenCV path's rule)."""
    img = make_image()
    left, top, cw, ch = box
    interp = cv2.INTER_AREA if (2 * out <= cw or 2 * out <= ch) else cv2.INTER_LINEAR
    ref = cv2.resize(img[top:top + ch, left:left + cw], (out, out), interpolation=interp)
    x = to_batch(img).permute(0, 3, 1, 2).float()
    got = chw_u8(da.crop_resize(x, *(torch.tensor([v]) for v in box), (out, out)))
    diff = np.abs(got.astype(int) - ref.astype(int))
    # cv2 interpolates uint8 with fixed-point weights: a few levels apart at sharp edges, ~0 on average
    assert np.percentile(diff, 99) <= 3 and diff.mean() < 0.3, \
        f"largest difference {diff.max()}, 99th percentile {np.percentile(diff, 99)}, mean {diff.mean():.3f}"


@pytest.mark.parametrize("angle", [-15.0, -4.5, 7.0, 15.0])
def test_rotation_matches_cv2_warp_affine(angle):
    img = make_image(size=96)
    h, w = img.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) * 0.5, (h - 1) * 0.5), angle, 1.0)
    ref = cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    got = chw_u8(da.rotate(to_batch(img).permute(0, 3, 1, 2).float(), torch.tensor([angle])))
    diff = np.abs(got.astype(int) - ref.astype(int))
    # cv2 interpolates with 5-bit fixed-point weights: a few levels apart at sharp edges, ~0 on average
    assert np.percentile(diff, 99) <= 3 and diff.mean() < 0.5, \
        f"largest difference {diff.max()}, 99th percentile {np.percentile(diff, 99)}, mean {diff.mean():.3f}"


def test_flip_and_colour_match_cv2():
    img = make_image(size=64)
    aug = da.DeviceAugment((64, 64), flip_p=1.0, color_range=0.15)
    g = torch.Generator().manual_seed(5)
    factors = aug.sample_params(1, 64, 64, torch.Generator().manual_seed(5))["color"][0].tolist()
    got = aug(to_batch(img), g)[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    ref = cv2.multiply(cv2.flip(img, 1), (factors[0], factors[1], factors[2], 0.0))
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f"largest difference {diff.max()}"


def per_sample_stats(x):
    """(B, 3, H, W) -> (B, 5): channel means, std over pixels, left-minus-right half mean (flip-sensitive)."""
    w = x.shape[-1]
    return torch.cat([x.mean((2, 3)), x.std((1, 2, 3))[:, None],
                      (x[..., : w // 2].mean((1, 2, 3)) - x[..., w // 2:].mean((1, 2, 3)))[:, None]], 1)


def test_pipeline_output_statistics_match_the_opencv_path():
    """Same image, 400 augmentations by each path: the per-sample statistics have the same distribution."""
    n, size = 400, 64
    img = make_image(seed=3)
    pipe = student_code.get_train_transforms(size)
    torch.manual_seed(0)
    ref = per_sample_stats(torch.stack([pipe(img) for _ in range(n)]))
    aug = da.DeviceAugment.from_pipeline(pipe)
    batch = to_batch(img).expand(n, -1, -1, -1)
    out = aug(batch, torch.Generator().manual_seed(1))
    assert out.shape == (n, 3, size, size) and out.dtype == torch.float32
    ours = per_sample_stats(out)
    names = ["mean R", "mean G", "mean B", "std", "left-right"]
    for j, name in enumerate(names):
        p = stats.ks_2samp(ref[:, j].numpy(), ours[:, j].numpy()).pvalue
        assert p > P_MIN, f"{name}: KS p-value {p:.2g} (means {ref[:, j].mean():.4f} vs {ours[:, j].mean():.4f})"


def test_pipeline_detects_a_wrong_colour_range():
    """The statistics test above has power: a colour range of 0.3 instead of 0.15 is rejected."""
    n, size = 400, 64
    img = make_image(seed=3)
    pipe = student_code.get_train_transforms(size)
    torch.manual_seed(0)
    ref = per_sample_stats(torch.stack([pipe(img) for _ in range(n)]))
    aug = da.DeviceAugment.from_pipeline(pipe)
    aug.color_range = 0.3
    ours = per_sample_stats(aug(to_batch(img).expand(n, -1, -1, -1), torch.Generator().manual_seed(1)))
    p = min(stats.ks_2samp(ref[:, j].numpy(), ours[:, j].numpy()).pvalue for j in range(3))  # any channel mean
    assert p < P_MIN, f"a doubled colour range went unnoticed: smallest KS p-value {p:.2g}"


def test_same_generator_same_batch_and_device_agreement(device):
    imgs = torch.from_numpy(np.stack([make_image(s) for s in range(4)]))  # (4, 128, 128, 3)
    aug = da.DeviceAugment.from_pipeline(student_code.get_train_transforms(64))
    a = aug(imgs, torch.Generator().manual_seed(7))
    b = aug(imgs.to(device), torch.Generator().manual_seed(7), memory_format=torch.channels_last)
    assert b.device.type == device.type and b.is_contiguous(memory_format=torch.channels_last)
    diff = (a - b.cpu()).abs().max().item()
    # on CUDA a bilinear weight may round a pixel to the neighbouring level: 1/255/std ~ 0.018
    assert diff <= (0.02 if device.type == "cuda" else 0.0), f"largest difference {diff}"
    c = aug(imgs, torch.Generator().manual_seed(8))
    assert not torch.equal(a, c), "another generator state must give another batch"


def test_val_transform_matches_the_opencv_val_pipeline():
    img = make_image(seed=2)  # 128x128
    for size in (128, 64):
        ref = student_code.get_val_transforms(size)(img)
        got = da.val_transform(to_batch(img), size, ca.IMAGENET_MEAN, ca.IMAGENET_STD)[0]
        diff = (ref - got).abs().max().item()
        tol = 1e-5 if size == 128 else 1.01 / 255 / min(ca.IMAGENET_STD)  # 128: exact; 64: one level
        assert diff <= tol, f"size {size}: largest difference {diff:.4f}"
