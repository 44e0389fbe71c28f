"""custom_augment: shapes, dtypes, ranges, determinism, seeding, Normalize /
Denormalize against torchvision as the oracle, and readable reprs.

Run: pytest tests/test_augment.py
"""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

import custom_augment as T

SHAPES = [(128, 128), (96, 160), (160, 96), (37, 53)]


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _train_pipeline(size=64):
    return T.Compose([T.RandomSizedCrop(size, scale=(0.35, 1.0)), T.RandomHorizontalFlip(), T.RandomColor(0.15),
                      T.RandomRotate(15), T.ToTensor(), T.Normalize()])


def _val_pipeline(size=64):
    return T.Compose([T.Scale(size), T.CenterCrop(size), T.ToTensor(), T.Normalize()])


def _assert_uint8_image(out, shape):
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == shape, \
        (type(out), getattr(out, "dtype", None), getattr(out, "shape", None), shape)


def test_constants():
    assert T.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert T.IMAGENET_STD == (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("size", [32, 64, 200])
def test_scale_int_resizes_shorter_side(h, w, size):
    out = T.Scale(size)(_image(h, w))
    short, long_ = sorted(out.shape[:2])
    assert short == size, f"shorter side {short}, expected {size} (input {h}x{w}, output {out.shape})"
    expected_long = round(max(h, w) * size / min(h, w))
    assert abs(long_ - expected_long) <= 1, (out.shape, expected_long)
    assert (out.shape[0] <= out.shape[1]) == (h <= w), "orientation changed"


@pytest.mark.parametrize("h,w", SHAPES)
def test_scale_tuple_is_width_height(h, w):
    _assert_uint8_image(T.Scale((50, 30))(_image(h, w)), (30, 50, 3))


def test_scale_identity_returns_input_values():
    img = _image(64, 64)
    np.testing.assert_array_equal(T.Scale(64)(img), img)


@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("size", [24, (40, 20)])
def test_center_crop(h, w, size):
    img = _image(h, w)
    out = T.CenterCrop(size)(img)
    cw, ch = (size, size) if isinstance(size, int) else size
    _assert_uint8_image(out, (ch, cw, 3))
    top, left = (h - ch) // 2, (w - cw) // 2
    np.testing.assert_array_equal(out, img[top:top + ch, left:left + cw])


def test_center_crop_pads_small_images():
    out = T.CenterCrop(10)(np.full((4, 6, 3), 200, np.uint8))
    _assert_uint8_image(out, (10, 10, 3))
    assert out.sum() == 200 * 4 * 6 * 3, "padding is not zero or the image moved out"


@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("size", [64, (48, 32)])
def test_random_sized_crop_output_size(h, w, size):
    tf = T.RandomSizedCrop(size)
    cw, ch = (size, size) if isinstance(size, int) else size
    for _ in range(20):
        _assert_uint8_image(tf(_image(h, w)), (ch, cw, 3))


@pytest.mark.parametrize("h,w", [(128, 128), (40, 400), (400, 40)])
def test_random_sized_crop_params_in_bounds(h, w):
    tf = T.RandomSizedCrop(64, scale=(0.25, 1.0))
    for _ in range(200):
        left, top, cw, ch = tf.get_params(w, h)
        assert 0 <= left and 0 <= top and left + cw <= w and top + ch <= h and cw > 0 and ch > 0, \
            (left, top, cw, ch, w, h)


def test_random_sized_crop_fallback_is_central():
    """An aspect-ratio range the image can never satisfy ends in the central fallback crop."""
    tf = T.RandomSizedCrop(16, scale=(0.99, 1.0), ratio=(3.0, 4.0))
    left, top, cw, ch = tf.get_params(100, 100)
    assert (cw, ch) == (100, 33) and (left, top) == (0, 33), (left, top, cw, ch)


def test_flip():
    img = _image(8, 12)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(img), img[:, ::-1])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(p=0.0)(img), img)
    torch.manual_seed(0)
    flips = sum(np.array_equal(T.RandomHorizontalFlip(0.5)(img), img[:, ::-1]) for _ in range(400))
    assert 150 < flips < 250, f"{flips} flips in 400 draws with p=0.5"


