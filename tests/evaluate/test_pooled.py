"""Pooled predictions: the folds' test predictions pooled into one set per method and seed, and McNemar's test on
the pooled sets agrees with scipy (exact binomial below 25 discordant pairs, continuity-corrected chi-square above)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, chi2

from emonet_dist.errors import EmonetError
from emonet_dist.evaluate.pooled import class_indices, pool_predictions, pooled_mcnemar
from emonet_dist.evaluate.predictions import Predictions

CLASSES = ("ang", "hap", "neu", "sad")


def folds(rng, n: int, k: int, accuracy: float, agree_with=None, agree: float = 0.0):
    """k folds' predictions of n utterances (ids u0000...), every utterance in one fold; a second method can copy
    ``agree_with``'s correctness with probability ``agree``. Returns (fold predictions, correctness in id order)."""
    labels = rng.integers(0, 4, n)
    right = rng.random(n) < accuracy
    if agree_with is not None:
        right = np.where(rng.random(n) < agree, agree_with, right)
    preds = np.where(right, labels, (labels + 1) % 4)
    order = rng.permutation(n)
    parts = []
    for chunk in np.array_split(order, k):
        parts.append(Predictions("emovo", CLASSES, tuple(f"u{i:04d}" for i in chunk),
                                 tuple(CLASSES[x] for x in labels[chunk]), tuple(CLASSES[x] for x in preds[chunk])))
    return parts, right


@pytest.mark.parametrize("n, agree", [(20, 0.3), (60, 0.8), (98, 0.6), (400, 0.5), (1440, 0.7)])
def test_pooled_mcnemar_agrees_with_scipy(n, agree):
    rng = np.random.default_rng(n)
    methods = set()
    for _ in range(10):
        base, base_right = folds(rng, n, 4, rng.uniform(0.3, 0.8))
        cand, cand_right = folds(rng, n, 5, rng.uniform(0.3, 0.8), agree_with=base_right, agree=agree)
        r = pooled_mcnemar(base, cand)
        b, c = int((base_right & ~cand_right).sum()), int((~base_right & cand_right).sum())
        assert (r.b, r.c, r.n) == (b, c, n)  # n is the whole corpus, not one fold
        if b + c == 0:
            assert r.p_value == 1.0
        elif b + c < 25:
            assert r.method == "exact"
            assert r.p_value == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)
        else:
            stat = (abs(b - c) - 1) ** 2 / (b + c)
            assert r.method == "chi2" and r.statistic == pytest.approx(stat, rel=1e-12)
            assert r.p_value == pytest.approx(chi2.sf(stat, 1), rel=1e-12)
        methods.add(r.method)
    if n >= 400:
        assert "chi2" in methods
    if n == 20:
        assert methods == {"exact"}


def test_pooling_keeps_every_row_once_and_refuses_overlaps():
    rng = np.random.default_rng(0)
    parts, _ = folds(rng, 50, 4, 0.6)
    pooled = pool_predictions(parts)
    assert len(pooled) == 50 and sorted(pooled.ids) == sorted(f"u{i:04d}" for i in range(50))
    assert sum(pooled.correct) == sum(sum(p.correct) for p in parts)
    labels, preds = class_indices(pooled, order=sorted(pooled.ids))
    assert labels.shape == preds.shape == (50,)
    with pytest.raises(EmonetError, match="in the test predictions of two folds"):
        pool_predictions([parts[0], parts[1], parts[0]])
    other = Predictions("ravdess", CLASSES, ("x",), ("ang",), ("ang",))
    with pytest.raises(EmonetError, match="corpus or classes differ"):
        pool_predictions([parts[0], other])
    with pytest.raises(EmonetError, match="nothing to pool"):
        pool_predictions([])
    short_base, _ = folds(np.random.default_rng(1), 50, 4, 0.6)
    with pytest.raises(EmonetError, match="cover different utterances"):
        pooled_mcnemar(short_base[:3], parts)  # a missing fold: the pooled sets differ
