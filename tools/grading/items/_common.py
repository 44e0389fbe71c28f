"""Helpers shared by several item modules (trusted grading process only; never shipped to the sandbox)."""
import torch

from .. import childlib
from ..compare import generator

F64 = torch.float64


def seeded_module(build, seed):
    """`build()` with torch's global RNG seeded `seed` (and restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def perturbed_state(model, seed, scale=0.05):
    """The state dict of `model` plus seeded noise on every floating tensor (so no bias is exactly 0 and no
    norm weight exactly 1)."""
    gen = generator(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


def small_cnn_setup(seed, frozen=(), grads=(), train=True):
    """A SmallCNN state (Part 3): seeded weights, random BatchNorm statistics, some frozen parameters and
    some existing `.grad`s (what an attack must leave untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = childlib.SmallCNN().double()
    childlib.randomize_bn_stats(model, generator(seed + 1))
    gen = generator(seed + 2)
    params = dict(model.named_parameters())
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {n: torch.randn(params[n].shape, generator=gen, dtype=F64) for n in grads},
            "frozen": list(frozen), "train": train}


def small_cnn(setup):
    """A SmallCNN (float64) in the state `setup` describes."""
    return childlib.load_model_state(childlib.SmallCNN().double(), setup)
