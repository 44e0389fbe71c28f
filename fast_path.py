"""The runner's fast path: the hooks `main.py` calls for `--decoded-cache`, `--gpu-augment`, `--amp`,
`--channels-last`, `--compile` and `--fused-optim` (each off by default; the plain OpenCV path is unchanged).

- `make_cached_loaders`: train/val loaders over the decoded cache (decoded_cache.py). With `gpu_augment`
  the whole split sits on the device as uint8 and :class:`DeviceBatchLoader` yields augmented batches
  (device_augment.py); otherwise a DataLoader runs the OpenCV transforms on the decoded arrays (no JPEG
  decoding). Both keep the runner's seeding contract (`loader.generator`, `loader.sampler.set_epoch`).
- `prepare_model`: `.to(device)` (channels_last with `--channels-last`); `training_module`: autocast
  (bf16) and torch.compile wrappers for the forward pass (checkpoints keep saving the plain model).
- `optimizer_kwargs`: `fused=True` where PyTorch has a fused kernel for the device, else `foreach=True`.
- `to_device`: non-blocking copy of a batch (channels_last when asked).

    python main.py ../data --gpu-augment --amp --channels-last --fused-optim   # on a GPU
"""
import torch
import torch.nn as nn


def memory_format(args):
    return torch.channels_last if getattr(args, "channels_last", False) else torch.contiguous_format


def to_device(x, args):
    """Batch `x (B, C, H, W)` to `args.device` (non-blocking from pinned memory; channels_last on request)."""
    return x.to(args.device, non_blocking=True, memory_format=memory_format(args))


def prepare_model(model, args):
    """The model on `args.device`, in channels_last memory format with `--channels-last`."""
    return model.to(args.device, memory_format=memory_format(args))


class AutocastForward(nn.Module):
    """Runs `module`'s forward under bf16 autocast and returns float32 logits `(N, num_classes)`.
    Holds no parameters of its own beyond `module`'s (same `parameters()`, `train()`, `eval()`)."""

    def __init__(self, module, device_type):
        super().__init__()
        self.module, self.device_type = module, device_type

    def forward(self, x):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.module(x).float()


def training_module(net, args, compile=True):
    """`net` wrapped for the forward passes of training and evaluation: torch.compile (`--compile`, unless
    `compile=False`), then bf16 autocast (`--amp`). Save `state_dict()` from the unwrapped model."""
    if compile and getattr(args, "compile", False):
        net = torch.compile(net)
    if getattr(args, "amp", False):
        net = AutocastForward(net, args.device.type)
    return net


def optimizer_kwargs(args):
    """`{"fused": True}` when `--fused-optim` and the device has fused optimizer kernels, `{"foreach":
    True}` otherwise with `--fused-optim`, `{}` without it."""
    if not getattr(args, "fused_optim", False):
        return {}
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    return {"fused": True} if args.device.type in _get_fused_kernels_supported_devices() else {"foreach": True}


class DeviceBatchLoader:
    """Batches of a whole split held as one uint8 tensor `(N, S, S, 3)` on the device.

    Train: indices from `sampler` (a RandomSampler over `generator`, or a DistributedSampler: each rank
    its shard), `drop_last`; each batch is gathered on the device and augmented by `augment(images,
    generator)`, whose parameters come from a CPU generator seeded from `generator` at each `__iter__` (so
    an epoch is a pure function of the seed the runner gives `generator`). Eval (`augment=None`): the
    given `indices` in order, `transform(images)`. Yields `(input (B, 3, h, w) float32, target (B,) int64)`.
    """

    def __init__(self, images, labels, batch_size, sampler=None, generator=None, augment=None, transform=None,
                 indices=None, drop_last=True, memory_format=torch.contiguous_format):
        self.images, self.labels = images, labels
        self.batch_size, self.sampler, self.generator = batch_size, sampler, generator
        self.augment, self.transform, self.indices = augment, transform, indices
        self.drop_last, self.memory_format = drop_last, memory_format
        self.aug_generator = torch.Generator()

    def _order(self):
        if self.sampler is not None:
            return torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)
        return torch.as_tensor(self.indices, dtype=torch.long)

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.augment is not None:
            seed_source = self.generator if self.generator is not None else None
            self.aug_generator.manual_seed(int(torch.randint(2 ** 62, (), generator=seed_source)))
        order = self._order()
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            dev_idx = idx.to(self.images.device, non_blocking=True)
            batch = self.images.index_select(0, dev_idx)  # (B, S, S, 3) uint8
            if self.augment is not None:
                x = self.augment(batch, self.aug_generator, memory_format=self.memory_format)
            else:
                x = self.transform(batch)
            yield x, self.labels.index_select(0, dev_idx)


