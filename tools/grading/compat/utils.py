"""`utils` of the course's templates (compatibility module for the sandbox): image I/O, `resize_image`,
`AverageMeter`, `LinearWarmupCosineAnnealingLR`, and the given grid helpers `vis_grid` /
`vis_grad_attention`. Same names, signatures and behaviour as the templates documented them; written here
on top of OpenCV, torchvision and PyTorch's schedulers.
"""
import math

import cv2
import torch
from torchvision.utils import make_grid

__all__ = ["load_image", "save_image", "resize_image", "AverageMeter", "LinearWarmupCosineAnnealingLR",
           "vis_grid", "vis_grad_attention"]


def load_image(path):
    """An RGB `(H, W, 3)` uint8 image read with OpenCV (which reads BGR)."""
    img = cv2.imread(path)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img[:, :, ::-1]


def save_image(path, img):
    """Write an RGB `(H, W, 3)` uint8 image; returns OpenCV's success flag."""
    return cv2.imwrite(path, img[:, :, ::-1].copy())


def resize_image(img, new_size, interpolation):
    """`cv2.resize(img, new_size (w, h), interpolation)`; nearest neighbour uses `INTER_NEAREST_EXACT`
    (OpenCV's plain INTER_NEAREST rounds pixel centres inconsistently, which the templates worked around)."""
    if interpolation == cv2.INTER_NEAREST:
        interpolation = cv2.INTER_NEAREST_EXACT
    return cv2.resize(img, tuple(int(s) for s in new_size), interpolation=interpolation)


class AverageMeter:
    """Running value / sum / count / average of a scalar."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val, self.avg, self.sum, self.count = 0.0, 0.0, 0.0, 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


class LinearWarmupCosineAnnealingLR(torch.optim.lr_scheduler.LambdaLR):
    """Per-iteration schedule: linear warmup from `warmup_start_lr` to the base lr over `warmup_epochs`
    steps, then cosine annealing to `eta_min` at `max_epochs` (the templates' signature)."""

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=1e-8, last_epoch=-1):
        self.warmup_epochs, self.max_epochs = int(warmup_epochs), int(max_epochs)
        self.warmup_start_lr, self.eta_min = float(warmup_start_lr), float(eta_min)
        bases = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        lambdas = [self._factor(base) for base in bases]
        super().__init__(optimizer, lambdas, last_epoch)

    def _factor(self, base):
        def factor(step):
            if base == 0:
                return 0.0
            if step < self.warmup_epochs:
                lr = self.warmup_start_lr + step * (base - self.warmup_start_lr) / max(1, self.warmup_epochs - 1)
            else:
                span = max(1, self.max_epochs - self.warmup_epochs)
                t = min(step - self.warmup_epochs, span) / span
                lr = self.eta_min + 0.5 * (base - self.eta_min) * (1.0 + math.cos(math.pi * t))
            return lr / base
        return factor


def vis_grid(input, n_rows=10):
    """A mosaic `(3, HH, WW)` of a batch `(N, C, H, W)`, each image scaled to [0, 1]."""
    return make_grid(input.detach().cpu(), nrow=n_rows, normalize=True)


def vis_grad_attention(input, vis_alpha=2.0, n_rows=10, vis_output=None):
    """The mosaic of `input`; with a saliency map `vis_output (N, 1, H, W)`, pixels whose saliency exceeds
    `vis_alpha` times the mean are lit in the red channel."""
    grid = make_grid(input.detach().cpu(), nrow=n_rows, normalize=True)
    if vis_output is not None:
        maps = make_grid(vis_output.detach().cpu(), nrow=n_rows, normalize=True)[0]  # (HH, WW)
        mask = (maps > vis_alpha * maps.mean()).float()
        grid[0] = torch.maximum(grid[0], mask)
    return grid
