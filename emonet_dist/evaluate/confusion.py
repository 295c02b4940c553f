"""Per-corpus evaluation outputs from prediction CSVs: UAR, WA, per-class recall and the confusion matrix
(as CSV and PNG).

Scores come from :mod:`emonet_dist.metrics`, the one implementation the training loop reports too,
so a number in an evaluation file is the number the run logged (``tests/evaluate`` checks it against
scikit-learn).

Files written for a corpus ``c`` (``c`` through ``tracking.metric_key``)::

    <c>.confusion.csv   rows true classes, columns predictions, counts; first column "true\\pred"
    <c>.confusion.png   the same counts, cells shaded by row-normalised recall
    scores.json         {corpus: {"uar", "wa", "n", "classes", "recall": {class: r}, "confusion": [[...]]}}
    scores.csv          corpus, n, uar, wa, recall_<class>... (one row per corpus)
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from .. import metrics
from ..tracking import metric_key
from .predictions import Predictions, load_run, read_prediction_dir, read_predictions


def score_predictions(pred: Predictions) -> dict:
    """Scores of one prediction set.

    Returns ``{"corpus", "n", "classes", "uar", "wa", "recall": {class: float|nan}, "confusion": (C, C) list}``.
    UAR is the macro recall over the classes present in the true labels (a class without test samples has no
    recall), as in :func:`emonet_dist.metrics.scores`; recall is NaN for such classes.
    """
    classes = list(pred.classes)
    n = len(pred)
    if n == 0:
        return {"corpus": pred.corpus, "n": 0, "classes": classes, "uar": math.nan, "wa": math.nan,
                "recall": {c: math.nan for c in classes}, "confusion": np.zeros((len(classes),) * 2, int).tolist()}
    index = {c: i for i, c in enumerate(classes)}
    s = metrics.scores([index[t] for t in pred.labels], [index[p] for p in pred.predictions], len(classes))
    return {"corpus": pred.corpus, "n": n, "classes": classes, "uar": s["uar"], "wa": s["wa"],
            "recall": {c: float(r) for c, r in zip(classes, s["recall"])}, "confusion": s["confusion"]}


def write_confusion_csv(score: dict, path: str | Path) -> Path:
    """The ``(C, C)`` count matrix with class names as header row and first column."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred", *score["classes"]])
        for cls, row in zip(score["classes"], score["confusion"]):
            w.writerow([cls, *row])
    return path


def write_confusion_png(score: dict, path: str | Path) -> Path:
    """Counts in every cell, class names on both axes; shading is the row-normalised fraction, so a small
    class's errors are as visible as a large one's."""
    from .plots import new_figure

    cm = np.asarray(score["confusion"], dtype=float)
    classes = score["classes"]
    k = len(classes)
    size = max(3.5, 0.55 * k + 2.0)
    fig = new_figure((size + 1.0, size))
    ax = fig.add_subplot(1, 1, 1)
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(k), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{score['corpus']}: UAR {100 * score['uar']:.1f}%  WA {100 * score['wa']:.1f}%  (n={score['n']})",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def evaluate_predictions(preds: dict[str, Predictions] | list[Predictions], out_dir: str | Path) -> dict:
    """Write the evaluation files for every corpus into ``out_dir``; returns ``{corpus: score dict}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = list(preds.values()) if isinstance(preds, dict) else list(preds)
    scores = {}
    for p in items:
        s = score_predictions(p)
        stem = metric_key(p.corpus)
        write_confusion_csv(s, out / f"{stem}.confusion.csv")
        if s["n"]:
            write_confusion_png(s, out / f"{stem}.confusion.png")
        scores[p.corpus] = s
    (out / "scores.json").write_text(json.dumps(json_safe(scores), indent=1))
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        all_classes = list(dict.fromkeys(c for s in scores.values() for c in s["classes"]))
        w.writerow(["corpus", "n", "uar", "wa", *[f"recall_{c}" for c in all_classes]])
        for name, s in scores.items():
            w.writerow([name, s["n"], _fmt(s["uar"]), _fmt(s["wa"]), *[_fmt(s["recall"].get(c)) for c in all_classes]])
    return scores


def evaluate(ref: str | Path, out_dir: str | Path, checkpoint: str = "best", output_dir: str | Path = "runs",
             tracking_uri: str | None = None) -> dict:
    """Evaluation files for a prediction CSV, a ``predictions/<checkpoint>`` directory, or a run reference
    (run directory, run name, MLflow run id; see :func:`emonet_dist.evaluate.predictions.load_run`)."""
    p = Path(ref)
    if p.is_file() and p.suffix == ".csv":
        return evaluate_predictions([read_predictions(p)], out_dir)
    if p.is_dir() and not (p / "run.json").exists() and any(p.glob("*.csv")):
        return evaluate_predictions(read_prediction_dir(p), out_dir)
    return evaluate_predictions(load_run(ref, checkpoint, output_dir, tracking_uri).corpora, out_dir)


def format_scores(scores: dict) -> str:
    """Plain-text lines for the terminal: corpus, n, UAR, WA and per-class recall (in %)."""
    lines = []
    for name, s in scores.items():
        rec = "  ".join(f"{c} {100 * r:.1f}" for c, r in s["recall"].items() if not math.isnan(r))
        lines.append(f"{name}: n={s['n']}  UAR {100 * s['uar']:.2f}%  WA {100 * s['wa']:.2f}%  recall: {rec}")
    return "\n".join(lines)


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"


def json_safe(obj):
    """NaN is not JSON; a class without test samples has recall ``null``."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj
