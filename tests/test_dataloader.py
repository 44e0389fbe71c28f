"""custom_dataloader: the MiniPlaces reader on tiny generated datasets, every bad
input, and the synthetic generator (determinism, caching, class counts).

Run: pytest tests/test_dataloader.py
"""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import custom_augment as T
import custom_dataloader as D
from _data_helpers import TINY, make_tiny_dataset, nearest_mean_colour_accuracy
from custom_dataloader import DatasetError, MiniPlacesLoader


@pytest.fixture(scope="module")
def tiny_master(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture
def tiny(tiny_master, tmp_path):
    """A private, writable copy of the tiny dataset."""
    root = tmp_path / "data"
    shutil.copytree(tiny_master, root)
    return root


def _files(root):
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _set_line(path, line_no, text):
    lines = path.read_text().splitlines()
    lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- layout and reading
def test_layout(tiny):
    for name in ("train.txt", "val.txt", "test.txt", "categories.txt", ".synthetic_dataset.json"):
        assert (tiny / name).is_file(), f"{name} missing"
    counts = {s: len((tiny / f"{s}.txt").read_text().split("\n")) - 1 for s in ("train", "val", "test")}
    k = TINY["num_classes"]
    assert counts == {"train": k * TINY["train_per_class"], "val": k * TINY["val_per_class"],
                      "test": k * TINY["test_per_class"]}, counts
    first_train = (tiny / "train.txt").read_text().split("\n")[0]
    assert first_train == "train/disc/00000001.jpg 0", first_train
    assert (tiny / "test.txt").read_text().split("\n")[0] == "test/00000001.jpg"
    assert (tiny / "categories.txt").read_text().split("\n")[0] == "/d/disc 0"


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_getitem_raw(tiny, split):
    ds = MiniPlacesLoader(tiny, split)
    assert len(ds) == len(ds.samples) > 0
    img, label = ds[0]
    assert isinstance(img, np.ndarray) and img.shape == (32, 32, 3) and img.dtype == np.uint8, \
        (type(img), getattr(img, "shape", None), getattr(img, "dtype", None))
    assert img.flags["C_CONTIGUOUS"]
    assert isinstance(label, int)
    labels = [lab for _, lab in ds.samples]
    if split == "test":
        assert set(labels) == {-1}, set(labels)
    else:
        assert set(labels) == set(range(TINY["num_classes"])), set(labels)
    assert ds.num_classes == TINY["num_classes"]
    assert ds.classes == list(D.SYNTHETIC_CLASSES[:TINY["num_classes"]]), ds.classes


def test_image_is_rgb(tiny):
    """The loader returns RGB: equal to OpenCV's BGR decode with channels reversed."""
    import cv2
    ds = MiniPlacesLoader(tiny, "val")
    path, _ = ds.samples[0]
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(ds[0][0], bgr[:, :, ::-1])


def test_getitem_with_transforms(tiny):
    ds = MiniPlacesLoader(tiny, "train", transforms=T.Compose([T.Scale(24), T.CenterCrop(24), T.ToTensor()]))
    x, label = ds[1]
    assert torch.is_tensor(x) and x.shape == (3, 24, 24) and x.dtype == torch.float32, (x.shape, x.dtype)
    assert 0 <= label < 3


@pytest.mark.parametrize("num_classes", [3, 7])
@pytest.mark.parametrize("with_categories", [True, False])
def test_class_count_from_data(tmp_path, num_classes, with_categories):
    root = make_tiny_dataset(tmp_path / "d", num_classes=num_classes, train_per_class=1, val_per_class=1,
                             test_per_class=1)
    if not with_categories:
        (root / "categories.txt").unlink()
    for split in ("train", "val", "test"):
        ds = MiniPlacesLoader(root, split)
        assert ds.num_classes == num_classes, (split, ds.num_classes)
        assert len(ds.classes) == num_classes
        if not with_categories:
            assert ds.classes == [str(i) for i in range(num_classes)]


def test_num_classes_argument(tiny):
    (tiny / "categories.txt").unlink()
    ds = MiniPlacesLoader(tiny, "val", num_classes=10)
    assert ds.num_classes == 10 and ds.classes == [str(i) for i in range(10)]


def test_num_classes_argument_conflicts_with_categories(tiny):
    with pytest.raises(DatasetError, match="categories.txt lists 3 classes but num_classes=5"):
        MiniPlacesLoader(tiny, "val", num_classes=5)


def test_categories_names_strip_letter_folder(tiny):
    (tiny / "categories.txt").write_text("/a/abbey 0\n/c/church/outdoor 1\n/z 2\n")
    assert MiniPlacesLoader(tiny, "val").classes == ["abbey", "church/outdoor", "z"]


# ---------------------------------------------------------------------------- bad inputs
def _raises(match_parts, root, split="train", **kw):
    with pytest.raises(DatasetError) as info:
        MiniPlacesLoader(root, split, **kw)
    msg = str(info.value)
    for part in match_parts:
        assert str(part) in msg, f"{part!r} not in message: {msg}"
    return msg


def test_missing_root(tmp_path):
    missing = tmp_path / "no_such_folder"
    msg = _raises([missing, "does not exist", "download_dataset.sh"], missing)
    assert "\n" not in msg


def test_unknown_split(tiny):
    _raises(["unknown split", "'bogus'"], tiny, split="bogus")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_missing_list(tiny, split):
    (tiny / f"{split}.txt").unlink()
    _raises(["list file not found", tiny / f"{split}.txt"], tiny, split=split)


def test_missing_train_list_when_counting_classes(tiny):
    (tiny / "categories.txt").unlink()
    (tiny / "train.txt").unlink()
    _raises([tiny / "train.txt"], tiny, split="val")


def test_empty_list(tiny):
    (tiny / "val.txt").write_text("\n")
    _raises(["list file is empty", tiny / "val.txt"], tiny, split="val")


@pytest.mark.parametrize("split,line_no,text,expect", [
    ("train", 2, "train/disc/00000002.jpg", "malformed line"),
    ("val", 3, "val/00000003.jpg 1 extra", "malformed line"),
    ("train", 4, "train/disc/00000004.jpg zero", "is not an integer"),
    ("val", 1, "val/00000001.jpg 1.5", "is not an integer"),
    ("train", 5, "train/square/00000001.jpg -1", "negative label -1"),
    ("test", 2, "test/00000002.jpg a b", "malformed line"),
])
def test_malformed_lines(tiny, split, line_no, text, expect):
    path = tiny / f"{split}.txt"
    _set_line(path, line_no, text)
    _raises([f"{path}:{line_no}", expect], tiny, split=split)


def test_label_out_of_range_vs_train_classes(tiny):
    """Without categories.txt, val labels are checked against max(train label) + 1."""
    (tiny / "categories.txt").unlink()
    path = tiny / "val.txt"
    _set_line(path, 4, "val/00000004.jpg 3")
    _raises([f"{path}:4", "label 3 out of range [0, 3)", "train.txt"], tiny, split="val")


def test_label_out_of_range_vs_categories(tiny):
    path = tiny / "train.txt"
    _set_line(path, 6, "train/square/00000002.jpg 7")
    _raises([f"{path}:6", "label 7 out of range [0, 3)", "categories.txt"], tiny)


def test_label_out_of_range_vs_argument(tiny):
    (tiny / "categories.txt").unlink()
    path = tiny / "train.txt"
    _raises([f"{path}:9", "label 2 out of range [0, 2)"], tiny, num_classes=2)


def test_missing_image(tiny):
    victim = tiny / "images" / "val" / "00000002.jpg"
    victim.unlink()
    lines = (tiny / "val.txt").read_text().splitlines()
    line_no = 1 + [i for i, line in enumerate(lines) if line.startswith("val/00000002.jpg ")][0]
    _raises(["image file not found", victim, f"val.txt:{line_no}"], tiny, split="val")


@pytest.mark.parametrize("content", [b"", b"not a jpeg at all", b"\xff\xd8\xff\xe0 truncated"])
def test_corrupt_image_raises_at_load_time(tiny, content):
    ds = MiniPlacesLoader(tiny, "train")  # construction only checks existence
    path, _ = ds.samples[2]
    Path(path).write_bytes(content)
    with pytest.raises(DatasetError, match="cannot decode image") as info:
        ds[2]
    assert path in str(info.value), str(info.value)
    ds[3]  # the others still load


@pytest.mark.parametrize("text,expect", [
    ("/a/abbey 0\n/b/bar\n", "categories.txt:2: malformed line"),
    ("/a/abbey 0\n/b/bar one\n", "categories.txt:2: class index 'one' is not an integer"),
    ("/a/abbey 0\n/b/bar 0\n", "categories.txt:2: class index 0 is negative or repeated"),
    ("/a/abbey 0\n/b/bar 2\n", "class indices must be 0..1"),
])
def test_bad_categories(tiny, text, expect):
    (tiny / "categories.txt").write_text(text)
    _raises([expect], tiny, split="val")


# ---------------------------------------------------------------------------- synthetic generator
def test_generator_is_deterministic(tmp_path, tiny_master):
    again = make_tiny_dataset(tmp_path / "again")
    a, b = _files(tiny_master), _files(again)
    assert a.keys() == b.keys()
    differing = [k for k in a if a[k] != b[k]]
    assert differing == [], f"same seed, different bytes: {differing[:5]}"


def test_different_seed_gives_different_images(tmp_path, tiny_master):
    other = make_tiny_dataset(tmp_path / "other", seed=1)
    a, b = _files(tiny_master), _files(other)
    images = [k for k in a if k.endswith(".jpg")]
    same = [k for k in images if a[k] == b.get(k)]
    assert same == [], f"seed 0 and 1 gave identical images: {same[:5]}"


def test_cached_build_is_reused(tiny, monkeypatch):
    marker = tiny / ".synthetic_dataset.json"
    before = (marker.stat().st_mtime_ns, tiny.stat().st_ino)

    def boom(*args, **kwargs):
        raise AssertionError("the dataset was rebuilt although the marker matched")

    monkeypatch.setattr(D, "_write_split", boom)
    assert make_tiny_dataset(tiny) == tiny.absolute()
    assert (marker.stat().st_mtime_ns, tiny.stat().st_ino) == before


def test_changed_parameters_rebuild(tiny):
    make_tiny_dataset(tiny, val_per_class=3)
    assert len(MiniPlacesLoader(tiny, "val")) == 3 * 3
    assert not [p.name for p in tiny.parent.iterdir() if p.name.startswith(".")], "temporary folders left"


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="refusing"):
        make_tiny_dataset(root)
    assert (root / "precious.txt").read_text() == "keep me"


