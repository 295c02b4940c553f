"""Bootstrap confidence interval of UAR on (pooled) test predictions.

The test utterances are resampled with replacement ``iterations`` times; each resample's UAR (macro recall over
the classes present in the resample's labels, as :func:`emonet_dist.metrics.scores`) is computed, and the interval
is the percentile interval of those UARs (Efron & Tibshirani 1993, ch. 13). What it covers: the UAR the
model(s) would reach on another test set drawn like this one, i.e. the uncertainty from the finite test set
(not from training; seeds and folds are compared with :mod:`.aso`).

With several seeds (``predictions`` of shape ``(S, N)``, the seeds' pooled predictions of the same N utterances),
the statistic is the mean over seeds of each seed's UAR, and every resample draws the same utterances for all
seeds (the seeds are paired by utterance), so the interval is for the seed-averaged pooled UAR.

Vectorised with numpy: a resample is a vector of multiplicities ``(N,)``, and per-class hits and supports of all
resamples are two matrix products. Seeded (``numpy.random.default_rng(seed)``), so a report is reproducible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_ITERATIONS = 2000
DEFAULT_CONFIDENCE = 0.95
_CHUNK = 500  # resamples per matrix product: memory stays at _CHUNK * N counts


@dataclass(frozen=True)
class BootstrapCI:
    estimate: float
    """UAR on the predictions as given (mean over seeds with several)."""
    low: float
    high: float
    confidence: float
    """Nominal coverage of [low, high], e.g. 0.95."""
    iterations: int
    seeds: int
    """Prediction sets averaged (1: a single run's pooled predictions)."""
    n: int
    """Utterances resampled."""
    method: str = "percentile bootstrap over utterances"

    def to_dict(self) -> dict:
        return asdict(self)


def _uar_of_counts(weights: np.ndarray, onehot: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """UAR per resample. ``weights`` (B, N) multiplicities, ``onehot`` (N, C) true classes, ``hits`` (S, N, C)
    one-hot of the correct predictions per seed. Returns (S, B)."""
    support = weights @ onehot                        # (B, C)
    correct = np.einsum("bn,snc->sbc", weights, hits)  # (S, B, C)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, correct / np.maximum(support, 1), 0.0)
    return recall.sum(-1) / present.sum(-1)


def bootstrap_uar_ci(labels, predictions, num_classes: int | None = None, *, confidence: float = DEFAULT_CONFIDENCE,
                     iterations: int = DEFAULT_ITERATIONS, seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap CI of UAR.

    Args:
        labels: ``(N,)`` true class indices.
        predictions: ``(N,)`` predicted class indices, or ``(S, N)`` for S seeds' predictions of the same utterances.
        num_classes: C (default: 1 + the largest index seen).
        confidence: nominal coverage, in (0, 1).
        iterations: resamples B (2000 keeps the percentile endpoints' Monte-Carlo error near 0.1 pp here).
        seed: of the resampling generator.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    if y.ndim != 1 or y.size == 0 or p.shape[1] != y.size:
        raise ValueError(f"need (N,) labels and (N,) or (S, N) predictions with N > 0; got {y.shape} and {p.shape}")
    if not 0.0 < confidence < 1.0 or iterations < 1:
        raise ValueError(f"confidence must be in (0, 1) and iterations >= 1, got {confidence}, {iterations}")
    c = int(num_classes if num_classes is not None else max(y.max(), p.max()) + 1)
    onehot = np.eye(c)[y]                                            # (N, C)
    hits = onehot[None] * (p == y[None])[..., None]                  # (S, N, C)
    n = y.size
    estimate = float(_uar_of_counts(np.ones((1, n)), onehot, hits).mean())
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, iterations, _CHUNK):
        b = min(_CHUNK, iterations - start)
        draws = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        weights = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        stats.append(_uar_of_counts(weights, onehot, hits).mean(0))  # mean over seeds, per resample
    dist = np.concatenate(stats)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(dist, [tail, 1.0 - tail])
    return BootstrapCI(estimate, float(low), float(high), confidence, iterations, p.shape[0], n)
