"""A run's prediction files: ``predictions/{best,final}/<corpus>.csv`` (and ``eval/.../predictions/``).

Columns: ``id, corpus, label, prediction, prob_<class>...`` (one per class, in the model's class order);
:mod:`emonet_dist.evaluate.predictions` reads and checks them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .. import atomic


def write_predictions(path: Path, pred: dict, corpus: str, classes: tuple[str, ...]) -> None:
    """Per-utterance predictions as CSV (atomic write).

    Args:
        pred: ``ids`` (N), ``targets`` (N,) class indices, ``probs`` (N, K) posteriors.
    """
    with atomic.replacing(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "corpus", "label", "prediction", *[f"prob_{c}" for c in classes]])
        for i, uid in enumerate(pred["ids"]):
            probs = pred["probs"][i]
            w.writerow([uid, corpus, classes[int(pred["targets"][i])], classes[int(probs.argmax())],
                        *[f"{p:.8g}" for p in probs]])
