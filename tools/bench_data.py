"""Benchmark the kit's OpenCV data pipeline against PIL + torchvision (staff tool).

Run:  python tools/bench_data.py [--n 2000] [--threads 1] [--repeat 3] [--root DATA_FOLDER]

Uses the first ``n`` images of ``<root>/train.txt`` (default root: the embedded
synthetic dataset, built on first use; pass a MiniPlaces folder to bench real
photos) and measures, in one process with torch and OpenCV limited to
``--threads`` threads, images per second per core for:

- decode:          ``cv2.imread`` + ``cvtColor(BGR->RGB)``  vs  ``PIL.Image.open().convert('RGB')``
- decode + train:  the kit's train transforms (``student_code.get_train_transforms(128)``, or an
                   equivalent list when it is not importable)  vs  torchvision's ``RandomResizedCrop(128)``,
                   ``RandomHorizontalFlip``, ``ColorJitter(brightness=0.15, saturation=0.15)``,
                   ``RandomRotation(15)``, ``ToTensor``, ``Normalize`` on PIL images
- decode + val:    ``student_code.get_val_transforms(128)``  vs  ``Resize(128)``, ``CenterCrop(128)``,
                   ``ToTensor``, ``Normalize``

The files are read once before timing (page cache warm).  Each measurement runs
``--repeat`` times, kit and PIL interleaved; the best repeat counts.  "Per core"
= images / CPU seconds of this process (robust to other load on the machine);
wall-clock figures are printed alongside.  Target: >= 1000 img/s per core for
the kit's decode + train pipeline.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_TRAIN_IMG_PER_S = 1000.0


def kit_pipelines(img_size):
    """The kit's (train, val) transforms: from student_code if importable, else the equivalent lists."""
    import custom_augment as T
    try:
        import student_code
        return student_code.get_train_transforms(img_size), student_code.get_val_transforms(img_size), \
            "student_code.get_train_transforms / get_val_transforms"
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to the documented equivalent
        train = T.Compose([T.RandomSizedCrop(img_size, scale=(0.35, 1.0)), T.RandomHorizontalFlip(),
                           T.RandomColor(0.15), T.RandomRotate(15), T.ToTensor(), T.Normalize()])
        val = T.Compose([T.Scale(img_size), T.CenterCrop(img_size), T.ToTensor(), T.Normalize()])
        return train, val, f"built-in equivalent (student_code not usable: {type(exc).__name__})"


def pil_pipelines(img_size):
    """torchvision (train, val) transforms on PIL images, matching the kit's as closely as it allows."""
    import torchvision.transforms as TV
    from custom_augment import IMAGENET_MEAN, IMAGENET_STD
    train = TV.Compose([TV.RandomResizedCrop(img_size, scale=(0.35, 1.0)), TV.RandomHorizontalFlip(),
                        TV.ColorJitter(brightness=0.15, saturation=0.15),
                        TV.RandomRotation(15, interpolation=TV.InterpolationMode.BILINEAR),
                        TV.ToTensor(), TV.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    val = TV.Compose([TV.Resize(img_size), TV.CenterCrop(img_size), TV.ToTensor(),
                      TV.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return train, val


def time_run(fn, paths):
    """Run ``fn`` on every path -> (cpu seconds, wall seconds)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for p in paths:
        fn(p)
    return time.process_time() - cpu0, time.perf_counter() - wall0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats per measurement; best counts (default 3)")
    parser.add_argument("--img-size", type=int, default=128, help="output size of the pipelines (default 128)")
    parser.add_argument("--root", default=None, help="data folder in MiniPlaces layout (default: synthetic)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.threads < 1 or args.repeat < 1:
        parser.error("--n, --threads and --repeat must be >= 1")

    import cv2
    import torch
    from PIL import Image

    import custom_dataloader as D

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    root = args.root
    if root is None:
        start = time.perf_counter()
        root = D.ensure_synthetic_dataset()
        print(f"synthetic dataset at {root} (ready in {time.perf_counter() - start:.1f} s)")
    samples = D.MiniPlacesLoader(root, "train").samples
    paths = [samples[i % len(samples)][0] for i in range(args.n)]
    for p in set(paths):  # warm the page cache
        with open(p, "rb") as f:
            f.read()

    def cv_decode(p):
        return D.read_image_rgb(p)

    def pil_decode(p):
        with Image.open(p) as im:
            return im.convert("RGB")

    kit_train, kit_val, kit_source = kit_pipelines(args.img_size)
    pil_train, pil_val = pil_pipelines(args.img_size)
    rows = [
        ("decode", cv_decode, pil_decode),
        ("decode + train transforms", lambda p: kit_train(cv_decode(p)), lambda p: pil_train(pil_decode(p))),
        ("decode + val transforms", lambda p: kit_val(cv_decode(p)), lambda p: pil_val(pil_decode(p))),
    ]
    torch.manual_seed(0)
    for _, kit_fn, pil_fn in rows:  # warm-up (lazy imports, first-call allocations)
        for p in paths[:20]:
            kit_fn(p)
            pil_fn(p)

    print(f"{len(paths)} images from {root}, {args.threads} thread(s), best of {args.repeat}; "
          f"kit transforms: {kit_source}")
    header = f"{'pipeline':<28}{'kit img/s/core':>16}{'PIL img/s/core':>16}{'kit/PIL':>9}{'kit wall':>10}{'PIL wall':>10}"
    print(header)
    print("-" * len(header))
    results = {}
    for name, kit_fn, pil_fn in rows:
        best = {"kit": (float("inf"), float("inf")), "pil": (float("inf"), float("inf"))}
        for r in range(args.repeat):
            order = (("kit", kit_fn), ("pil", pil_fn)) if r % 2 == 0 else (("pil", pil_fn), ("kit", kit_fn))
            for key, fn in order:
                cpu, wall = time_run(fn, paths)
                best[key] = (min(best[key][0], cpu), min(best[key][1], wall))
        kit_rate = len(paths) / max(best["kit"][0], 1e-9)
        pil_rate = len(paths) / max(best["pil"][0], 1e-9)
        results[name] = kit_rate
        print(f"{name:<28}{kit_rate:>16.0f}{pil_rate:>16.0f}{kit_rate / pil_rate:>9.2f}"
              f"{len(paths) / best['kit'][1]:>10.0f}{len(paths) / best['pil'][1]:>10.0f}")
    train_rate = results["decode + train transforms"]
    verdict = "meets" if train_rate >= TARGET_TRAIN_IMG_PER_S else "MISSES"
    print(f"kit decode + train: {train_rate:.0f} img/s per core {verdict} the target of "
          f"{TARGET_TRAIN_IMG_PER_S:.0f} img/s per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
