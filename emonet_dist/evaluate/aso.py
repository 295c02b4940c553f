"""Almost Stochastic Order (ASO): is method A's score distribution (over seeds and folds) stochastically larger
than method B's, and by how much is that order violated? (del Barrio, Cuesta-Albertos & Matrán 2018; Dror, Shlomov
& Reichart 2019, "Deep Dominance"; the ``deepsig`` package's ``aso()``, Ulmer et al. 2022.)

With F and G the score distributions of A and B and ``F⁻¹``, ``G⁻¹`` their quantile functions, the violation
ratio is the share of the squared Wasserstein-2 distance between them where A is *below* B::

    ε_W2(F, G) = ∫_{F⁻¹(t) < G⁻¹(t)} (F⁻¹(t) − G⁻¹(t))² dt  /  ∫_0^1 (F⁻¹(t) − G⁻¹(t))² dt

(0: A is stochastically larger everywhere; 1: B is; 0.5 for identical distributions). ``ε_min`` is its
upper confidence bound: ``ε̂ + z_α · σ̂ / sqrt(nm / (n + m))`` (clipped to [0, 1]), with ``σ̂`` the bootstrap
standard deviation of ``sqrt(nm / (n + m)) (ε̂* − ε̂)``. ``ε_min < 0.5`` is evidence that A is better than B;
the smaller, the stronger (deepsig recommends ``ε_min < 0.2``). Scores: higher is better.

This is our own implementation, following ``deepsig.aso`` 1.2.8 in every choice that changes a number: the empirical
quantile function ``Q(t) = x_(ceil(n t))`` (sorted scores, index clipped to [1, n]), the integral as a Riemann sum
over ``t = dt, 2 dt, ..., < 1`` with the first point left out of the numerator, ``ε̂ = 0.5`` when the distance is 0,
bootstrap samples drawn through the quantile functions (i.e. resampling the scores with replacement), and the
Bonferroni adjustment ``confidence + (1 − confidence) / num_comparisons`` (for more than one comparison). It
differs in the random numbers: one seeded ``numpy.random.default_rng`` and all bootstrap iterations vectorised, so
results agree with deepsig's to Monte-Carlo error (``tests/evaluate/test_aso.py`` checks two decimals against
values deepsig computed).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

DEFAULT_CONFIDENCE = 0.95
DEFAULT_ITERATIONS = 1000
DEFAULT_DT = 0.005
_CHUNK = 2000  # bootstrap iterations per vectorised block


def _grid(dt: float) -> np.ndarray:
    return np.arange(dt, 1, dt)


def _quantile_index(n: int, t: np.ndarray) -> np.ndarray:
    """Index into the sorted scores of the empirical quantile function at ``t``: ``ceil(n t) - 1`` clipped."""
    return np.clip(np.ceil(n * t).astype(np.int64) - 1, 0, n - 1)


def _violation_ratios(qa: np.ndarray, qb: np.ndarray, dt: float) -> np.ndarray:
    """ε̂ per row of quantile values ``qa``, ``qb`` (..., T) on the grid."""
    diff = qb - qa
    total = np.sum(diff ** 2 * dt, axis=-1)
    violated = np.where(qa >= qb, 0.0, diff)[..., 1:]  # deepsig leaves t = dt out of the numerator
    part = np.sum(violated ** 2 * dt, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total == 0, 0.5, part / np.where(total == 0, 1.0, total))


def violation_ratio(scores_a, scores_b, dt: float = DEFAULT_DT) -> float:
    """``ε̂ = ε_W2(F_A, F_B)`` of the empirical distributions (no bootstrap)."""
    a, b = np.sort(np.asarray(scores_a, dtype=np.float64)), np.sort(np.asarray(scores_b, dtype=np.float64))
    t = _grid(dt)
    return float(_violation_ratios(a[_quantile_index(a.size, t)], b[_quantile_index(b.size, t)], dt))


def _eps_pair(a: np.ndarray, b: np.ndarray, iterations: int, dt: float, seed: int) -> tuple[float, float, float]:
    """``(ε̂(A, B), σ̂, sqrt(nm / (n + m)))`` for sorted scores ``a``, ``b``."""
    t = _grid(dt)
    ia, ib = _quantile_index(a.size, t), _quantile_index(b.size, t)
    eps = float(_violation_ratios(a[ia], b[ib], dt))
    rng = np.random.default_rng(seed)
    samples = []
    for start in range(0, iterations, _CHUNK):
        k = min(_CHUNK, iterations - start)
        # a bootstrap sample is Q(U) for uniform U, i.e. the scores resampled with replacement; sorted, it gives
        # its own empirical quantile function on the grid
        sa = np.sort(a[_quantile_index(a.size, rng.uniform(0, 1, (k, a.size)))], axis=1)
        sb = np.sort(b[_quantile_index(b.size, rng.uniform(0, 1, (k, b.size)))], axis=1)
        samples.append(_violation_ratios(sa[:, ia], sb[:, ib], dt))
    const = np.sqrt(a.size * b.size / (a.size + b.size))
    return eps, float(np.std(const * (np.concatenate(samples) - eps))), float(const)


def _checked(scores) -> np.ndarray:
    x = np.sort(np.asarray(scores, dtype=np.float64))
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"need a non-empty 1-d list of finite scores, got shape {x.shape}")
    return x


def _adjusted(confidence: float, num_comparisons: float, iterations: int, dt: float) -> float:
    if not 0.0 < confidence < 1.0 or iterations < 2 or num_comparisons < 1 or not 0.0 < dt < 1.0:
        raise ValueError(f"bad ASO parameters: confidence={confidence}, iterations={iterations}, "
                         f"num_comparisons={num_comparisons}, dt={dt}")
    if num_comparisons > 1:  # Bonferroni, as deepsig: 0.95 over 3 tests becomes 0.9833...
        confidence = confidence + (1.0 - confidence) / num_comparisons
    return confidence


def _bound(eps: float, sigma: float, const: float, confidence: float) -> float:
    return float(np.clip(eps - sigma / const * norm.ppf(1.0 - confidence), 0.0, 1.0))


def aso(scores_a, scores_b, *, confidence: float = DEFAULT_CONFIDENCE, num_comparisons: int = 1,
        iterations: int = DEFAULT_ITERATIONS, dt: float = DEFAULT_DT, seed: int = 0) -> float:
    """``ε_min`` of "A is better than B" (higher scores better).

    Args:
        scores_a, scores_b: one score per run (e.g. per fold and seed), n and m of them; n, m >= 1.
        confidence: of the upper bound (deepsig's ``confidence_level``, 0.95); usually in [0.95, 0.99].
        num_comparisons: tests run together, for the Bonferroni adjustment of ``confidence`` (1: none).
        iterations: bootstrap iterations for σ̂ (deepsig's ``num_bootstrap_iterations``).
        dt: step of the integral over t in (0, 1).
        seed: of the bootstrap generator.
    Returns:
        ``ε_min`` in [0, 1]; below 0.5 A is (almost) stochastically larger than B.
    """
    a, b = _checked(scores_a), _checked(scores_b)
    confidence = _adjusted(confidence, num_comparisons, iterations, dt)
    return _bound(*_eps_pair(a, b, iterations, dt, seed), confidence)


def aso_matrix(scores: dict[str, list[float]], *, confidence: float = DEFAULT_CONFIDENCE, bonferroni: bool = True,
               iterations: int = DEFAULT_ITERATIONS, dt: float = DEFAULT_DT, seed: int = 0
               ) -> dict[str, dict[str, float]]:
    """``ε_min(row better than column)`` for every ordered pair of methods (the diagonal is left out), as deepsig's
    ``multi_aso``: one bootstrap per unordered pair {A, B} (A before B in ``scores``), and the reverse order from
    the symmetry ``ε(B, A) = 1 − ε(A, B)`` (del Barrio et al. 2018) with the same σ̂.

    With ``bonferroni`` the confidence is adjusted for the k (k − 1) / 2 pairs, as ``multi_aso`` does."""
    names = list(scores)
    sorted_scores = {n: _checked(scores[n]) for n in names}
    pairs = len(names) * (len(names) - 1) / 2
    confidence = _adjusted(confidence, pairs if bonferroni and pairs > 1 else 1, iterations, dt)
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            eps, sigma, const = _eps_pair(sorted_scores[a], sorted_scores[b], iterations, dt, seed)
            out[a][b] = _bound(eps, sigma, const, confidence)
            out[b][a] = _bound(1.0 - eps, sigma, const, confidence)
    return {a: {b: out[a][b] for b in names if b != a} for a in names}