def test_builds_into_empty_existing_folder(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    make_tiny_dataset(root, num_classes=2, train_per_class=1, val_per_class=1, test_per_class=1)
    assert len(MiniPlacesLoader(root, "train")) == 2


def test_default_root_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIPLACES_KIT_CACHE", str(tmp_path / "cache"))
    assert D.synthetic_dataset_root() == tmp_path / "cache" / "synthetic"
    assert D.synthetic_dataset_root(tmp_path / "x") == tmp_path / "x" / "synthetic"
    monkeypatch.delenv("MINIPLACES_KIT_CACHE")
    assert D.synthetic_dataset_root() == Path.home() / ".cache" / "miniplaces_kit" / "synthetic"
    monkeypatch.setenv("MINIPLACES_KIT_CACHE", str(tmp_path / "cache"))
    root = D.ensure_synthetic_dataset(**TINY)
    assert root == tmp_path / "cache" / "synthetic" and (root / "train.txt").is_file()


@pytest.mark.parametrize("bad", [dict(num_classes=0), dict(num_classes=len(D.SYNTHETIC_CLASSES) + 1),
                                 dict(train_per_class=0), dict(image_size=8), dict(quality=0)])
def test_generator_rejects_bad_parameters(tmp_path, bad):
    with pytest.raises(ValueError):
        make_tiny_dataset(tmp_path / "d", **bad)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("name", D.SYNTHETIC_CLASSES)
def test_every_class_renders(name):
    img = D.render_synthetic_image(np.random.default_rng(0), name, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.std() > 5, f"{name}: blank image (std {img.std():.2f})"


def test_mean_colour_classifier_is_near_chance(tmp_path):
    """Colours are drawn from the same distribution for every class: mean RGB carries no label."""
    root = make_tiny_dataset(tmp_path / "d", num_classes=10, train_per_class=40, val_per_class=30,
                             test_per_class=1, image_size=24)
    acc, chance = nearest_mean_colour_accuracy(root)
    assert acc < chance + 0.1, f"mean-colour accuracy {acc:.3f} vs chance {chance:.3f}"


def test_worker_init_fn_seeds_numpy_from_torch():
    import cv2
    threads = cv2.getNumThreads()
    try:
        torch.manual_seed(123)
        D.worker_init_fn(0)
        a = np.random.rand()
        torch.manual_seed(123)
        D.worker_init_fn(0)
        assert np.random.rand() == a
        assert cv2.getNumThreads() in (0, 1), cv2.getNumThreads()
    finally:
        cv2.setNumThreads(threads)
