"""A grid of folds × seeds × methods, run as one unit (the ``grid`` step of a job spec).

Every method is a short pipeline of its own (train, transfer and baseline steps: a scratch run per corpus, a
pretraining run and its transfers, eGeMAPS + SVM). The grid runs it once per **cell**, a test fold and a seed:

* **Folds.** The corpora are prepared with ``prepare.split=folds`` (speaker-group folds ``fold1..foldK``). Cell i
  tests on fold i, takes fold i+1 (mod K) as dev (``dev: next``; ``dev: train`` selects on the training folds) and
  trains on the rest, for every corpus of every run. The folds' test predictions of one method and seed therefore
  cover every utterance of a corpus exactly once (:func:`~emonet_dist.evaluate.pooled.pool_predictions`
  refuses anything else).
* **Seeds.** A cell's seed is the runs' ``seed`` and ``data.seed``. Methods made only of baseline steps are
  deterministic and run once per fold.
* **Parallel, bounded.** A chain (one method's steps in one cell) runs in a thread of the driver; as many chains
  run at once as the Ray cluster's CPUs and GPUs hold runs (``max_parallel`` caps it). On a 2-CPU machine with
  2-worker runs that is one at a time.
* **Resumable.** Runs have fixed names (``<grid>-<method>-<step>-s<seed>-fold<i>``). Running the job again reuses
  every FINISHED run (its config must be the one planned, or the grid stops and says which keys differ), resumes
  an unfinished training run from its checkpoints and redoes an unfinished baseline. The grid's MLflow run is
  reopened, so every run stays nested under one parent.
* **One failure does not cost the others.** Every chain runs; failures are listed at the end and the report is
  only built from a complete grid.

The report (:func:`~emonet_dist.evaluate.grid_report.build_grid_report`) compares every method with the baseline
method: UAR mean ± std over folds and seeds, pooled UAR with a bootstrap CI, McNemar on the pooled predictions per
seed, and ASO over the runs' UARs.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import atomic, typed
from ..config import Config
from ..errors import EmonetError, short_list
from ..names import check_name, inside
from .parallel import run_side_by_side, width
from .spec import BaselineStep, GridStep, Step, TrainStep, TransferStep
from .steps import JobContext, corpora_dir, record

log = logging.getLogger(__name__)
STATE = "grid.json"
"""``<output_dir>/grids/<grid>/grid.json``: the grid's MLflow run and its runs' states."""
IGNORED = ("tracking.", "ray.address", "ray.storage_path", "ray.resources_timeout_s")
"""Config keys a reused run may differ in (where it logs and which cluster ran it, not what it computed)."""


@dataclass(frozen=True)
class Chain:
    """One method's steps in one cell: run in order, each step's run named by :func:`run_name`."""

    method: str
    seed: int
    fold: int
    steps: tuple[Step, ...]
    names: tuple[str, ...]
    leaves: tuple[str, ...]
    """Step ids whose runs hold the method's test predictions (no later step of the method builds on them)."""


def grid_name(cfg: Config, step: GridStep) -> str:
    return check_name(f"{cfg.name}-{step.id}", "grid name")


def run_name(grid: str, method: str, step: Step, seed: int, fold: int) -> str:
    return check_name(f"{grid}-{method}-{step.id}-s{seed}-fold{fold}", "grid run name")


def fold_partitions(k: int, i: int, dev: str, train_folds: int = 0) -> dict[str, list[str]]:
    """Cell i's partitions (1-based): fold i tests, fold i+1 (mod k) is dev unless ``dev == "train"``; the others
    train, or only the first ``train_folds`` of them in rotation order (from fold i+1 mod k on) when it is set."""
    folds = [f"fold{j}" for j in range(1, k + 1)]
    test = folds[i - 1]
    dev_fold = folds[i % k] if dev == "next" else None
    rotation = [f for f in folds[i:] + folds[:i - 1] if f != dev_fold]
    kept = set(rotation[:train_folds or None])
    train = [f for f in folds if f in kept]  # in fold order, as without train_folds (run configs stay the same)
    return {"train": train, "dev": [dev_fold] if dev_fold else train, "test": [test]}


