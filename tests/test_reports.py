"""Tests of `reports.py` (`main.py -e --report`): scikit-learn's confusion matrix and per-class metrics
against counts done here with NumPy, the most-confused pairs against a brute-force ranking, and the
end-to-end report of the runner (CSV files, PNG, TensorBoard figure, printed pairs) against the runner's
own accuracy and the labels of val.txt.

    python -m pytest tests/test_reports.py
"""
import csv
import os

import numpy as np
import pytest

import custom_dataloader
import main as runner
import reports

FAST = ["--img-size", "32", "-b", "8", "-j", "0", "--use-simplenet", "--lr", "0.05", "--seed", "3"]


def counted_confusion(y_true, y_pred, k):
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    return cm


def random_predictions(seed, n=400, k=7):
    """Labels and predictions with structure: class 6 never occurs, class 5 is never predicted, and
    class 2 is mostly predicted as 3."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 6, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, 7, n))
    y_pred[(y_true == 2) & (rng.random(n) < 0.6)] = 3
    y_pred[y_pred == 5] = 4
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1])
def test_confusion_matrix_equals_counted(seed):
    y_true, y_pred = random_predictions(seed)
    got = reports.confusion(y_true, y_pred, 7)
    want = counted_confusion(y_true, y_pred, 7)
    assert got.shape == (7, 7)
    assert np.array_equal(got, want), f"largest difference {np.abs(got - want).max()}"


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_metrics_match_the_matrix(seed):
    y_true, y_pred = random_predictions(seed)
    names = [f"c{i}" for i in range(7)]
    rows = reports.per_class_rows(y_true, y_pred, names)
    cm = counted_confusion(y_true, y_pred, 7)
    support, predicted, diag = cm.sum(1), cm.sum(0), np.diag(cm)
    for c in range(7):
        r = rows[c]
        acc = 100.0 * diag[c] / support[c] if support[c] else 0.0
        prec = 100.0 * diag[c] / predicted[c] if predicted[c] else 0.0
        f1 = 2 * prec * acc / (prec + acc) if prec + acc else 0.0
        assert (r["class"], r["name"], r["support"]) == (c, names[c], support[c])
        for key, want in (("accuracy", acc), ("recall", acc), ("precision", prec), ("f1", f1)):
            assert abs(r[key] - want) <= 1e-9, f"class {c} {key}: {r[key]} vs counted {want}"
    macro, weighted = rows[7], rows[8]
    assert abs(macro["accuracy"] - np.mean([rows[c]["accuracy"] for c in range(7)])) <= 1e-9
    assert abs(weighted["accuracy"] - 100.0 * diag.sum() / cm.sum()) <= 1e-9  # weighted recall = accuracy
    assert abs(weighted["recall"] - weighted["accuracy"]) <= 1e-9


def test_most_confused_pairs_brute_force():
    y_true, y_pred = random_predictions(2)
    cm = counted_confusion(y_true, y_pred, 7)
    pairs = reports.most_confused(cm, 10)
    ranked = sorted(((-cm[t, p], t, p) for t in range(7) for p in range(7) if t != p and cm[t, p] > 0))
    assert pairs == [(t, p, -c) for c, t, p in ranked[:10]]
    assert pairs[0][:2] == (2, 3), "class 2 is mostly predicted as 3 by construction"
    assert reports.most_confused(np.diag([3, 4, 5]), 10) == [], "a perfect matrix has no confused pair"


@pytest.mark.parametrize("k", [4, 100])
def test_plot_confusion_renders(k, tmp_path):
    rng = np.random.default_rng(k)
    cm = rng.integers(0, 5, (k, k))
    fig = reports.plot_confusion(cm, [f"class_{i}" for i in range(k)])
    path = tmp_path / "cm.png"
    fig.savefig(path)
    assert path.stat().st_size > 5000, "the PNG looks empty"


# ----------------------------------------------------------------------------- through the runner
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-class synthetic dataset (8 train, 6 val images per class) and a SimpleNet trained 2 epochs."""
    base = tmp_path_factory.mktemp("report")
    root = str(base / "data")
    custom_dataloader.build_synthetic_dataset(root, seed=1, num_classes=4, train_per_class=8, val_per_class=6,
                                              test_per_class=1)
    logs = str(base / "logs")
    assert runner.cli([root, "--epochs", "2", "--log-dir", logs] + FAST) == 0
    [run] = [os.path.join(logs, d) for d in os.listdir(logs)]
    return root, os.path.join(run, "model_best.pth.tar"), logs


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_runner_report_files_agree_with_accuracy_and_labels(trained, capsys):
    root, ckpt, logs = trained
    before = set(os.listdir(logs))
    capsys.readouterr()
    assert runner.cli([root, "-e", "--report", "--resume", ckpt, "--log-dir", logs] + FAST) == 0
    out = capsys.readouterr().out
    [run] = [os.path.join(logs, d) for d in set(os.listdir(logs)) - before]
    final = [line for line in out.splitlines() if line.startswith("******Acc@1")][-1]
    acc1 = float(final.split()[1])

    cm_rows = read_csv(os.path.join(run, "confusion_matrix.csv"))
    names = custom_dataloader.MiniPlacesLoader(root, "val").classes
    assert cm_rows[0][1:] == names, "confusion matrix columns must carry the class names of categories.txt"
    cm = np.array([[int(v) for v in row[1:]] for row in cm_rows[1:]])
    labels = [int(line.split()[1]) for line in open(os.path.join(root, "val.txt")) if line.strip()]
    assert cm.sum(1).tolist() == np.bincount(labels, minlength=4).tolist(), "row sums must be the class counts"
    assert abs(100.0 * np.trace(cm) / cm.sum() - acc1) <= 1e-3, \
        f"matrix accuracy {100.0 * np.trace(cm) / cm.sum()} vs the runner's Acc@1 {acc1}"

    table = read_csv(os.path.join(run, "per_class_report.csv"))
    assert table[0] == ["class", "name", "support", "accuracy", "precision", "recall", "f1"]
    for c, row in enumerate(table[1:5]):
        assert row[1] == names[c]
        want = 100.0 * cm[c, c] / cm[c].sum()
        assert abs(float(row[3]) - want) <= 0.005 + 1e-9, f"class {c}: accuracy {row[3]} vs diagonal {want}"
    assert [row[0] for row in table[5:]] == ["macro avg", "weighted avg"]

    assert os.path.getsize(os.path.join(run, "confusion_matrix.png")) > 5000
    assert "most confused pairs" in out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(run, size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "Report/confusion_matrix" in acc.Tags()["images"]
    assert "Report/per_class_accuracy" in acc.Tags()["scalars"]


@pytest.mark.parametrize("argv,needle", [
    (["--report"], "--report applies to -e/--evaluate only"),
    (["-a", "--report"], "--report applies to -e/--evaluate only"),
])
def test_report_flag_errors(argv, needle, capsys):
    code = runner.cli(argv + ["--gpu", "-1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"error: {needle}"], err
