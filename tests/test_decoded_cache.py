"""Tests of decoded_cache.py: the decoded-dataset cache holds exactly what OpenCV decodes, is reused,
rebuilt when stale, never left half-written, built the same in parallel, and reports bad images clearly;
the runner's cached loaders shard the split over processes like DistributedSampler.

    python -m pytest tests/test_decoded_cache.py
"""
import argparse
import os

import numpy as np
import pytest
import torch

import custom_dataloader
import decoded_cache
import fast_path


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "data"
    custom_dataloader.build_synthetic_dataset(root, seed=2, num_classes=3, train_per_class=5, val_per_class=3,
                                              test_per_class=1)
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MINIPLACES_KIT_CACHE", str(folder))
    return folder


def test_cache_holds_the_decoded_pixels_and_labels(data, cache):
    split = decoded_cache.DecodedSplit(data, "train", size=128, workers=0, verbose=False)
    reader = custom_dataloader.MiniPlacesLoader(data, "train")
    assert split.built and len(split) == len(reader) == 15
    assert split.images.shape == (15, 128, 128, 3) and split.images.dtype == np.uint8
    for i in range(len(reader)):
        img, label = reader[i]
        assert np.array_equal(split.images[i], img), f"image {i} differs from cv2's decoding"
        assert split.labels[i] == label and split[i][1] == label
    assert str(cache) in split.array_path


def test_second_open_reuses_and_stale_entries_rebuild(data, cache):
    first = decoded_cache.DecodedSplit(data, "val", size=128, workers=0, verbose=False)
    mtime = os.stat(first.array_path).st_mtime_ns
    again = decoded_cache.DecodedSplit(data, "val", size=128, workers=0, verbose=False)
    assert first.built and not again.built and os.stat(again.array_path).st_mtime_ns == mtime
    # another stored size is another entry
    small = decoded_cache.DecodedSplit(data, "val", size=64, workers=0, verbose=False)
    assert small.built and small.array_path != first.array_path and small.images.shape[1:] == (64, 64, 3)
    # replace one image: the fingerprint changes, the entry is rebuilt with the new pixels
    path = first.samples[0][0]
    new = np.full((128, 128, 3), 200, np.uint8)
    import cv2
    cv2.imwrite(path, new)
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    rebuilt = decoded_cache.DecodedSplit(data, "val", size=128, workers=0, verbose=False)
    assert rebuilt.built
    assert np.abs(rebuilt.images[0].astype(int) - 200).max() <= 2  # JPEG of a flat image
    # a changed list file is another key
    with open(data / "val.txt") as f:
        lines = f.readlines()
    with open(data / "val.txt", "w") as f:
        f.writelines(lines[:-1])
    shorter = decoded_cache.DecodedSplit(data, "val", size=128, workers=0, verbose=False)
    assert shorter.built and len(shorter) == len(lines) - 1 and shorter.array_path != rebuilt.array_path


def test_truncated_array_or_missing_meta_is_rebuilt(data, cache):
    split = decoded_cache.DecodedSplit(data, "val", size=128, workers=0, verbose=False)
    with open(split.array_path, "r+b") as f:
        f.truncate(1000)  # a killed copy, a full disk...
    assert decoded_cache.DecodedSplit(data, "val", size=128, workers=0, verbose=False).built
    os.remove(split.array_path[:-len(".u8")] + ".json")
    again = decoded_cache.DecodedSplit(data, "val", size=128, workers=0, verbose=False)
    assert again.built and np.array_equal(again.images, split.images)


def test_a_failed_build_leaves_no_entry(data, cache):
    reader = custom_dataloader.MiniPlacesLoader(data, "val")
    with open(reader.samples[2][0], "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(custom_dataloader.DatasetError, match="cannot decode"):
        decoded_cache.DecodedSplit(data, "val", size=128, workers=2, verbose=False)
    leftovers = sorted(p.name for p in (cache / "decoded").iterdir())
    assert leftovers == [], f"a failed build left {leftovers}"


def test_parallel_build_equals_serial_build(data, tmp_path):
    serial = decoded_cache.DecodedSplit(data, "train", size=96, cache_dir=tmp_path / "a", workers=0,
                                        verbose=False)
    parallel_paths = [p for p, _ in serial.samples]
    out = tmp_path / "b.u8"
    decoded_cache.build_cache(parallel_paths, serial.labels, str(out), 96, workers=2, chunk=4)
    got = np.memmap(out, dtype=np.uint8, mode="r", shape=serial.images.shape)
    assert np.array_equal(got, serial.images)
    assert np.array_equal(np.load(str(out)[:-3] + ".labels.npy"), serial.labels)


def args_for(rank, world_size, gpu_augment):
    return argparse.Namespace(workers=0, rank=rank, world_size=world_size, distributed=world_size > 1,
                              seed=4, batch_size=2, gpu_augment=gpu_augment, device=torch.device("cpu"),
                              img_size=32, channels_last=False)


@pytest.mark.parametrize("gpu_augment", [False, True])
def test_each_rank_takes_its_shard(data, cache, gpu_augment):
    """Under DDP each of 2 processes sees a disjoint half of the training set (DistributedSampler) and
    every world_size-th validation image; one epoch's order is a function of the seed and epoch."""
    import student_code

    seen = []
    for rank in (0, 1):
        args = args_for(rank, 2, gpu_augment)
        train, val, num_classes = fast_path.make_cached_loaders(
            args, str(data), True, student_code.get_train_transforms(32), student_code.get_val_transforms(32))
        assert num_classes == 3 and val.indices == list(range(rank, 9, 2))
        train.sampler.set_epoch(1)
        order = list(iter(train.sampler))
        assert len(order) == 7 and len(train) == 3  # 15 images, drop_last: 7 each, 3 batches of 2
        xs, ys = zip(*[(x, y) for x, y in train])
        assert all(x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 for x in xs)
        assert torch.equal(torch.cat(ys), torch.as_tensor(train_labels(train)[order[:6]]))
        seen.append(set(order))
        vx = torch.cat([x for x, _ in val])
        assert vx.shape == (len(val.indices), 3, 32, 32)
    assert not seen[0] & seen[1], "ranks overlap"


def train_labels(loader):
    ds = loader.dataset if hasattr(loader, "dataset") else None
    labels = ds.labels if ds is not None else loader.labels.numpy()
    return np.asarray(labels)


def test_device_loader_epoch_is_a_function_of_the_seed(data, cache):
    import student_code

    args = args_for(0, 1, True)
    train, _, _ = fast_path.make_cached_loaders(args, str(data), True, student_code.get_train_transforms(32),
                                                student_code.get_val_transforms(32))
    train.generator.manual_seed(11)
    a = [x for x, _ in train]
    train.generator.manual_seed(11)
    b = [x for x, _ in train]
    train.generator.manual_seed(12)
    c = [x for x, _ in train]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_command_line_builds_then_reports_up_to_date(data, cache, tmp_path, capsys):
    assert decoded_cache.main([str(data), "-j", "0"]) == 0
    assert decoded_cache.main([str(data), "-j", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("(built)") == 2 and out.count("(up to date)") == 2, out
    assert decoded_cache.main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err and len(err.strip().splitlines()) == 1, err
