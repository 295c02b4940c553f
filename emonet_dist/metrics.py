"""Scores: UAR (macro recall, the headline), WA (accuracy), per-class recall and the confusion matrix.

Plain numpy so the training loop can score every evaluation cheaply. It sits below every package that scores
(training's dev evaluation, the baselines, ``evaluate``), so none of them depends on another for it.
``tests/evaluate`` checks that every number equals scikit-learn's. UAR averages the recall of the classes that
occur in ``y_true`` (a class with no test samples has no recall), as
``sklearn.metrics.recall_score(average="macro", labels=<present classes>)``.
"""

from __future__ import annotations

import numpy as np


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts; rows are true classes, columns predictions."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall per class; NaN for classes without true samples."""
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def scores(y_true, y_pred, num_classes: int) -> dict:
    """``{"uar", "wa", "recall": [...], "confusion": [[...]], "n"}`` for integer labels."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return {"uar": float("nan"), "wa": float("nan"), "recall": [float("nan")] * num_classes,
                "confusion": np.zeros((num_classes, num_classes), int).tolist(), "n": 0}
    cm = confusion(y_true, y_pred, num_classes)
    rec = per_class_recall(cm)
    return {"uar": float(np.nanmean(rec)), "wa": float((y_true == y_pred).mean()), "recall": rec.tolist(),
            "confusion": cm.tolist(), "n": int(y_true.size)}

