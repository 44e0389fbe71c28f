"""Per-class classification report and confusion matrix for `main.py -e --report`.

    python main.py ../data -e --report --resume logs/<run>/model_best.pth.tar

The evaluation loop stays `main.evaluate`; a `PredictionCollector` rides along as its `on_batch` hook and
keeps every (label, prediction) pair. `write_report` then computes, with scikit-learn
(`classification_report`, `confusion_matrix`), per-class accuracy, precision, recall, F1 and support, and
writes into the run folder:

- `per_class_report.csv`: one row per class (class, name, support, accuracy, precision, recall, f1) plus the
  macro and weighted averages; per-class accuracy is the share of the class's images predicted as that class
  (the confusion-matrix diagonal over the row sum, i.e. the recall);
- `confusion_matrix.csv`: counts, rows = true class, columns = predicted class, headed by class names;
- `confusion_matrix.png` (matplotlib) and the TensorBoard figure `Report/confusion_matrix` (rows normalized
  to the share of each true class);
- the ten most confused (true, predicted) pairs are printed.

Class names come from the dataset (`categories.txt` when present, else the class indices).
"""
import csv
import os

import numpy as np
import torch
import torch.distributed as dist


class PredictionCollector:
    """`evaluate(..., on_batch=collector)`: keeps the labels and the top-1 predictions of every batch.

    Called as `collector(input, target, output, adv=None, adv_output=None)` with `target (N,)` and logits
    `output (N, K)`; with `adversarial=True` it keeps the predictions on `adv_output` instead."""

    def __init__(self, adversarial=False):
        self.adversarial = adversarial
        self.targets, self.preds = [], []

    def __call__(self, input, target, output, adv=None, adv_output=None):
        logits = adv_output if self.adversarial else output
        self.targets.append(target.detach().cpu())
        self.preds.append(logits.argmax(dim=1).detach().cpu())

    def gather(self):
        """`(y_true, y_pred)` as int64 NumPy arrays `(N,)`, merged over processes when distributed."""
        y_true = torch.cat(self.targets).numpy() if self.targets else np.zeros(0, dtype=np.int64)
        y_pred = torch.cat(self.preds).numpy() if self.preds else np.zeros(0, dtype=np.int64)
        if dist.is_available() and dist.is_initialized():
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (y_true, y_pred))
            y_true = np.concatenate([p[0] for p in parts])
            y_pred = np.concatenate([p[1] for p in parts])
        return y_true.astype(np.int64), y_pred.astype(np.int64)


