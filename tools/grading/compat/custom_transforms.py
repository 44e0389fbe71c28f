"""`custom_transforms` of the course's templates (compatibility module for the sandbox): the course's
transform names and constructor arguments, mapped onto the kit's `custom_augment` implementations.

Course arguments that the kit spells differently: `RandomSizedCrop(size, interpolations, area_range,
ratio_range, num_trials)` -> `custom_augment.RandomSizedCrop(size, scale=area_range, ratio=ratio_range,
interpolations)`; `interpolations=None` meant bilinear; `Normalize(mean, std, scale=1.0)` multiplies by
`scale` first; `RandomRotate(degree_range, interpolations)` rotates bilinearly whatever the list.
"""
import cv2

import custom_augment as _aug
from custom_augment import CenterCrop, Compose, Denormalize, RandomColor, RandomHorizontalFlip, ToTensor

__all__ = ["Compose", "Scale", "CenterCrop", "RandomSizedCrop", "RandomHorizontalFlip", "RandomColor",
           "RandomRotate", "ToTensor", "Normalize", "Denormalize"]

_DEFAULT_INTERPOLATIONS = [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC]


def _interps(interpolations):
    return [cv2.INTER_LINEAR] if interpolations is None else list(interpolations)


class Scale(_aug.Scale):
    """Resize (shorter side to `size`, or to `(w, h)`), interpolation drawn from `interpolations`."""

    def __init__(self, size, interpolations=_DEFAULT_INTERPOLATIONS):
        super().__init__(size, interpolations=_interps(interpolations))


class RandomSizedCrop(_aug.RandomSizedCrop):
    """Random area / aspect-ratio crop resized to `size` (the course's argument names)."""

    def __init__(self, size, interpolations=_DEFAULT_INTERPOLATIONS, area_range=(0.25, 1.0),
                 ratio_range=(0.8, 1.2), num_trials=10):
        super().__init__(size, scale=tuple(area_range), ratio=tuple(ratio_range),
                         interpolations=_interps(interpolations))
        self.num_trials = int(num_trials)


class RandomRotate(_aug.RandomRotate):
    """Random rotation within +-`degree_range` degrees (cropped to the largest inner rectangle)."""

    def __init__(self, degree_range, interpolations=_DEFAULT_INTERPOLATIONS):
        super().__init__(degree_range)
        self.interpolations = _interps(interpolations)


class Normalize(_aug.Normalize):
    """`(x * scale - mean) / std` per channel."""

    def __init__(self, mean, std, scale=1.0):
        super().__init__(mean, std)
        self.scale = float(scale)

    def __call__(self, tensor):
        return super().__call__(tensor * self.scale if self.scale != 1.0 else tensor)
