"""Standardiser + linear SVM, with the complexity C chosen on dev by UAR (EmoNet paper, section 4.1).

The paper: z-normalisation learnt on train and applied to dev and test; a linear SVM whose complexity is
searched on dev over a logarithmic scale from 1 to 1e-9; then a refit with the chosen C on train + dev,
evaluated on test.

Choices the paper leaves open, and why:

* **LinearSVC** (liblinear, one-vs-rest, squared hinge) rather than ``SVC(kernel="linear")`` (libsvm,
  one-vs-one): it solves the primal directly (``dual=False``, preferred when utterances outnumber the 88
  features), so a fit takes milliseconds at every C of the grid and is deterministic; libsvm's cost grows
  quadratically with the utterances and it would need Platt scaling for scores. The ComParE challenge
  baseline scripts of the same group use ``LinearSVC`` with such a C grid as well.
* **class_weight="balanced"** (weight N / (K * n_k) per class): UAR is the metric, and the neural runs weight
  their cross-entropy the same way (``optim.class_weighted``), so both systems optimise the same balanced
  objective. RAVDESS is imbalanced (neutral has half the utterances of the other classes).
* **The refit standardiser is learnt on train + dev**, the refit's training data, just as the train-only
  standardiser was learnt on the train-only fit's data.
* **Ties in dev UAR** go to the first C of the grid (the largest, i.e. the least regularised).
* **Probabilities** are ``softmax(decision_function)`` over the classes (for two classes, ``softmax([0, d])``
  = ``sigmoid(d)``): monotone in the SVM scores and consistent with the predicted class, but *not calibrated*
  (at C = 1e-9 they are nearly uniform). Calibration (Platt / CalibratedClassifierCV) would need internal
  cross-validation folds holding every class, which small corpora cannot give.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..metrics import scores

C_GRID: tuple[float, ...] = tuple(10.0 ** -k for k in range(10))
"""1, 0.1, ..., 1e-9 (paper: a logarithmic scale from 1 to 10^-9)."""


def make_svm(c: float, class_weight: str | None = "balanced", max_iter: int = 10000):
    """``StandardScaler -> LinearSVC(C=c)`` as one pipeline, so the scaler is always fitted on the fit's data."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    return make_pipeline(StandardScaler(), LinearSVC(C=c, class_weight=class_weight, dual=False, max_iter=max_iter))


def fit(c: float, x: np.ndarray, y: np.ndarray, class_weight: str | None = "balanced", max_iter: int = 10000):
    """Fit one pipeline; returns ``(model, converged)`` (liblinear's ConvergenceWarning is recorded, not shown)."""
    from sklearn.exceptions import ConvergenceWarning

    model = make_svm(c, class_weight, max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def predict_proba(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N, num_classes)`` softmax of the decision function; classes absent from the fit get probability 0.

    ``x`` is raw features ``(N, 88)``; the pipeline standardises them.
    """
    d = model.decision_function(x)
    if d.ndim == 1:  # two classes seen in training: one score, positive for classes_[1]
        d = np.stack([np.zeros_like(d), d], axis=1)
    logits = np.full((x.shape[0], num_classes), -np.inf)
    logits[:, model.classes_.astype(int)] = d
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def search_c(x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray, y_dev: np.ndarray, num_classes: int,
             grid: tuple[float, ...] = C_GRID, class_weight: str | None = "balanced",
             max_iter: int = 10000) -> tuple[int, list[dict]]:
    """Fit on train at every C of ``grid`` and score on dev.

    Args:
        x_*: raw features ``(N, F)``; y_*: integer labels in ``[0, num_classes)``.
    Returns:
        ``(best index, [{"c", "dev_uar", "dev_wa", "converged"} per grid entry])``.
    """
    trials = []
    for c in grid:
        model, ok = fit(c, x_train, y_train, class_weight, max_iter)
        s = scores(y_dev, model.predict(x_dev), num_classes)
        trials.append({"c": float(c), "dev_uar": s["uar"], "dev_wa": s["wa"], "converged": ok})
    # np.argmax returns the first maximum: ties go to the larger C
    best = int(np.argmax([t["dev_uar"] for t in trials]))
    return best, trials
