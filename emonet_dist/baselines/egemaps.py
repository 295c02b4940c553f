"""``emonet baseline egemaps``: eGeMAPS functionals + linear SVM per corpus (EmoNet paper, section 4.1).

For every prepared corpus: eGeMAPSv02 functionals of each utterance (cached, :mod:`.features`); a standardiser +
linear SVM fitted on train at each C of the grid (1 ... 1e-9), scored on dev by UAR; a refit with the best C on
train + dev, scored on test (:mod:`.svm` says which SVM and why).

The run directory (``<output_dir>/<run name>/``) is laid out like a neural run's, so ``emonet report`` reads
either the same way::

    config.yaml, config.json     the config; data.corpora lists the corpora and the partitions used
    run.json                     name, dir, mlflow_run_id, tracking_uri, status, metrics (as a neural run)
    metrics.jsonl                the metric journal
    predictions/{best,final}/<corpus>.csv   id, corpus, label, prediction, prob_<class>... (both: the refit)
    baseline.json                per corpus: classes, sizes, dev UAR per C, chosen C, test scores, feature cache

MLflow (``tracking_uri(cfg)``: ``sqlite:///<output_dir>/mlflow.db`` by default) gets the flattened config and
``baseline.*`` params (feature set, C grid, class weights, corpora, ``baseline.chosen_c.<corpus>``); metrics
``dev_uar/<corpus>`` and ``c_log10`` as histories with step = grid index, then ``test_uar_final/<corpus>``,
``test_uar_best/<corpus>``, ``test_wa_*``, ``dev_uar_best/<corpus>`` and ``chosen_c/<corpus>``; and the
``predictions/`` and ``baseline.json`` artifacts.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import tracking, typed
from ..config import Config, CorpusConfig
from ..corpora.manifest import MANIFEST, Utterance, read_manifest
from ..errors import EmonetError
from ..metrics import scores
from ..runs import Run, RunResult, absolute_paths, write_predictions
from ..runs.inputs import manifest_partitions
from . import features, svm

logger = logging.getLogger(__name__)

NAME = "egemaps-svm"


@dataclass(frozen=True)
class EgemapsConfig:
    """Settings of the eGeMAPS + SVM baseline (the paper's values are the defaults)."""

    c_grid: tuple[float, ...] = svm.C_GRID
    """SVM complexities tried on dev, in order (ties in dev UAR go to the earlier one)."""
    class_weight: Literal["balanced", "none"] = "balanced"
    """``balanced``: weight N / (K * n_k) per class, as the neural runs' loss; ``none``: unweighted."""
    max_iter: int = 10000
    """liblinear iterations per fit (non-convergence is recorded per C in baseline.json)."""
    jobs: int = 0
    """Feature extraction processes; 0 uses every core."""
    cache_dir: str = ""
    """Feature cache; empty: ``<output_dir>/cache/egemaps``."""
    sample_rate: int = features.SAMPLE_RATE
    """Hz at which features are computed (audio at other rates is resampled)."""

    def __post_init__(self) -> None:
        if not self.c_grid or any(not (c > 0 and math.isfinite(c)) for c in self.c_grid):
            raise EmonetError(f"c_grid must be a non-empty list of positive numbers, got {list(self.c_grid)}")
        if self.max_iter < 1 or self.jobs < 0 or self.sample_rate < 1000:
            raise EmonetError("need max_iter >= 1, jobs >= 0 (0: all cores) and sample_rate >= 1000 Hz")


@dataclass
class Corpus:
    """A prepared corpus split into the partitions of its ``CorpusConfig``."""

    spec: CorpusConfig
    rows: list[Utterance]
    classes: tuple[str, ...]
    y: np.ndarray
    """int64 ``(N,)`` index into ``classes``."""
    part: dict[str, np.ndarray]
    """``train``/``dev``/``test`` -> int64 row indices."""


def load_corpus(corpus_dir: str | Path, specs: dict[str, CorpusConfig]) -> Corpus:
    """Read a manifest and check it has train, dev and test rows (partitions as in ``specs`` or the defaults)."""
    rows = read_manifest(Path(corpus_dir))
    if not rows:
        raise EmonetError(f"{corpus_dir}: the manifest is empty")
    name = rows[0].corpus
    spec = specs.get(name, CorpusConfig(name))
    if spec.task != "emotion":
        raise EmonetError(f"corpus {name}: the eGeMAPS baseline classifies emotion labels only (task={spec.task})")
    classes = tuple(sorted({r.label for r in rows}))  # sorted like the shard index, so columns match neural runs
    y = np.array([classes.index(r.label) for r in rows], dtype=np.int64)
    part = {}
    for role in ("train", "dev", "test"):
        wanted = set(getattr(spec, role))
        part[role] = np.array([i for i, r in enumerate(rows) if r.partition in wanted], dtype=np.int64)
        if part[role].size == 0:
            found = sorted({r.partition for r in rows})
            raise EmonetError(f"corpus {name} ({corpus_dir}) has no {role} rows (partitions {sorted(wanted)}; the "
                              f"manifest has {found}); prepare it with the default speaker split or set "
                              f"data.corpora[].{role}")
    if len(np.unique(y[part["train"]])) < 2:
        raise EmonetError(f"corpus {name}: the train partition holds fewer than two classes")
    return Corpus(spec, rows, classes, y, part)


def fit_corpus(c: Corpus, x: np.ndarray, bcfg: EgemapsConfig) -> tuple[dict, dict]:
    """C search on dev, refit on train + dev, test predictions.

    Args:
        x: float32 ``(N, 88)`` features in row order.
    Returns:
        ``(result, predictions)``: result for baseline.json; predictions as ``write_predictions`` takes them
        (``ids``, ``probs`` ``(N_test, K)``, ``targets``).
    """
    k, cw = len(c.classes), (None if bcfg.class_weight == "none" else "balanced")
    tr, dv, te = c.part["train"], c.part["dev"], c.part["test"]
    best, trials = svm.search_c(x[tr], c.y[tr], x[dv], c.y[dv], k, bcfg.c_grid, cw, bcfg.max_iter)
    chosen = trials[best]["c"]
    trdv = np.concatenate([tr, dv])
    model, converged = svm.fit(chosen, x[trdv], c.y[trdv], cw, bcfg.max_iter)
    probs = svm.predict_proba(model, x[te], k)
    # scored from argmax(probs), exactly as the CSV's prediction column reads
    s = scores(c.y[te], probs.argmax(1), k)
    result = {"classes": list(c.classes), "partitions": {"train": list(c.spec.train), "dev": list(c.spec.dev),
                                                         "test": list(c.spec.test)},
              "sizes": {role: int(idx.size) for role, idx in c.part.items()}, "grid": trials,
              "chosen_index": best, "chosen_c": chosen, "dev_uar": trials[best]["dev_uar"],
              "refit_converged": converged, "test": s}
    preds = {"ids": [c.rows[i].id for i in te], "probs": probs, "targets": c.y[te]}
    return result, preds


def run_egemaps_baseline(corpus_dirs: list[str | Path], cfg: Config, bcfg: EgemapsConfig = EgemapsConfig(),
                         run_name: str | None = None) -> RunResult:
    """Run the baseline on every corpus and record it as one run (directory + MLflow).

    Args:
        corpus_dirs: prepared corpus directories (each with ``manifest.jsonl``).
        cfg: output_dir, tracking and (optionally) data.corpora entries naming other partitions per corpus.
        run_name: the run directory's name; default ``egemaps-svm-<date>-<time>-<hex>``.
    Returns:
        the RunResult (as ``emonet train``); ``metrics`` holds the final metrics.
    """
    # [1] corpora: read and check every manifest before anything is created
    specs = {s.name: s for s in cfg.data.corpora}
    corpora = [load_corpus(d, specs) for d in corpus_dirs]
    names = [c.spec.name for c in corpora]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EmonetError(f"corpus {', '.join(dup)} is given more than once")
    cfg = absolute_paths(cfg if cfg.name != Config().name else cfg.replace(name=NAME))
    cfg = cfg.replace({"data.corpora": [typed.to_dict(c.spec) for c in corpora]})  # config.yaml lists what it used
    cache_dir = Path(bcfg.cache_dir or Path(cfg.output_dir) / "cache" / "egemaps")

    # [2] the run: directory, config, MLflow run (the manifests as dataset inputs), run.json (RUNNING)
    parts = {c.spec.name: _partitions(c, Path(d)) for c, d in zip(corpora, corpus_dirs)}
    run = Run.create(cfg, run_name, kind="baseline", tags={"baseline": NAME}, parts=parts,
                     fields={"kind": "baseline", "baseline": NAME})
    log = run.logger()
    log.log_params({"baseline.name": NAME, "baseline.feature_set": features.FEATURE_SET,
                    "baseline.sample_rate": bcfg.sample_rate, "baseline.c_grid": json.dumps(list(bcfg.c_grid)),
                    "baseline.class_weight": bcfg.class_weight, "baseline.max_iter": bcfg.max_iter,
                    "baseline.classifier": "StandardScaler+LinearSVC(squared_hinge, ovr, dual=False)",
                    "baseline.probabilities": "softmax(decision_function), uncalibrated",
                    "baseline.corpora": ",".join(names)})
    for i, c in enumerate(bcfg.c_grid):  # so a plot of dev_uar/<corpus> over steps can be read as over C
        log.log_metrics({"c_log10": math.log10(c)}, i)
    try:
        final = _fit_all(corpora, run.dir, cache_dir, bcfg, log)
    except BaseException as exc:
        run.finish(False, error=str(exc)[:2000])
        raise
    # an incomplete MLflow copy is a warning and run.json's tracking: "incomplete" (`emonet track sync` completes it)
    run.finish(True, tracking_error=log.close(), metrics=final)
    return run.result(final)


def _partitions(c: Corpus, corpus_dir: Path) -> dict:
    """The run's ``partitions.json`` entry of a corpus; its digest is the manifest's sha256 (the baseline reads
    manifests, not shards)."""
    import hashlib

    manifest = corpus_dir / MANIFEST if corpus_dir.is_dir() else corpus_dir
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    return manifest_partitions(c.spec.name, c.rows, sha, str(manifest.resolve()))


def _fit_all(corpora: list[Corpus], run_dir: Path, cache_dir: Path, bcfg: EgemapsConfig,
             log: tracking.RunLogger) -> dict:
    """Features, C search and test predictions of every corpus; writes ``predictions/`` and ``baseline.json``,
    logs them; returns the final metrics."""
    # [3] features of every corpus (the slow part; cached)
    feats = [features.corpus_features(c.rows, cache_dir, bcfg.jobs, bcfg.sample_rate) for c in corpora]
    results, final = {}, {}
    for c, (x, feat_info) in zip(corpora, feats):
        # [4] C search on dev, refit on train + dev, test predictions
        t0 = time.monotonic()
        res, preds = fit_corpus(c, x, bcfg)
        res["features"] = {**feat_info, "set": features.FEATURE_SET, "dim": int(x.shape[1])}
        res["svm_seconds"] = round(time.monotonic() - t0, 2)
        results[c.spec.name] = res
        key = tracking.metric_key(c.spec.name)
        for i, t in enumerate(res["grid"]):
            log.log_metrics({tracking.metric_key("dev_uar", c.spec.name): t["dev_uar"]}, i)
        for which in ("best", "final"):  # the SVM has one model: the refit is both "best" and "final"
            write_predictions(run_dir / "predictions" / which / f"{key}.csv", preds, c.spec.name, c.classes)
            final[tracking.metric_key(f"test_uar_{which}", c.spec.name)] = res["test"]["uar"]
            final[tracking.metric_key(f"test_wa_{which}", c.spec.name)] = res["test"]["wa"]
        final[tracking.metric_key("dev_uar_best", c.spec.name)] = res["dev_uar"]
        final[tracking.metric_key("chosen_c", c.spec.name)] = res["chosen_c"]
        log.log_params({f"baseline.chosen_c.{key}": res["chosen_c"]})
        logger.info(f"[{NAME}] {c.spec.name}: C={res['chosen_c']:g} dev UAR {res['dev_uar']:.4f} -> test UAR "
                    f"{res['test']['uar']:.4f}, WA {res['test']['wa']:.4f} (features {feat_info['seconds']:.1f} s"
                    f"{', cached' if feat_info['cached'] else ''}; SVM {res['svm_seconds']:.1f} s)")

    # [5] outputs
    (run_dir / "baseline.json").write_text(json.dumps({"baseline": NAME, "corpora": results}, indent=1))
    log.log_metrics(final, 0)
    log.log_artifact(run_dir / "predictions", "predictions")
    log.log_artifact(run_dir / "baseline.json")
    final["tracking_ok"] = 0.0 if log.error else 1.0
    return final
