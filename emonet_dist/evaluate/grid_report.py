"""Reports over a grid of folds × seeds × methods: the statistics researchers can trust on small corpora.

Per corpus and method (each method's runs: one per fold and seed):

* **UAR mean ± std** over the runs (each run scored on its own fold's test speakers);
* **pooled UAR** (:mod:`.pooled`): the folds' test predictions of one seed together cover every utterance once;
  the table shows the mean over seeds, with a **bootstrap 95 % CI** (:mod:`.bootstrap`, utterances resampled,
  seeds paired by utterance);
* **McNemar's test on the pooled predictions** (:mod:`.significance`), per seed against the baseline's same seed
  (or its only seed: a deterministic baseline such as eGeMAPS + SVM), so n is the whole corpus. The mark needs
  every seed to be significant in the same direction; the cell's numbers are those of the seed with the largest p
  (the weakest evidence), and every seed's test is in ``per_seed``;
* **Almost Stochastic Order** (:mod:`.aso`) over the runs' UARs: ``ε_min(A better than B)`` for every ordered pair
  of methods, Bonferroni-adjusted for the pairs of the corpus.

The report has the keys of :func:`~.report.build_report`'s (so the table, heatmap, CSV and MLflow logging are the
same) plus ``grid`` and the tests used in ``test``; :mod:`.report_format` renders the grid sections.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EmonetError
from .aso import DEFAULT_ITERATIONS as ASO_ITERATIONS
from .aso import aso_matrix
from .bootstrap import DEFAULT_ITERATIONS as BOOT_ITERATIONS
from .bootstrap import bootstrap_uar_ci
from .confusion import score_predictions
from .pooled import class_indices, pool_predictions
from .predictions import Predictions, RunPredictions, load_column
from .report import CAVEAT, FILES, TEST, summary_of, write_report_files
from .significance import McNemarResult, check_same_ids, mcnemar

GRID_TEST = {
    **TEST,
    "pooled": "McNemar on each seed's pooled fold predictions (n = the whole corpus) against the baseline's same "
              "seed (or its only seed); marked when every seed is significant in the same direction",
    "bootstrap": "percentile bootstrap 95 % CI of the pooled UAR (mean over seeds), utterances resampled",
    "aso": "Almost Stochastic Order (Dror et al. 2019; deepsig's aso): eps_min(row better than column) over the "
           "runs' UARs (folds x seeds); < 0.5 favours the row, < 0.2 is strong; Bonferroni over the pairs",
}


@dataclass(frozen=True)
class GridRun:
    """One run of the grid: ``method`` trained with ``seed`` and tested on fold ``fold``."""

    method: str
    seed: int
    fold: str
    ref: str | Path | RunPredictions
    """Run directory, run name, MLflow run id (see :func:`~.predictions.load_column`) or loaded predictions."""


@dataclass(frozen=True)
class _Loaded:
    run: GridRun
    preds: RunPredictions


def build_grid_report(runs: Sequence[GridRun], baseline: str, out_dir: str | Path, *, alpha: float = 0.05,
                      checkpoint: str = "best", confidence: float = 0.95, bootstrap_iterations: int = BOOT_ITERATIONS,
                      aso_iterations: int = ASO_ITERATIONS, seed: int = 0, output_dir: str | Path = "runs",
                      tracking_uri: str | None = None) -> dict:
    """Compare the grid's methods with ``baseline`` (a method name) on every corpus all methods tested; write the
    report files (as :func:`~.report.build_report`) and return the report.

    ``seed`` seeds the bootstrap and ASO generators (not training). Raises :class:`EmonetError` when a method's
    folds overlap or its pooled utterances differ from the baseline's."""
    if not 0.0 < alpha < 1.0:
        raise EmonetError(f"alpha must be in (0, 1), got {alpha}")
    loaded = [_Loaded(r, r.ref if isinstance(r.ref, RunPredictions) else
                      load_column(r.ref, checkpoint, output_dir, tracking_uri)) for r in runs]
    methods = list(dict.fromkeys(x.run.method for x in loaded))
    keys = [(x.run.method, x.run.seed, x.run.fold) for x in loaded]
    if len(set(keys)) != len(keys):
        raise EmonetError("a (method, seed, fold) appears twice in the grid")
    if baseline not in methods or len(methods) < 2:
        raise EmonetError(f"the grid needs the baseline method '{baseline}' and at least one other method; it has "
                          f"{methods}")
    methods = [baseline] + [m for m in methods if m != baseline]
    corpora = sorted({c for x in loaded for c in x.preds.corpora}, key=str.lower)
    shared = [c for c in corpora if all(any(c in x.preds.corpora for x in loaded if x.run.method == m)
                                        for m in methods)]
    if not shared:
        raise EmonetError(f"the grid's methods share no corpus ({', '.join(methods)})")
    skipped = [{"corpus": c, "reason": "missing in " + ", ".join(
        m for m in methods if not any(c in x.preds.corpora for x in loaded if x.run.method == m))}
        for c in corpora if c not in shared]
    stats = dict(confidence=confidence, iterations=bootstrap_iterations, aso_iterations=aso_iterations, seed=seed)
    rows = [_corpus_row(c, loaded, methods, alpha, stats) for c in shared]
    report = {
        "kind": "emonet-grid-report", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "alpha": alpha, "checkpoint": checkpoint,
        "metric": "test UAR on the folds' pooled predictions (mean over seeds)", "test": GRID_TEST, "caveat": CAVEAT,
        "baseline": _column(baseline, loaded), "candidates": [_column(m, loaded) for m in methods[1:]],
        "corpora": rows, "skipped_corpora": skipped, "files": dict(FILES),
        "summary": summary_of(rows, methods[1:]),
        "grid": {"methods": methods, "confidence": confidence, "bootstrap_iterations": bootstrap_iterations,
                 "aso_iterations": aso_iterations, "aso_confidence": 0.95, "seed": seed},
    }
    write_report_files(report, out_dir)
    return report


