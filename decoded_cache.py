"""The decoded-dataset cache: a MiniPlaces-layout split decoded once into a uint8 memory-mapped array.

Decoding 100k JPEGs every epoch is what makes the plain OpenCV path slow on a GPU machine. The first run
decodes the split once (in parallel, with a progress bar) into ``(N, S, S, 3)`` uint8 RGB under the kit's
cache (``$MINIPLACES_KIT_CACHE``, else ``~/.cache/miniplaces_kit``, folder ``decoded/``); later runs map
the file in well under a second. 100k x 128 x 128 x 3 is 4.9 GB.

- Key: sha256 of the list file's bytes, the data folder's absolute path, the stored size ``S`` and the
  cache format version. The meta file also records the images' total byte count and newest mtime, so a
  replaced image makes the entry stale: it is rebuilt.
- Written atomically: the array is built in ``<key>.u8.tmp<pid>``, flushed, renamed; the labels likewise;
  ``<key>.json`` (the meta) is written last, so a killed build leaves no entry that looks valid.
- Images whose size is not ``S x S`` are resized (shorter side to ``S``, as ``Scale``) and centre-cropped;
  MiniPlaces images are all 128 x 128, so with ``S = 128`` the cache holds the exact decoded pixels.

Usage::

    split = DecodedSplit("../data", "train", size=128)        # builds the cache on the first call
    split.images            # np.memmap (N, 128, 128, 3) uint8 RGB
    split.labels            # np.ndarray (N,) int64
    python decoded_cache.py ../data [--size 128] [-j 8]       # build train and val ahead of time
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

CACHE_VERSION = 1


def cache_root(cache_dir=None):
    """``<cache>/decoded`` with ``<cache>`` = ``cache_dir``, else ``$MINIPLACES_KIT_CACHE``, else
    ``~/.cache/miniplaces_kit`` (the synthetic dataset's cache, too)."""
    if cache_dir is None:
        cache_dir = os.environ.get("MINIPLACES_KIT_CACHE") or Path.home() / ".cache" / "miniplaces_kit"
    return Path(cache_dir).expanduser().absolute() / "decoded"


def cache_key(list_path, root, size):
    """sha256 hex of (format version, data folder, stored size, list file bytes)."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{Path(root).absolute()}|{int(size)}|".encode())
    with open(list_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_fingerprint(paths):
    """``(total bytes, newest mtime_ns)`` of ``paths``: changes when any image is replaced."""
    total, newest = 0, 0
    for p in paths:
        st = os.stat(p)
        total += st.st_size
        newest = max(newest, st.st_mtime_ns)
    return total, newest


def decode_to_size(path, size):
    """Decode ``path`` to ``(size, size, 3)`` uint8 RGB (shorter side to ``size`` + centre crop when the
    image has another size; the exact pixels otherwise)."""
    import custom_augment
    import custom_dataloader

    img = custom_dataloader.read_image_rgb(path)
    if img.shape[0] != size or img.shape[1] != size:
        img = custom_augment.CenterCrop(size)(custom_augment.Scale(size)(img))
    return img


def _decode_chunk(array_path, shape, paths, start, size):
    """Worker: decode ``paths`` into rows ``start:start+len(paths)`` of the memmap at ``array_path``."""
    import cv2

    cv2.setNumThreads(1)
    out = np.memmap(array_path, dtype=np.uint8, mode="r+", shape=shape)
    for j, p in enumerate(paths):
        out[start + j] = decode_to_size(p, size)
    out.flush()
    del out
    return len(paths)


def _write_json_atomic(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build_cache(paths, labels, array_path, size, workers=None, desc="decoding", chunk=256):
    """Decode ``paths`` into a new ``(N, size, size, 3)`` uint8 file at ``array_path`` (atomically) and
    ``labels`` into ``<array_path minus .u8>.labels.npy``. ``workers``: processes (``None``: all CPUs;
    0: in this process)."""
    from tqdm import tqdm

    n = len(paths)
    shape = (n, size, size, 3)
    tmp = f"{array_path}.tmp{os.getpid()}"
    np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape).flush()  # allocate
    workers = os.cpu_count() if workers is None else workers
    starts = list(range(0, n, chunk))
    try:
        with tqdm(total=n, desc=desc, unit="img", dynamic_ncols=True, mininterval=0.5) as bar:
            if workers <= 0 or len(starts) == 1:
                for s in starts:
                    bar.update(_decode_chunk(tmp, shape, paths[s:s + chunk], s, size))
            else:
                import multiprocessing

                # spawn, not fork: a fork of a process with live torch/OpenMP threads can deadlock
                ctx = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                    futures = [pool.submit(_decode_chunk, tmp, shape, paths[s:s + chunk], s, size) for s in starts]
                    for fut in concurrent.futures.as_completed(futures):
                        bar.update(fut.result())  # a DatasetError from a worker is re-raised here
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, array_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    labels_path = str(array_path)[:-len(".u8")] + ".labels.npy"
    tmp_labels = f"{labels_path}.tmp{os.getpid()}.npy"
    np.save(tmp_labels, np.asarray(labels, dtype=np.int64))
    os.replace(tmp_labels, labels_path)


class DecodedSplit(Dataset):
    """One split of a MiniPlaces-layout folder, decoded into the cache (built or rebuilt when needed).

    Args:
        root: the data folder. split: ``"train"``, ``"val"`` or ``"test"``.
        size: stored image side ``S``. transforms: optional callable on the ``(S, S, 3)`` uint8 image
            (the OpenCV pipeline), as in ``MiniPlacesLoader``.
        num_classes: as in ``MiniPlacesLoader``. cache_dir: see :func:`cache_root`.
        workers: decoding processes for a build (``None``: all CPUs). verbose: print build/load lines.

    Attributes: ``images`` (np.memmap ``(N, S, S, 3)`` uint8 RGB, opened lazily in each process),
    ``labels`` (``(N,)`` int64), ``samples``, ``num_classes``, ``classes``, ``root``, ``split``, ``built``
    (whether this call decoded the split). ``dataset[i]`` -> ``(transforms(image) or image, label)``.
    """

    def __init__(self, root, split="train", size=128, transforms=None, num_classes=None, cache_dir=None,
                 workers=None, verbose=True):
        import custom_dataloader

        reader = custom_dataloader.MiniPlacesLoader(root, split=split, num_classes=num_classes)
        self.root, self.split, self.size, self.transforms = reader.root, split, int(size), transforms
        self.samples, self.num_classes, self.classes = reader.samples, reader.num_classes, reader.classes
        paths = [p for p, _ in self.samples]
        list_path = Path(reader.root) / f"{split}.txt"
        key = cache_key(list_path, reader.root, self.size)
        folder = cache_root(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.array_path = str(folder / f"{key[:32]}.u8")
        meta_path = folder / f"{key[:32]}.json"
        fingerprint = list(files_fingerprint(paths))
        meta = {"version": CACHE_VERSION, "key": key, "root": str(Path(reader.root).absolute()), "split": split,
                "list": str(list_path), "count": len(paths), "size": self.size, "fingerprint": fingerprint}
        self.built = not self._valid(meta_path, meta)
        if self.built:
            if meta_path.exists():
                os.remove(meta_path)  # stale: rebuilt below, the meta written last
            if verbose:
                print(f"decoded cache: decoding {len(paths)} {split} images of {reader.root} into "
                      f"{self.array_path} ({len(paths) * self.size * self.size * 3 / 1e9:.2f} GB)", flush=True)
            build_cache(paths, [label for _, label in self.samples], self.array_path, self.size, workers,
                        desc=f"decoding {split}")
            _write_json_atomic(meta, meta_path)
        self.labels = np.load(self.array_path[:-len(".u8")] + ".labels.npy")
        self._images = None

    def _valid(self, meta_path, meta):
        """The entry exists, its meta matches (list, folder, size, images' fingerprint), the array has
        the expected length in bytes."""
        try:
            with open(meta_path) as f:
                stored = json.load(f)
        except (OSError, ValueError):
            return False
        expected_bytes = meta["count"] * self.size * self.size * 3
        labels_ok = os.path.isfile(self.array_path[:-len(".u8")] + ".labels.npy")
        return (stored == meta and labels_ok and os.path.isfile(self.array_path)
                and os.path.getsize(self.array_path) == expected_bytes)

    @property
    def images(self):
        if self._images is None:
            self._images = np.memmap(self.array_path, dtype=np.uint8, mode="r",
                                     shape=(len(self.samples), self.size, self.size, 3))
        return self._images

    def __getstate__(self):  # DataLoader workers (spawn) re-open the map instead of pickling 4.9 GB
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        img = np.array(self.images[index])  # (S, S, 3) uint8, a private copy (transforms may write)
        if self.transforms is not None:
            img = self.transforms(img)
        return img, int(self.labels[index])

    def as_tensor(self, device="cpu", chunk=4096):
        """The whole split as one ``(N, S, S, 3)`` uint8 tensor on ``device``, copied from the map in
        chunks of ``chunk`` images (no second full host copy on the way to a GPU)."""
        out = torch.empty(self.images.shape, dtype=torch.uint8, device=device)
        for s in range(0, len(self), chunk):
            block = torch.from_numpy(np.array(self.images[s:s + chunk]))  # (chunk, S, S, 3), writable copy
            out[s:s + chunk].copy_(block.pin_memory() if out.is_cuda else block, non_blocking=out.is_cuda)
        if out.is_cuda:
            torch.cuda.current_stream(out.device).synchronize()  # the pinned blocks must outlive the copies
        return out


def main(argv=None):
    p = argparse.ArgumentParser(description="Decode MiniPlaces splits into the decoded cache ahead of time.")
    p.add_argument("root", help="data folder (MiniPlaces layout)")
    p.add_argument("--size", type=int, default=128, help="stored image side")
    p.add_argument("--splits", default="train,val", help="comma-separated splits")
    p.add_argument("-j", "--workers", type=int, default=None, help="decoding processes (default: all CPUs)")
    args = p.parse_args(argv)
    import custom_dataloader

    try:
        for split in args.splits.split(","):
            s = DecodedSplit(args.root, split, size=args.size, workers=args.workers)
            print(f"{split}: {len(s)} images at {s.array_path} ({'built' if s.built else 'up to date'})")
    except custom_dataloader.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