def test_random_color_range_and_clipping():
    img = np.full((4, 4, 3), 100, np.uint8)
    img[0, 0] = 255
    tf = T.RandomColor(0.2)
    for _ in range(50):
        out = tf(img)
        _assert_uint8_image(out, img.shape)
        ratios = out[1, 1].astype(float) / 100.0
        assert np.all(ratios >= 0.8 - 0.006) and np.all(ratios <= 1.2 + 0.006), ratios
        assert out[0, 0].max() <= 255
    np.testing.assert_array_equal(T.RandomColor(0.0)(img), img)


def test_rotate_zero_is_identity_and_shape_kept():
    img = _image(30, 50)
    np.testing.assert_array_equal(T.RandomRotate(0)(img), img)
    _assert_uint8_image(T.RandomRotate(30)(img), img.shape)


# ---------------------------------------------------------------------------- tensors
@pytest.mark.parametrize("h,w", SHAPES)
def test_to_tensor(h, w):
    img = _image(h, w)
    x = T.ToTensor()(img)
    assert x.shape == (3, h, w) and x.dtype == torch.float32 and x.is_contiguous(), (x.shape, x.dtype)
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy() * 255.0, img, atol=1e-4)
    ref = TF.to_tensor(img)
    assert torch.allclose(x, ref, atol=1e-6), (x - ref).abs().max()


def test_to_tensor_accepts_views():
    img = _image(20, 20)
    x = T.ToTensor()(img[2:18, ::-1])
    assert x.is_contiguous() and torch.equal(x, TF.to_tensor(np.ascontiguousarray(img[2:18, ::-1])))


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((4, 4, 4), np.uint8), torch.zeros(3, 4, 4)])
def test_image_type_errors(bad):
    with pytest.raises(TypeError, match=r"\(H, W, 3\) uint8"):
        T.ToTensor()(bad)


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 3, 5, 7), (2, 2, 3, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalize_matches_torchvision(shape, dtype):
    x = torch.rand(shape, dtype=dtype)
    out = T.Normalize()(x)
    ref = TF.normalize(x, T.IMAGENET_MEAN, T.IMAGENET_STD)
    assert out.dtype == dtype and out.shape == x.shape
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert torch.allclose(out, ref, atol=tol, rtol=0), (out - ref).abs().max()
    assert out.data_ptr() != x.data_ptr(), "Normalize must return a new tensor"
    back = T.Denormalize()(out)
    assert torch.allclose(back, x, atol=tol * 10, rtol=0), (back - x).abs().max()
    assert back.data_ptr() != out.data_ptr()


def test_denormalize_clamp_and_custom_stats():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)
    x = torch.randn(2, 3, 4, 4) * 3
    unclamped = T.Denormalize(mean, std)(x)
    assert torch.allclose(unclamped, x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1))
    clamped = T.Denormalize(mean, std, clamp=True)(x)
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert torch.equal(clamped, unclamped.clamp(0, 1))


def test_normalized_range_of_valid_pixels():
    """The attack code relies on this: a [0, 1] image maps to [(0 - m) / s, (1 - m) / s]."""
    x = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
    out = T.Normalize()(x)
    for c in range(3):
        lo, hi = -T.IMAGENET_MEAN[c] / T.IMAGENET_STD[c], (1 - T.IMAGENET_MEAN[c]) / T.IMAGENET_STD[c]
        assert torch.allclose(out[0, c], torch.tensor(lo)) and torch.allclose(out[1, c], torch.tensor(hi))


