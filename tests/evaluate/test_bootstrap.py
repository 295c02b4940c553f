"""The bootstrap CI of UAR: it covers the true UAR at about the nominal rate on simulated predictions (and a
deliberately narrow interval does not), its estimate is the UAR the metrics module computes, and several seeds'
predictions are averaged and resampled together."""

from __future__ import annotations

import time

import numpy as np
import pytest

from emonet_dist import metrics
from emonet_dist.evaluate.bootstrap import bootstrap_uar_ci

PRIORS = np.array([0.4, 0.3, 0.2, 0.1])  # imbalanced, as emotion corpora are
RECALLS = np.array([0.7, 0.5, 0.6, 0.3])  # the simulated classifier's true per-class recall
TRUE_UAR = RECALLS.mean()                # = the UAR of this classifier on the population


def simulate(rng, n: int, recalls=RECALLS) -> tuple[np.ndarray, np.ndarray]:
    """A test set of n utterances and a classifier with the given per-class recall (errors spread evenly)."""
    labels = rng.choice(len(PRIORS), size=n, p=PRIORS)
    right = rng.random(n) < recalls[labels]
    other = (labels + rng.integers(1, len(PRIORS), size=n)) % len(PRIORS)
    return labels, np.where(right, labels, other)


def coverage(confidence: float, datasets: int = 200, n: int = 300, iterations: int = 1000) -> float:
    rng = np.random.default_rng(2026)
    hits = 0
    for k in range(datasets):
        labels, preds = simulate(rng, n)
        ci = bootstrap_uar_ci(labels, preds, 4, confidence=confidence, iterations=iterations, seed=k)
        hits += ci.low <= TRUE_UAR <= ci.high
    return hits / datasets


def test_the_95_percent_interval_covers_the_true_uar_at_about_the_nominal_rate():
    t0 = time.perf_counter()
    cov = coverage(0.95)
    assert 0.90 <= cov <= 0.99, cov
    assert time.perf_counter() - t0 < 20  # vectorised: 200 datasets x 1000 resamples (about 2 s unloaded)


def test_a_too_narrow_interval_is_caught():
    """Negative control: the same check on a 50 % interval finds it covers about half the time, far below 0.90."""
    assert 0.35 <= coverage(0.5, datasets=100) <= 0.65


def test_estimate_is_the_metrics_uar_and_the_interval_holds_it():
    rng = np.random.default_rng(1)
    labels, preds = simulate(rng, 500)
    ci = bootstrap_uar_ci(labels, preds, 4, seed=3)
    assert ci.estimate == pytest.approx(metrics.scores(labels, preds, 4)["uar"], abs=1e-12)
    assert ci.low < ci.estimate < ci.high and (ci.confidence, ci.iterations, ci.seeds, ci.n) == (0.95, 2000, 1, 500)
    assert bootstrap_uar_ci(labels, preds, 4, seed=3) == ci  # seeded: reproducible
    assert bootstrap_uar_ci(labels, preds, 4, seed=4) != ci
    # 4x the utterances: about half the width (the width is the test set's sampling error)
    big = bootstrap_uar_ci(*simulate(rng, 2000), 4, seed=3)
    assert 0.35 < (big.high - big.low) / (ci.high - ci.low) < 0.65


def test_several_seeds_are_averaged_and_resampled_together():
    rng = np.random.default_rng(5)
    labels, p1 = simulate(rng, 400)
    _, p2 = simulate(np.random.default_rng(6), 400, recalls=np.array([0.9, 0.2, 0.5, 0.5]))
    p2 = np.where(rng.random(400) < 0.5, p1, p2)  # correlated with seed 1, as two seeds of one method are
    both = bootstrap_uar_ci(labels, np.stack([p1, p2]), 4, seed=0)
    u1, u2 = (metrics.scores(labels, p, 4)["uar"] for p in (p1, p2))
    assert both.estimate == pytest.approx((u1 + u2) / 2, abs=1e-12) and both.seeds == 2
    # resampled together (paired by utterance): narrower than if the seeds' errors were independent
    w1 = bootstrap_uar_ci(labels, p1, 4, seed=0)
    w2 = bootstrap_uar_ci(labels, p2, 4, seed=0)
    assert both.high - both.low < np.hypot(w1.high - w1.low, w2.high - w2.low)


def test_a_class_missing_from_a_resample_is_left_out_like_the_metrics_module_does():
    labels = np.array([0] * 9 + [1])  # the rare class is absent from about a third of the resamples
    preds = np.array([0] * 9 + [1])
    ci = bootstrap_uar_ci(labels, preds, 2, iterations=300, seed=0)
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)  # perfect predictions: every resample's UAR is 1


@pytest.mark.parametrize("labels, preds, kw", [([], [], {}), ([0, 1], [0], {}), ([0, 1], [0, 1], {"confidence": 1.0}),
                                               ([0, 1], [0, 1], {"iterations": 0})])
def test_bad_input_refused(labels, preds, kw):
    with pytest.raises(ValueError):
        bootstrap_uar_ci(labels, preds, 2, **kw)