def confusion(y_true, y_pred, num_classes):
    """scikit-learn's confusion matrix `(K, K)` over all `num_classes` labels (rows true, columns predicted)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def per_class_rows(y_true, y_pred, names):
    """Rows (dicts) of per-class metrics in percent: class, name, support, accuracy, precision, recall, f1;
    then the macro and weighted averages (scikit-learn's `classification_report`, zero_division=0)."""
    from sklearn.metrics import classification_report

    num_classes = len(names)
    keys = [f"{c}" for c in range(num_classes)]
    rep = classification_report(y_true, y_pred, labels=np.arange(num_classes), target_names=keys,
                                output_dict=True, zero_division=0)
    cm = confusion(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    rows = []
    for c in range(num_classes):
        r = rep[keys[c]]
        acc = 100.0 * cm[c, c] / support[c] if support[c] else 0.0
        rows.append({"class": c, "name": names[c], "support": int(support[c]), "accuracy": acc,
                     "precision": 100 * r["precision"], "recall": 100 * r["recall"], "f1": 100 * r["f1-score"]})
    overall = 100.0 * np.trace(cm) / max(cm.sum(), 1)
    for avg in ("macro avg", "weighted avg"):
        r = rep[avg]
        per_class_acc = [row["accuracy"] for row in rows]
        acc = (float(np.mean(per_class_acc)) if avg == "macro avg" else overall)
        rows.append({"class": avg, "name": "", "support": int(r["support"]), "accuracy": acc,
                     "precision": 100 * r["precision"], "recall": 100 * r["recall"], "f1": 100 * r["f1-score"]})
    return rows


def most_confused(cm, k=10):
    """The `k` largest off-diagonal entries of `cm (K, K)`: list of `(true, predicted, count)`, largest first
    (ties: lower true class, then lower predicted class), zero counts left out."""
    off = cm.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [(int(i // cm.shape[1]), int(i % cm.shape[1])) for i in flat]  # flat index -> (row, column)
    return [(t, p, int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def plot_confusion(cm, names, title="confusion matrix"):
    """A matplotlib `Figure` of `cm (K, K)` with rows normalized to the share of each true class (percent);
    class names on the axes up to 40 classes, indices beyond."""
    from matplotlib.figure import Figure

    k = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    share = 100.0 * cm / np.maximum(rows, 1)
    side = min(4 + 0.32 * k, 14)
    fig = Figure(figsize=(side + 1.5, side), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of the true class")
    labels = names if k <= 40 else [str(i) for i in range(k)]
    step = 1 if k <= 40 else max(1, k // 20)
    ax.set_xticks(range(0, k, step), [labels[i] for i in range(0, k, step)], rotation=90,
                  fontsize=8 if k <= 20 else 7)
    ax.set_yticks(range(0, k, step), [labels[i] for i in range(0, k, step)], fontsize=8 if k <= 20 else 7)
    if k <= 20:
        for t in range(k):
            for p in range(k):
                if cm[t, p]:
                    ax.text(p, t, f"{share[t, p]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if share[t, p] > 50 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title} ({int(cm.sum())} images)")
    fig.tight_layout()
    return fig


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_report(collector, names, run_dir, writer=None, log=print, tag="Report"):
    """Compute and write the report of `collector`'s predictions (see the module docstring).

    `names`: class names in label order (their number is the number of classes). Only the main process
    should call this with a `run_dir`; every process must call `collector.gather()` (done here) when
    distributed, so call it on all ranks and pass `run_dir=None` on the others. Returns
    `(rows, cm, pairs)`."""
    y_true, y_pred = collector.gather()
    if run_dir is None:
        return None
    num_classes = len(names)
    cm = confusion(y_true, y_pred, num_classes)
    rows = per_class_rows(y_true, y_pred, names)
    pairs = most_confused(cm, 10)
    fields = ["class", "name", "support", "accuracy", "precision", "recall", "f1"]
    write_csv(os.path.join(run_dir, "per_class_report.csv"), fields,
              [[r[f] if not isinstance(r[f], float) else f"{r[f]:.2f}" for f in fields] for r in rows])
    write_csv(os.path.join(run_dir, "confusion_matrix.csv"), ["true \\ predicted"] + list(names),
              [[names[t]] + [int(v) for v in cm[t]] for t in range(num_classes)])
    fig = plot_confusion(cm, names)
    png = os.path.join(run_dir, "confusion_matrix.png")
    fig.savefig(png)
    if writer is not None:
        writer.add_figure(f"{tag}/confusion_matrix", fig, 0, close=False)
        for r in rows[:num_classes]:
            writer.add_scalar(f"{tag}/per_class_accuracy", r["accuracy"], r["class"])
    macro, weighted = rows[num_classes], rows[num_classes + 1]
    worst = sorted(rows[:num_classes], key=lambda r: (r["accuracy"], r["class"]))[:5]
    log(f"per-class report ({len(y_true)} images, {num_classes} classes): macro precision "
        f"{macro['precision']:.1f} recall {macro['recall']:.1f} F1 {macro['f1']:.1f}; weighted F1 "
        f"{weighted['f1']:.1f}; lowest accuracy: "
        + ", ".join(f"{r['name']} {r['accuracy']:.1f}%" for r in worst))
    log("most confused pairs (true -> predicted: images, % of the true class):")
    support = cm.sum(axis=1)
    for t, p, n in pairs:
        log(f"  {names[t]} -> {names[p]}: {n} ({100.0 * n / max(support[t], 1):.1f}%)")
    if not pairs:
        log("  none (no misclassified image)")
    log(f"report written to {run_dir}: per_class_report.csv, confusion_matrix.csv, confusion_matrix.png")
    return rows, cm, pairs
