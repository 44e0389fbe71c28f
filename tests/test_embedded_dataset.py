"""The embedded dataset tells the truth about designs (issue 12): what fails on real images fails here too.

On real images (the digit scans of tests/_realdata.py, README "Real images", and the photo set of issue 12),
the previous reference CNN (zero-initialised residual branches) learned at a fraction of the speed of the
current reference and of a plain BN CNN. This staff test trains three designs with the demo's own recipe
(`main.py DATA --epochs 16 -b 64 --lr 0.1 --warmup 1 --img-size 64 --gpu -1`, seed 0) on the embedded
dataset, built from scratch, and checks the same ordering:
- the current reference learns (>= 40% top-1 at 10 classes, chance 10%),
- the previous reference ends at least 15 points below it (real digit scans: 42 vs 95),
- the plain BN CNN, which learns real images about as well as the reference (93 vs 95), ends within 10
  points of it: the set does not punish a design that works on real images.

Slow (three 16-epoch trainings, about 5 minutes on 2 idle cores):
    python -m pytest -m slow tests/test_embedded_dataset.py
Measured figures are in README ("Does the embedded dataset predict real images?").
"""
import pytest

import _staff  # noqa: F401 (puts tools/ on sys.path)
import custom_dataloader
import main
import realdata_experiment as experiment  # tools/: the variants and their child runs

DEMO_COMMAND = "-b 64 --lr 0.1 --warmup 1 --gpu -1"  # main.fill_defaults on the embedded dataset


def val_curve(name, data, log_dir):
    """Validation top-1 of each epoch of the demo's run of design `name` (a realdata_experiment variant)."""
    n = main.EMBEDDED_EPOCHS
    out, epochs = experiment.run_child(name, data, n, main.EMBEDDED_IMG_SIZE, DEMO_COMMAND, str(log_dir), timeout=900)
    assert out.returncode == 0 and len(epochs) == n, (
        f"{name}: exit {out.returncode}, {len(epochs)} epoch lines:\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    return [val for _, val in epochs]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_embedded_dataset_ranks_designs_as_real_images_do(tmp_path):
    data = str(custom_dataloader.build_synthetic_dataset(tmp_path / "synthetic"))
    curves = {name: val_curve(name, data, tmp_path / name) for name in ("reference", "old_reference", "plain_bn_cnn")}
    ref, old, plain = (curves[n][-1] for n in ("reference", "old_reference", "plain_bn_cnn"))
    shown = "; ".join(f"{n}: {', '.join(f'{v:.1f}' for v in c)}" for n, c in curves.items())
    assert ref >= 40.0, f"the reference ends at {ref:.1f}% top-1 (< 40%): {shown}"
    assert old <= ref - 15.0, (
        f"the previous (zero-init) reference ends at {old:.1f}%, not 15 points below the reference's "
        f"{ref:.1f}%: {shown}")
    assert plain >= ref - 10.0, (
        f"the plain BN CNN ends at {plain:.1f}%, more than 10 points below the reference's {ref:.1f}%: {shown}")