def make_cached_loaders(args, root, need_train, train_pipeline, val_pipeline):
    """Loaders over the decoded cache. Returns `(train_loader or None, val_loader, num_classes)`; the val
    loader carries `full_dataset` and `indices` like the runner's own (each process every world_size-th
    image). Raises ValueError when `--gpu-augment` cannot run `train_pipeline` on the device."""
    import custom_augment
    import custom_dataloader
    import decoded_cache
    import device_augment

    augment = None
    if args.gpu_augment and need_train:  # refuse an unsupported pipeline before decoding anything
        augment = device_augment.DeviceAugment.from_pipeline(train_pipeline)
    build_workers = max(1, args.workers) if args.workers else 0
    size = getattr(args, "cache_size", None) or 128
    builder = getattr(args, "local_rank", 0) == 0  # under DDP, local rank 0 builds while the others wait
    wait = args.distributed and torch.distributed.is_available() and torch.distributed.is_initialized()
    if wait and not builder:
        torch.distributed.barrier()
    train_set = None
    if need_train:
        train_set = decoded_cache.DecodedSplit(root, "train", size=size, transforms=train_pipeline,
                                               workers=build_workers, verbose=args.rank == 0)
    num_classes = train_set.num_classes if train_set is not None else None
    val_set = decoded_cache.DecodedSplit(root, "val", size=size, transforms=val_pipeline, num_classes=num_classes,
                                         workers=build_workers, verbose=args.rank == 0)
    if wait and builder:
        torch.distributed.barrier()
    num_classes = val_set.num_classes
    val_indices = list(range(args.rank, len(val_set), args.world_size))
    generator = torch.Generator().manual_seed(args.seed)

    def train_sampler(dataset):
        if args.distributed:
            return torch.utils.data.DistributedSampler(dataset, num_replicas=args.world_size, rank=args.rank,
                                                       shuffle=True, seed=args.seed, drop_last=True)
        return torch.utils.data.RandomSampler(dataset, generator=generator)

    train_loader = None
    if not args.gpu_augment:
        common = dict(num_workers=args.workers, pin_memory=args.device.type == "cuda",
                      worker_init_fn=custom_dataloader.worker_init_fn)
        if train_set is not None:
            train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size,
                                                       sampler=train_sampler(train_set), drop_last=True,
                                                       generator=generator, **common)
        val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, val_indices),
                                                 batch_size=args.batch_size, shuffle=False, **common)
    else:
        fmt = memory_format(args)
        if train_set is not None:
            train_loader = DeviceBatchLoader(
                train_set.as_tensor(args.device), torch.from_numpy(train_set.labels).to(args.device),
                args.batch_size, sampler=train_sampler(train_set), generator=generator, augment=augment,
                memory_format=fmt)
        mean, std = custom_augment.IMAGENET_MEAN, custom_augment.IMAGENET_STD
        for t in getattr(val_pipeline, "transforms", []):
            if isinstance(t, custom_augment.Normalize):
                mean, std = t.mean, t.std
        img_size = args.img_size

        def val_tf(images):
            return device_augment.val_transform(images, img_size, mean, std, memory_format=fmt)

        val_loader = DeviceBatchLoader(val_set.as_tensor(args.device), torch.from_numpy(val_set.labels).to(args.device),
                                       args.batch_size, transform=val_tf, indices=val_indices, drop_last=False)
    val_loader.full_dataset = val_set
    val_loader.indices = val_indices
    return train_loader, val_loader, num_classes
