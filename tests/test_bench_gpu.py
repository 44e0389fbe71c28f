"""Tests of tools/bench_gpu.py at tiny sizes (CPU): the benchmark set is built in MiniPlaces layout, every
requested row runs the runner's training loop and reports images/s, seconds per epoch and FLOPs, and the
loader-only mode measures the cache build and load.

    python -m pytest tests/test_bench_gpu.py
"""
import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_gpu  # noqa: E402
import custom_dataloader  # noqa: E402

TINY = ["--classes", "3", "--train", "32", "--val", "8", "-b", "8", "--img-size", "32", "--steps", "2",
        "--warmup", "1", "-j", "0", "--gpu", "-1"]


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIPLACES_KIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.part("2b")  # the ViT rows need your Part 2 code (points summary)
def test_bench_rows_and_flops(setup, capsys):
    out = setup / "bench.json"
    code = bench_gpu.main(TINY + ["--data", str(setup / "data"), "--models", "simplenet,vit",
                                  "--levers", "opencv,+gpu-augment,+amp", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    reader = custom_dataloader.MiniPlacesLoader(setup / "data", "train")
    assert len(reader) == 32 and reader.num_classes == 3
    res = json.loads(out.read_text())
    rows = [(r["model"], r["row"]) for r in res["rows"]]
    assert rows == [(m, r) for m in ("simplenet", "vit") for r in ("opencv", "+gpu-augment", "+amp")]
    for r in res["rows"]:
        assert r["images_per_s"] > 0 and r["s_per_epoch"] == pytest.approx(32 / r["images_per_s"])
        assert r["peak_share"] is None  # CPU: no peak table entry
    # the rows are cumulative: +amp runs with the gpu-augment flags too
    assert res["rows"][2]["flags"] == ["--decoded-cache", "--gpu-augment", "--amp"]
    # SimpleNet's training step at 32 px against its forward alone: backward = 2x forward (input and weight
    # gradients) less the stem's input gradient (the images need none), so between 2.5x and 3x in total
    from torch.utils.flop_counter import FlopCounterMode
    import student_code
    model = student_code.SimpleNet(num_classes=3)
    with FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, 32, 32))
    forward = fc.get_total_flops()
    ratio = res["rows"][0]["gflops_per_image"] * 1e9 / forward
    assert 2.5 < ratio <= 3.0, f"training step / forward FLOPs = {ratio:.3f}"
    text = capsys.readouterr().out
    assert "| simplenet | +gpu-augment |" in text and "unknown" in text


def test_loader_only_mode(setup, capsys):
    out = setup / "loader.json"
    code = bench_gpu.main(TINY + ["--data", str(setup / "data"), "--loader-only", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    res = json.loads(out.read_text())["loader"]
    assert set(res) == {"cache build", "cache load (open + copy to device)", "opencv loader",
                        "cache + opencv loader", "device loader (gpu-augment)"}
    assert res["cache build"]["images"] == 32 and all(r["images_per_s"] > 0 for r in res.values())
    assert not (setup / "cache" / "decoded").exists() or not any((setup / "cache" / "decoded").iterdir()), \
        "loader-only mode must build its cache in a temporary folder"


def test_bad_sizes_are_one_error_line(setup, capsys):
    assert bench_gpu.main(TINY + ["--data", str(setup / "d"), "--train", "4"]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert bench_gpu.main(TINY + ["--data", str(setup / "d"), "--models", "alexnet"]) == 2
