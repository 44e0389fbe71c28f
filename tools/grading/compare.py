"""Tensor comparison for grading (runs in the trusted grading process): tolerances per dtype, validation of
what the untrusted child returned, and one-line messages that show the largest difference.

The comparison is norm-wise: `max|actual - expected| <= atol + rtol * max|expected|`, so tiny entries do not
need relative accuracy, and a wrong shape, dtype, non-finite value or a non-tensor fails with the reason.
"""
import torch

TOL = {
    torch.float64: (1e-9, 1e-8),  # (atol, rtol)
    torch.float32: (2e-5, 1e-4),
}


class Mismatch(Exception):
    """Raised by `expect_tensor` when a returned value is not the tensor expected."""


def expect_tensor(value, like=None, shape=None, dtype=None, what="value"):
    """Check that `value` is a plain tensor with `like`'s (or the given) shape and dtype; return it."""
    if not isinstance(value, torch.Tensor):
        raise Mismatch(f"{what} is missing (got {type(value).__name__})" if value is None else
                       f"{what} is not a tensor (got {type(value).__name__})")
    shape = tuple(like.shape) if like is not None and shape is None else shape
    dtype = like.dtype if like is not None and dtype is None else dtype
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise Mismatch(f"{what} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if dtype is not None and value.dtype != dtype:
        raise Mismatch(f"{what} has dtype {value.dtype}, expected {dtype}")
    return value


def max_abs_diff(actual, expected):
    """Largest absolute difference as a float (inf when a side is non-finite where the other is not)."""
    a, e = actual.double(), expected.double()
    both_nan = torch.isnan(a) & torch.isnan(e)
    d = (a - e).abs()
    d = torch.where(both_nan, torch.zeros_like(d), d)
    d = torch.nan_to_num(d, nan=float("inf"))
    return float(d.max()) if d.numel() else 0.0


def close(actual, expected, what="value", tol=None):
    """`(ok, message)`: is `actual` within tolerance of `expected` (a trusted tensor)?

    `message` is empty when ok, else says why (shape, dtype, non-finite, or the max abs difference).
    """
    try:
        expect_tensor(actual, like=expected, what=what)
    except Mismatch as exc:
        return False, str(exc)
    if expected.numel() == 0:
        return True, ""
    atol, rtol = tol if tol is not None else TOL.get(expected.dtype, TOL[torch.float32])
    if not bool(torch.isfinite(actual).all()) and bool(torch.isfinite(expected).all()):
        return False, f"{what} contains NaN or inf"
    diff = max_abs_diff(actual, expected)
    bound = atol + rtol * float(expected.abs().max())
    if diff <= bound:
        return True, ""
    return False, f"{what}: max abs diff {diff:.2e} (tolerance {bound:.1e})"


def fmt_num(x):
    """Short human form of a float."""
    return f"{x:.3g}"


def generator(seed):
    """A seeded CPU `torch.Generator` (no global RNG state is touched)."""
    return torch.Generator().manual_seed(int(seed))


def randn(gen, *shape, dtype=torch.float64, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=dtype) * scale


def summarize(failures, total, what):
    """Component detail: '' when no failures, else the first failure and how many more."""
    if not failures:
        return f"all {total} {what} correct" if total > 1 else ""
    more = f" (and {len(failures) - 1} more of {total} {what})" if len(failures) > 1 else ""
    return failures[0] + more


def case_error(res):
    """The error string the child recorded for a case, or None (robust to malformed values)."""
    if not isinstance(res, dict):
        return "no result for this case"
    err = res.get("error")
    return str(err)[:600] if err is not None else None


def close_dict(actual, expected, what, tol=None):
    """Compare `{name: tensor}` dicts (e.g. parameter gradients). `(ok, message)`."""
    if not isinstance(actual, dict):
        return False, f"{what}: missing"
    for name, exp in expected.items():
        ok, msg = close(actual.get(name), exp, what=f"{what} of {name}", tol=tol)
        if not ok:
            return False, msg if name in actual else f"{what} of {name} is missing (no gradient reached it)"
    return True, ""