def leaves(steps: tuple[Step, ...]) -> tuple[str, ...]:
    sources = {s.source for s in steps if isinstance(s, TransferStep)}
    return tuple(s.id for s in steps if s.id not in sources)


def plan(step: GridStep, cfg: Config) -> list[Chain]:
    """The grid's chains, seed by seed, fold by fold, method by method (the order they start in)."""
    grid = grid_name(cfg, step)
    chains = []
    for seed in step.seeds:
        for fold in range(1, step.folds + 1):
            for method, steps in step.methods.items():
                if seed != step.seeds[0] and all(isinstance(s, BaselineStep) for s in steps):
                    continue  # deterministic: one run per fold
                chains.append(Chain(method, seed, fold, tuple(steps),
                                    tuple(run_name(grid, method, s, seed, fold) for s in steps), leaves(tuple(steps))))
    return chains


def cell_values(cfg: Config, step: GridStep, chain: Chain, name: str, corpora: list[str] | None = None) -> dict:
    """The typed values a cell sets on a run's config: name, seeds, every corpus's fold partitions."""
    parts = fold_partitions(step.folds, chain.fold, step.dev, step.train_folds.get(chain.method, 0))
    specs = {c.name: typed.to_dict(c) for c in cfg.data.corpora}
    names = corpora if corpora is not None else list(specs)
    return {"name": name, "seed": chain.seed, "data.seed": chain.seed,
            "data.corpora": [{**specs.get(c, {"name": c}), **parts} for c in names]}


def run_config(ctx: JobContext, step: GridStep, chain: Chain, sub: Step, name: str, done: dict) -> Config:
    """The config of one run of a chain (``done``: the chain's earlier runs, by step id)."""
    if isinstance(sub, TransferStep):
        from ..train.transfer import transfer_config

        cfg = transfer_config(str(done[sub.source].dir), sub.corpus, sub.mode, list(sub.overrides), task=sub.task)
    elif isinstance(sub, TrainStep):
        cfg = ctx.config.override(*sub.overrides)
    else:
        return ctx.config.replace(cell_values(ctx.config, step, chain, name, list(sub.corpora)))
    return cfg.replace(cell_values(cfg, step, chain, name))


def _flat(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in typed.flatten(cfg.to_dict()).items() if not k.startswith(IGNORED)}


def reusable(cfg: Config, name: str):
    """The :class:`RunResult` of a FINISHED run ``name`` planned with ``cfg``; None when there is none yet (an
    unfinished baseline's directory is removed: it has no checkpoints to resume from; so is a directory without
    ``run.json``, left by a kill while the run was being created). Raises when the finished run used another
    config."""
    from ..runs import Run, absolute_paths
    from ..runs.store import RUN_JSON, read_config, read_run_json, run_dir_of

    cfg = absolute_paths(cfg)
    run_dir = run_dir_of(cfg.output_dir, name)
    if not (run_dir / RUN_JSON).is_file():
        if run_dir.is_dir():  # killed while it was being created: only its config files are there
            log.info("[grid] %s was interrupted before it started; starting it again", name)
            shutil.rmtree(run_dir)
        return None
    info = read_run_json(run_dir)
    if info.get("status") != "FINISHED":
        if info.get("kind") == "baseline":
            log.info("[grid] %s was not finished; running it again", name)
            shutil.rmtree(run_dir)  # run_dir_of resolved it inside output_dir
        return None  # a training run resumes from its checkpoints (run_training with its name)
    old, new = _flat(read_config(run_dir)), _flat(cfg)
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        raise EmonetError(f"run {name} exists with another config (differs in {short_list(diff)}); the grid's spec "
                          f"changed since it ran: give the job another name or output_dir, or remove {run_dir}")
    log.info("[grid] reusing finished run %s", name)
    return Run.open(run_dir).result(info.get("metrics") or {}, info.get("checkpoint"))


