"""Shared pytest set-up: import paths, deterministic numerics, and the `device` parameter.

Every test that takes the `device` fixture runs on CPU and on CUDA; without a GPU the CUDA case is
reported as skipped with the reason (never silently dropped).
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

pytest_plugins = ["points_plugin"]  # per-part points summary at the end of a run

DEVICES = ["cpu", "cuda"]


def pytest_configure(config):
    """One intra-op thread per test process: the tensors here are tiny, and on a shared 2-core machine
    two threads waiting on each other make small ops up to 10x slower (child processes keep the default)."""
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (minutes each) run only when the mark expression asks for them (`-m slow`); a
    plain run skips them visibly, with the command that runs them, before any of their fixtures is built."""
    markexpr = config.getoption("markexpr") or ""
    if "slow" in markexpr and "not slow" not in markexpr:
        return
    skip = pytest.mark.skip(reason="slow check (minutes): run with `python -m pytest -m slow`")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_numerics():
    """Seed every RNG and turn TF32 off for each test (restored afterwards)."""
    torch.manual_seed(0)
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.fixture(params=DEVICES)
def device(request):
    """`torch.device` to run on; the CUDA case is skipped visibly when no GPU is present."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine: GPU case not run")
    return torch.device(request.param)
