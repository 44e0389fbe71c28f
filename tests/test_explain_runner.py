"""Tests of the runner's `--explain` flags (`explain.py`, `main.py -e -v --explain`, `-a -v --explain`) with
the Part 3a saliency (the Part 4 methods are tested in tests/test_explain.py when the course ships Part 4):
flag checks (one `error:` line, exit 2), the PNG grid and the TensorBoard images, the clean-vs-adversarial
metrics file and their printout, and the windowed-to-global attention conversion used by rollout.

Run: python -m pytest tests/test_explain_runner.py
"""
import glob
import json
import os

import cv2
import pytest
import torch

import custom_dataloader
import explain
import main as runner

pytestmark = pytest.mark.part("3a")  # the runner's explanations need GradAttention (points_plugin)
FAST = ["--img-size", "32", "-b", "8", "-j", "0", "--use-simplenet", "--seed", "3", "--limit-batches", "1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_explain") / "data"
    custom_dataloader.build_synthetic_dataset(root, seed=2, num_classes=3, train_per_class=2, val_per_class=4,
                                              test_per_class=1)
    return str(root)


@pytest.mark.parametrize("argv, needle", [
    (["-e", "--explain", "saliency"], "--explain needs -v"),
    (["-v", "--explain", "saliency"], "--explain needs -v"),
    (["-e", "-v", "--explain", "rollout"], "needs attention maps"),
    (["-e", "-v", "--explain", "gradcam", "--use-vit"], "needs a CNN"),
    (["-e", "-v", "--explain", "saliency", "--cam-layer", "features"], "--cam-layer applies"),
    (["-e", "--explain-images", "4"], "needs --explain"),
    (["-e", "-v", "--explain", "saliency", "--explain-topk", "0"], "--explain-topk"),
])
@pytest.mark.part("given")
def test_bad_explain_flags_give_one_clear_message(argv, needle, tiny, tmp_path, capsys):
    flags = [f for f in FAST if f != "--use-simplenet"] if "--use-vit" in argv else FAST
    code = runner.cli([tiny, "--log-dir", str(tmp_path)] + flags + argv)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_evaluate_explain_writes_grid_and_tensorboard(tiny, tmp_path, capsys):
    code = runner.cli([tiny, "-e", "-v", "--explain", "saliency", "--explain-images", "5", "--log-dir",
                       str(tmp_path)] + FAST)
    out = capsys.readouterr().out
    assert code == 0 and "explain saliency: 5 images" in out, out
    run = glob.glob(os.path.join(str(tmp_path), "*_*"))[0]
    grid = cv2.imread(os.path.join(run, "explain_saliency.png"))
    assert grid is not None and grid.shape == (2 * 34 + 2, 5 * 34 + 2, 3), getattr(grid, "shape", None)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(run).Reload().Tags()["images"]
    assert "Image/Image_Atten" in tags, tags


def test_attack_explain_compares_clean_and_adversarial(tiny, tmp_path, capsys):
    code = runner.cli([tiny, "-a", "-v", "--explain", "saliency", "--explain-images", "6", "--attack-steps", "2",
                       "--log-dir", str(tmp_path)] + FAST)
    out = capsys.readouterr().out
    assert code == 0 and "clean vs adversarial over 6 images" in out and out.count("  image ") == 6, out
    run = glob.glob(os.path.join(str(tmp_path), "*_*"))[0]
    result = json.load(open(os.path.join(run, "explain_saliency.json")))
    assert len(result["per_image"]) == 6 and -1 <= result["spearman_mean"] <= 1
    assert 0 <= result["topk_overlap_mean"] <= 1
    assert abs(result["spearman_mean"] - sum(r["spearman"] for r in result["per_image"]) / 6) < 1e-9
    grid = cv2.imread(os.path.join(run, "explain_saliency_clean_vs_adv.png"))
    assert grid.shape == (4 * 34 + 2, 6 * 34 + 2, 3)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run).Reload()
    assert {"Image/Image_Atten", "Image/Image_Atten_Adv", "Image/Org_Image"} <= set(acc.Tags()["images"])
    assert {"explain/spearman", "explain/topk_overlap"} <= set(acc.Tags()["scalars"])


@pytest.mark.part("given")
def test_windowed_maps_become_block_diagonal_token_maps():
    """A windowed block's maps (4x4 windows over a 6x6 grid, padded to 8x8) -> `(N, heads, 36, 36)`: zero
    between windows, rows renormalized over the real tokens, equal to the window's map where no padding."""
    g = torch.Generator().manual_seed(1)
    n, heads, ws = 2, 3, 4
    maps = torch.randn(n * 4, heads, ws * ws, ws * ws, generator=g, dtype=torch.float64).softmax(-1)
    full = explain.windowed_to_global(maps, n, (6, 6))
    assert full.shape == (n, heads, 36, 36)
    assert torch.allclose(full.sum(-1), torch.ones(n, heads, 36, dtype=torch.float64))
    token = lambda r, c: r * 6 + c  # noqa: E731
    assert full[:, :, token(0, 0), token(0, 4)].abs().max() == 0, "tokens of different windows must not attend"
    # window 0 (rows 0-3, cols 0-3) has no padding: its map is unchanged
    idx = [token(r, c) for r in range(4) for c in range(4)]
    assert torch.allclose(full[:, :, idx][:, :, :, idx], maps.view(n, 4, heads, 16, 16)[:, 0])
    glob_maps = maps[:n, :, :, :].new_ones(n, heads, 36, 36) / 36
    assert explain.windowed_to_global(glob_maps, n, (6, 6)) is glob_maps


@pytest.mark.part("given")
def test_part4_method_missing_from_the_release_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    import student_code

    monkeypatch.delattr(student_code, "SmoothGrad", raising=False)  # a release without the optional Part 4
    code = runner.cli([tiny, "-e", "-v", "--explain", "smoothgrad", "--log-dir", str(tmp_path)] + FAST)
    err = capsys.readouterr().err
    assert code == 3 and "error: not implemented yet: Part 4a" in err and "optional" in err, err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1 and "Traceback" not in err