def run_chain(ctx: JobContext, step: GridStep, chain: Chain) -> list[dict]:
    """Run (or reuse) a chain's runs in order; returns their records."""
    from ..baselines.egemaps import EgemapsConfig, run_egemaps_baseline
    from ..train.launch import run_training

    done: dict[str, Any] = {}
    records = []
    for sub, name in zip(chain.steps, chain.names):
        cfg = run_config(ctx, step, chain, sub, name, done)
        res = reusable(cfg, name)
        if res is None:
            log.info("[grid] %s: method %s, seed %d, fold %d", name, chain.method, chain.seed, chain.fold)
            if isinstance(sub, BaselineStep):
                res = run_egemaps_baseline([corpora_dir(cfg, "") / c for c in sub.corpora], cfg, EgemapsConfig(),
                                           run_name=name)
            else:
                tags = {**ctx.tags, "job_step": step.id, "grid_method": chain.method, "grid_seed": str(chain.seed),
                        "grid_fold": str(chain.fold)}
                res = run_training(cfg, run_name=name, extra_tags=tags)
        done[sub.id] = res
        records.append(record(sub, res.name, res.dir, res.mlflow_run_id, res.tracking_uri, res.tracking_error))
    return records


def _state(cfg: Config, grid: str) -> tuple[Path, dict]:
    path = inside(cfg.output_dir, "grids", grid, STATE)
    try:
        return path, json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return path, {}


def run_grid(step: GridStep, ctx: JobContext) -> list[dict]:
    """Run the grid (resuming an earlier attempt) and its report; returns the records of its runs and report."""
    from ..runs import parent_run

    cfg = ctx.config
    grid = grid_name(cfg, step)
    chains = plan(step, cfg)
    state_path, state = _state(cfg, grid)
    uri = state.get("tracking_uri")
    reuse = state.get("mlflow_run_id") if uri and cfg.tracking.enabled and uri == _uri(cfg) else None
    with parent_run(cfg, grid, kind="grid", tags={**ctx.tags, "job_step": step.id}, reuse=reuse) as grid_run_id:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(state_path, json.dumps({"grid": grid, "mlflow_run_id": grid_run_id,
                                                  "tracking_uri": _uri(cfg) if grid_run_id else None,
                                                  "runs": [n for c in chains for n in c.names]}, indent=1))
        n = width(cfg, [s for steps in step.methods.values() for s in steps], len(chains), step.max_parallel)
        log.info("[grid %s] %d chains (%d folds x %d seeds x %d methods), %d at a time", grid, len(chains),
                 step.folds, len(step.seeds), len(step.methods), n)
        t0 = time.time()
        results, failed = run_side_by_side(
            lambda chain: run_chain(ctx, step, chain), chains, n,
            lambda k, total: log.info("[grid %s] %d/%d chains done (%.0f s)", grid, k, total, time.time() - t0))
        if failed:
            for i, exc in failed.items():
                log.error("[grid %s] %s failed: %s", grid, chains[i].names[-1], exc)
            names = short_list([chains[i].names[-1] for i in failed])
            raise EmonetError(f"{len(failed)} of {len(chains)} grid chains failed ({names}); run the job again to "
                              f"resume: finished runs are kept")
        records = [r for i in range(len(chains)) for r in results[i]]
        records.append(_report(step, ctx, chains, results, grid))
    return records


def _uri(cfg: Config) -> str:
    from ..tracking import tracking_uri

    return tracking_uri(cfg)


def _report(step: GridStep, ctx: JobContext, chains: list[Chain], results: dict[int, list[dict]], grid: str) -> dict:
    from ..evaluate.grid_report import GridRun, build_grid_report
    from ..evaluate.report import log_report_run

    cfg = ctx.config
    runs = []
    for i, chain in enumerate(chains):
        dirs = {r["step"]: r["dir"] for r in results[i]}
        runs.append(GridRun(chain.method, chain.seed, f"fold{chain.fold}", ",".join(dirs[s] for s in chain.leaves)))
    out = inside(cfg.output_dir, "reports", f"{grid}-{time.strftime('%Y%m%d-%H%M%S')}")
    uri = next((r["tracking_uri"] for recs in results.values() for r in recs if r["tracking_uri"]), None)
    rep = build_grid_report(runs, step.baseline or next(iter(step.methods)), out, checkpoint=step.checkpoint,
                            output_dir=cfg.output_dir, tracking_uri=uri)
    run_id = log_report_run(rep, uri, cfg.tracking.experiment, out) if uri else None
    ctx.reports[step.id] = {"report": rep, "dir": out, "run_id": run_id}
    log.info("[grid %s] report: %s", grid, out / "report.md")
    return record(step, out.name, out, run_id, uri)
