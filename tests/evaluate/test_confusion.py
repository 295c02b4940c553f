"""Per-corpus evaluation outputs: every number equals scikit-learn's and emonet_dist.metrics'."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

from emonet_dist import metrics
from emonet_dist.evaluate.confusion import evaluate, format_scores, score_predictions
from emonet_dist.evaluate.predictions import Predictions, read_predictions

CLASSES = ("angry", "happy", "neutral", "sad", "fear")


def _random(n: int, seed: int, absent: str | None = "fear") -> Predictions:
    """Random labels over CLASSES (``absent`` never a true label, but sometimes predicted), ~60% right."""
    rng = np.random.default_rng(seed)
    true_pool = [c for c in CLASSES if c != absent]
    labels = [true_pool[i] for i in rng.integers(0, len(true_pool), n)]
    preds = [t if rng.random() < 0.6 else CLASSES[rng.integers(0, len(CLASSES))] for t in labels]
    return Predictions("c", CLASSES, tuple(f"u{i}" for i in range(n)), tuple(labels), tuple(preds))


@pytest.mark.parametrize("n,seed,absent", [(7, 0, "fear"), (50, 1, "fear"), (300, 2, None), (1000, 3, "angry")])
def test_scores_equal_sklearn_and_metrics(n, seed, absent):
    p = _random(n, seed, absent)
    s = score_predictions(p)
    present = [c for c in CLASSES if c in p.labels]
    assert s["uar"] == pytest.approx(recall_score(p.labels, p.predictions, labels=present, average="macro"), rel=1e-12)
    assert s["wa"] == pytest.approx(accuracy_score(p.labels, p.predictions), rel=1e-12)
    assert s["confusion"] == confusion_matrix(p.labels, p.predictions, labels=list(CLASSES)).tolist()
    idx = {c: i for i, c in enumerate(CLASSES)}
    ref = metrics.scores([idx[t] for t in p.labels], [idx[q] for q in p.predictions], len(CLASSES))
    assert s["uar"] == pytest.approx(ref["uar"], rel=1e-12)
    for c, r in zip(CLASSES, ref["recall"]):
        assert (math.isnan(r) and math.isnan(s["recall"][c])) or s["recall"][c] == pytest.approx(r, rel=1e-12)
    if absent:
        assert math.isnan(s["recall"][absent])  # no true samples: no recall, and it is not in the UAR


def test_outputs_for_a_run_directory(make_run, tmp_path):
    p = _random(120, 5)
    q = _random(40, 6, absent=None)
    run = make_run("r1", {"emo:cat": (p.ids, p.labels, p.predictions, CLASSES),
                          "other": (q.ids, q.labels, q.predictions, CLASSES)})
    out = tmp_path / "eval"
    scores = evaluate(run, out, checkpoint="final")
    assert set(scores) == {"emo:cat", "other"}
    for stem, pred in (("emo-cat", p), ("other", q)):  # file names through tracking.metric_key
        with open(out / f"{stem}.confusion.csv") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["true\\pred", *CLASSES]
        assert [r[0] for r in rows[1:]] == list(CLASSES)
        cm = [[int(x) for x in r[1:]] for r in rows[1:]]
        assert cm == confusion_matrix(pred.labels, pred.predictions, labels=list(CLASSES)).tolist()
        png = (out / f"{stem}.confusion.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    saved = json.loads((out / "scores.json").read_text())
    assert saved["emo:cat"]["recall"]["fear"] is None  # NaN is written as null
    assert saved["emo:cat"]["uar"] == pytest.approx(scores["emo:cat"]["uar"], rel=1e-12)
    with open(out / "scores.csv") as f:
        table = {r["corpus"]: r for r in csv.DictReader(f)}
    assert float(table["other"]["uar"]) == pytest.approx(scores["other"]["uar"], abs=5e-7)  # the CSV keeps 6 decimals
    assert table["emo:cat"]["recall_fear"] == ""
    assert "UAR" in format_scores(scores)


def test_single_csv_and_prediction_roundtrip(make_run, tmp_path):
    p = _random(30, 7)
    run = make_run("r2", {"x": (p.ids, p.labels, p.predictions, CLASSES)})
    csv_path = run / "predictions" / "best" / "x.csv"
    back = read_predictions(csv_path)
    assert (back.corpus, back.classes, back.ids, back.labels, back.predictions) == (
        "x", CLASSES, p.ids, p.labels, p.predictions)
    scores = evaluate(csv_path, tmp_path / "one")
    assert scores["x"]["n"] == 30 and (tmp_path / "one" / "x.confusion.png").is_file()