def _column(method: str, loaded: list[_Loaded]) -> dict:
    mine = [x for x in loaded if x.run.method == method]
    return {"label": method, "name": method, "run_id": ",".join(x.preds.run_id for x in mine), "source": "grid",
            "mlflow_run_id": None, "run_dir": None,
            "runs": [{"seed": x.run.seed, "fold": x.run.fold, "name": x.preds.name, "run_id": x.preds.run_id,
                      "run_dir": x.preds.run_dir} for x in mine]}


def _pooled_by_seed(corpus: str, method: str, loaded: list[_Loaded]) -> dict[int, Predictions]:
    by_seed: dict[int, list[Predictions]] = {}
    for x in loaded:
        if x.run.method == method and corpus in x.preds.corpora:
            by_seed.setdefault(x.run.seed, []).append(x.preds.corpora[corpus])
    return {s: pool_predictions(parts, f"{method}, seed {s}") for s, parts in sorted(by_seed.items())}


def _method_stats(corpus: str, method: str, loaded: list[_Loaded], truth: Predictions, stats: dict) -> dict:
    """Run-level UARs, the pooled UAR per seed and its bootstrap CI for one method on one corpus; ``truth``: the
    baseline's first pooled seed, whose utterances, labels and classes every pooled seed must have."""
    pooled = _pooled_by_seed(corpus, method, loaded)
    runs = [{"seed": x.run.seed, "fold": x.run.fold, "uar": score_predictions(x.preds.corpora[corpus])["uar"]}
            for x in loaded if x.run.method == method and corpus in x.preds.corpora]
    uars = np.array([r["uar"] for r in runs])
    order = sorted(truth.ids)
    labels = class_indices(truth, order)[0]
    for s, p in pooled.items():
        check_same_ids(order, p.ids, corpus)  # every seed's folds cover the baseline's utterances, once
        if p.classes != truth.classes or not np.array_equal(class_indices(p, order)[0], labels):
            raise EmonetError(f"corpus {corpus}: {method} (seed {s}) has other classes or true labels than the "
                              "baseline; compare runs with the same labels")
    preds = np.stack([class_indices(p, order)[1] for p in pooled.values()])
    ci = bootstrap_uar_ci(labels, preds, len(truth.classes), confidence=stats["confidence"],
                          iterations=stats["iterations"], seed=stats["seed"])
    scored = {s: score_predictions(p) for s, p in pooled.items()}
    return {"runs": runs, "uar_mean": float(uars.mean()), "uar_std": float(uars.std(ddof=1)) if len(uars) > 1 else 0.0,
            "pooled_uar": {str(s): v["uar"] for s, v in scored.items()}, "pooled_uar_mean": ci.estimate,
            "pooled_wa_mean": float(np.mean([v["wa"] for v in scored.values()])), "ci": ci.to_dict(),
            "_pooled": pooled}


def _seed_tests(base: dict[int, Predictions], cand: dict[int, Predictions], corpus: str) -> dict[int, McNemarResult]:
    out = {}
    for s, cp in cand.items():
        if s in base:
            bp = base[s]
        elif len(base) == 1:
            bp = next(iter(base.values()))
        else:
            raise EmonetError(f"corpus {corpus}: the candidate has seed {s}, the baseline has seeds {sorted(base)}; "
                              "McNemar pairs a seed with the baseline's same seed (or its only one)")
        out[s] = mcnemar(bp.ids, bp.correct, cp.ids, cp.correct, corpus)
    return out


def _corpus_row(corpus: str, loaded: list[_Loaded], methods: list[str], alpha: float, stats: dict) -> dict:
    base_pooled = _pooled_by_seed(corpus, methods[0], loaded)
    first = next(iter(base_pooled.values()))
    order = sorted(first.ids)
    per = {m: _method_stats(corpus, m, loaded, first, stats) for m in methods}
    base = per[methods[0]]
    row = {"corpus": corpus, "num_classes": len(first.classes), "classes": list(first.classes),
           "chance": 1.0 / len(first.classes), "n": len(order), "baseline_uar": base["pooled_uar_mean"],
           "baseline_wa": base["pooled_wa_mean"], "candidates": {}}
    for m in methods[1:]:
        tests = _seed_tests(base["_pooled"], per[m]["_pooled"], corpus)
        weakest = max(tests.values(), key=lambda t: t.p_value)
        signs = {t.mark(alpha) for t in tests.values()}
        mark = signs.pop() if len(signs) == 1 else ""
        row["candidates"][m] = {
            "uar": per[m]["pooled_uar_mean"], "wa": per[m]["pooled_wa_mean"],
            "uar_delta": per[m]["pooled_uar_mean"] - base["pooled_uar_mean"], **weakest.to_dict(),
            "significant": bool(mark), "mark": mark,
            "per_seed": [{"seed": s, **t.to_dict(), "mark": t.mark(alpha)} for s, t in tests.items()]}
    scores = {m: [r["uar"] for r in per[m]["runs"]] for m in methods}
    row["grid"] = {m: {k: v for k, v in per[m].items() if k != "_pooled"} for m in methods}
    row["aso"] = aso_matrix(scores, iterations=stats["aso_iterations"], seed=stats["seed"])
    return row
