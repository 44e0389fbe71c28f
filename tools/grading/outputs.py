"""Loading what the untrusted child wrote (trusted grading process).

`load(dir_fd, name)` opens one output file of the io folder without following links, refuses anything but
a regular file below `protocol.MAX_OUTPUT_BYTES`, unpickles it with `torch.load(weights_only=True)` (no code
runs) and then `validate`s it before any item looks at it: nested dicts (string keys), lists, tuples,
strings, numbers, booleans, None and plain dense tensors only; every tensor contiguous, with no storage
offset and exactly the storage its elements need, of a numeric or boolean dtype, and all tensors of a file
together at most `protocol.MAX_ELEMENTS` elements. A stride-0 or overlapping tensor (a few bytes on disk
that would expand to gigabytes at the first arithmetic) is therefore rejected before it is touched.
Returns `(obj, None)` or `(None, reason)`.
"""
import io
import os
import stat

import torch

from . import protocol

DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                    torch.int16, torch.int8, torch.uint8, torch.bool})


class Malformed(ValueError):
    """An output that breaks the rules of `validate`."""


def validate(obj):
    """Raise `Malformed` unless `obj` follows the output rules (see the module docstring)."""
    budget = [protocol.MAX_ELEMENTS]

    def walk(value, depth):
        if depth > protocol.MAX_DEPTH:
            raise Malformed("nested too deeply")
        if value is None or isinstance(value, (bool, int, float)):
            return
        if isinstance(value, str):
            if len(value) > protocol.MAX_STRING:
                raise Malformed("a string is too long")
            return
        if type(value) is torch.Tensor:
            check_tensor(value, budget)
            return
        if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
            if len(value) > protocol.MAX_ITEMS:
                raise Malformed("a list is too long")
            for v in value:
                walk(v, depth + 1)
            return
        if type(value) is dict:
            if len(value) > protocol.MAX_ITEMS:
                raise Malformed("a dict is too large")
            for k, v in value.items():
                if not isinstance(k, str):
                    raise Malformed("a dict key is not a string")
                walk(v, depth + 1)
            return
        raise Malformed(f"unexpected value of type {type(value).__name__}")

    walk(obj, 0)


def check_tensor(t, budget=None):
    """Raise `Malformed` unless `t` is a plain, dense, contiguous tensor owning exactly its elements."""
    if t.layout != torch.strided or t.is_sparse or t.is_quantized or t.is_nested:
        raise Malformed("a tensor is not a dense tensor")
    if t.dtype not in DTYPES:
        raise Malformed(f"a tensor has dtype {t.dtype}")
    if t.requires_grad or t.device.type != "cpu":
        raise Malformed("a tensor requires grad or is not on the CPU")
    numel = t.numel()
    if any(s < 0 for s in t.shape) or any(s < 0 for s in t.stride()):
        raise Malformed("a tensor has negative sizes or strides")
    if not t.is_contiguous() or t.storage_offset() != 0:
        raise Malformed("a tensor is not contiguous (stride-0 / overlapping / offset views are refused)")
    if t.untyped_storage().nbytes() != numel * t.element_size():
        raise Malformed("a tensor's storage does not match its size")
    if budget is not None:
        budget[0] -= numel
        if budget[0] < 0:
            raise Malformed("the outputs hold too many elements")


def load(dir_fd, name):
    """`(obj, None)` or `(None, reason)` for output file `name` in the folder open as `dir_fd`."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size > protocol.MAX_OUTPUT_BYTES:
            return None, "too large"
        chunks, left = [], protocol.MAX_OUTPUT_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > protocol.MAX_OUTPUT_BYTES:
        return None, "too large"
    try:
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - anything malformed
        return None, f"malformed ({type(exc).__name__})"
    if not isinstance(obj, dict):
        return None, "malformed (not a dict)"
    try:
        validate(obj)
    except Malformed as exc:
        return None, f"malformed ({exc})"
    except RecursionError:
        return None, "malformed (nested too deeply)"
    return obj, None
