"""Detect forbidden library calls while student code runs (used by the tests and the autograder).

`forbid_aten(*substrings)` is a context manager built on `TorchDispatchMode`: every ATen op dispatched
inside it (forward or backward, CPU or CUDA) whose name contains one of the substrings raises
`ForbiddenCallError`. Aliasing a function (`from torch.nn.functional import conv2d as c`) cannot dodge it,
because the check happens where the op reaches the dispatcher, not where Python looks the name up.

`forbid_python(*objects)` additionally replaces Python-level entry points (e.g.
`torch.nn.MultiheadAttention.forward`) for the duration, for APIs that decompose into allowed ops.
"""
import contextlib
import functools
import importlib

from torch.utils._python_dispatch import TorchDispatchMode

CONV_OPS = ("conv",)  # aten::convolution, _convolution, conv2d, mkldnn_convolution, convolution_backward, ...
ATTENTION_OPS = ("scaled_dot_product", "multi_head_attention", "_flash_attention", "_efficient_attention")
ATTENTION_PY = ("torch.nn.functional.scaled_dot_product_attention",
                "torch.nn.functional.multi_head_attention_forward",
                "torch.nn.MultiheadAttention.forward")


class ForbiddenCallError(RuntimeError):
    """Raised when student code reaches a forbidden operator."""


class _Spy(TorchDispatchMode):
    def __init__(self, substrings, what):
        super().__init__()
        self.substrings = substrings
        self.what = what

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.name() if hasattr(func, "name") else func)
        if any(s in name for s in self.substrings):
            raise ForbiddenCallError(f"forbidden operator {name} was called inside {self.what}: "
                                     f"this part must be written without it (see the docstring)")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid_aten(*substrings, what="your code"):
    """Raise `ForbiddenCallError` on any ATen op whose name contains one of `substrings`."""
    with _Spy(tuple(substrings), what):
        yield


def _resolve(dotted):
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:-1]:
            owner = getattr(owner, attr)
        return owner, parts[-1]
    raise ImportError(dotted)


@contextlib.contextmanager
def forbid_python(*dotted_names, what="your code"):
    """Temporarily replace each dotted Python callable by one that raises `ForbiddenCallError`."""
    saved = []
    try:
        for dotted in dotted_names:
            owner, attr = _resolve(dotted)
            original = getattr(owner, attr)
            saved.append((owner, attr, original))

            @functools.wraps(original)
            def trap(*args, _name=dotted, **kwargs):
                raise ForbiddenCallError(f"{_name} was called inside {what}: this part must be written "
                                         f"without it (see the docstring)")
            setattr(owner, attr, trap)
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def forbidden_globals(module, dotted_names):
    """Names in `module`'s globals bound to one of the forbidden callables (catches aliases made at import
    time, which `forbid_python` cannot reach). Returns a list of `(global_name, dotted_name)`."""
    targets = {}
    for dotted in dotted_names:
        owner, attr = _resolve(dotted)
        targets[id(getattr(owner, attr))] = dotted
    return [(name, targets[id(value)]) for name, value in vars(module).items() if id(value) in targets]
