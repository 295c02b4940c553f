"""Synthetic run directories for the evaluation tests: ``run.json`` + ``predictions/<checkpoint>/<c>.csv``, laid
out as ``emonet train`` leaves them (no training involved)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emonet_dist.tracking import metric_key
from emonet_dist.train.outputs import write_predictions


def write_run(root: Path, name: str, corpora: dict, checkpoints=("best", "final"), mlflow_run_id=None,
              tracking_uri=None) -> Path:
    """A run directory ``root/name``; ``corpora`` maps corpus -> ``(ids, labels, preds, classes)`` with labels and
    predictions as class names. The CSVs go through the training code's own writer."""
    run = root / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"name": name, "dir": str(run), "mlflow_run_id": mlflow_run_id,
                                              "tracking_uri": tracking_uri, "status": "FINISHED", "metrics": {}}))
    for corpus, (ids, labels, preds, classes) in corpora.items():
        index = {c: i for i, c in enumerate(classes)}
        probs = np.full((len(ids), len(classes)), 0.1 / max(len(classes) - 1, 1))
        probs[np.arange(len(ids)), [index[p] for p in preds]] = 0.9
        pred = {"ids": list(ids), "targets": [index[t] for t in labels], "probs": probs}
        for ck in checkpoints:
            write_predictions(run / "predictions" / ck / f"{metric_key(corpus)}.csv", pred, corpus, tuple(classes))
    return run


def paired(b: int, c: int, both_right: int, both_wrong: int, classes=("neg", "pos"), seed: int = 0):
    """Baseline and candidate predictions with exactly ``b`` (baseline right only) and ``c`` (candidate right only)
    discordant utterances; returns ``(ids, labels, base_preds, cand_preds)``."""
    rng = np.random.default_rng(seed)
    n = b + c + both_right + both_wrong
    labels = [classes[i] for i in rng.integers(0, len(classes), n)]
    wrong = lambda lab: classes[(classes.index(lab) + 1) % len(classes)]
    kinds = ["b"] * b + ["c"] * c + ["rr"] * both_right + ["ww"] * both_wrong
    kinds = [kinds[i] for i in rng.permutation(n)]
    base = [lab if k in ("b", "rr") else wrong(lab) for lab, k in zip(labels, kinds)]
    cand = [lab if k in ("c", "rr") else wrong(lab) for lab, k in zip(labels, kinds)]
    return [f"utt{i:04d}" for i in range(n)], labels, base, cand


@pytest.fixture
def make_run(tmp_path):
    """``make_run(name, corpora, **kw)`` -> run directory under ``tmp_path / "runs"``."""
    return lambda name, corpora, **kw: write_run(tmp_path / "runs", name, corpora, **kw)