# ---------------------------------------------------------------------------- pipelines
@pytest.mark.parametrize("h,w", SHAPES)
def test_train_pipeline_output(h, w):
    x = _train_pipeline(64)(_image(h, w))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.is_contiguous()
    lo = min(-m / s for m, s in zip(T.IMAGENET_MEAN, T.IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(T.IMAGENET_MEAN, T.IMAGENET_STD))
    assert lo - 1e-5 <= x.min() and x.max() <= hi + 1e-5, (x.min(), x.max())


@pytest.mark.parametrize("h,w", SHAPES)
def test_val_pipeline_is_deterministic(h, w):
    img = _image(h, w)
    tf = _val_pipeline(48)
    torch.manual_seed(1)
    a = tf(img)
    torch.manual_seed(2)
    b = tf(img)
    assert a.shape == (3, 48, 48)
    assert torch.equal(a, b), "validation transforms depend on the RNG"


def test_val_pipeline_does_not_consume_rng():
    torch.manual_seed(5)
    _val_pipeline(48)(_image(96, 160))
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(5).get_state())


def test_train_pipeline_reproducible_under_torch_seed():
    img = _image(128, 128)
    tf = _train_pipeline(64)
    torch.manual_seed(42)
    a = [tf(img) for _ in range(5)]
    torch.manual_seed(42)
    b = [tf(img) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)), "same torch seed, different augmentations"
    assert not torch.equal(a[0], a[1]), "successive draws are identical: the transforms are not random"


def test_train_pipeline_ignores_numpy_and_python_rng():
    """Only torch's RNG is used, so reseeding numpy / random changes nothing."""
    import random
    img = _image(128, 128)
    tf = _train_pipeline(64)
    torch.manual_seed(7)
    np.random.seed(1)
    random.seed(1)
    a = tf(img)
    torch.manual_seed(7)
    np.random.seed(2)
    random.seed(2)
    assert torch.equal(a, tf(img))


def test_random_interpolation_only_when_listed():
    import cv2
    img = _image(100, 100)
    fixed = T.Scale(64)
    assert all(np.array_equal(fixed(img), fixed(img)) for _ in range(5))
    listed = T.Scale(64, interpolations=[cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC])
    torch.manual_seed(0)
    outs = {listed(img).tobytes() for _ in range(30)}
    assert len(outs) > 1, "a list of interpolations is never sampled"


# ---------------------------------------------------------------------------- repr
def test_reprs_are_readable():
    import cv2
    tf = T.Compose([T.Scale(144), T.Scale((64, 32), interpolations=[cv2.INTER_LINEAR, cv2.INTER_CUBIC]),
                    T.RandomSizedCrop(128), T.CenterCrop((40, 30)), T.RandomHorizontalFlip(),
                    T.RandomColor(0.15), T.RandomRotate(15), T.ToTensor(), T.Normalize(), T.Denormalize(clamp=True)])
    text = repr(tf)
    for part in ["Compose(", "Scale(size=144, interpolations=None)",
                 "Scale(size=(w=64, h=32), interpolations=[cv2.INTER_LINEAR, cv2.INTER_CUBIC])",
                 "RandomSizedCrop(size=128, scale=(0.25, 1), ratio=(0.75, 1.333), interpolations=None)",
                 "CenterCrop(size=(w=40, h=30))", "RandomHorizontalFlip(p=0.5)", "RandomColor(color_range=0.15)",
                 "RandomRotate(degree_range=15)", "ToTensor()",
                 "Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))",
                 "Denormalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), clamp=True)"]:
        assert part in text, f"{part!r} not in:\n{text}"
    assert len(text.splitlines()) == 12, text


@pytest.mark.parametrize("make", [lambda: T.Scale(0), lambda: T.CenterCrop((3,)), lambda: T.RandomSizedCrop(8, (0, 1)),
                                  lambda: T.RandomHorizontalFlip(2), lambda: T.RandomColor(1.5),
                                  lambda: T.RandomRotate(-1), lambda: T.Scale(8, interpolations=[]),
                                  lambda: T.Normalize(std=(0.1, 0.0, 0.1))])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()
