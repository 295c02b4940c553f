"""``emonet tune``: Ray Tune sweeps over config keys (learning rate, λ, ...) with ASHA early stopping.

Ray Train V2 pattern: every trial is a small driver function (``driver_cpus`` CPU) that builds the project's
``TorchTrainer`` for the trial's config through :func:`~emonet_dist.train.launch.run_training`; Ray Train's
``TuneReportCallback`` forwards each evaluation to Tune, so ASHA sees the objective as training goes.

The sweep directory (``<ray storage>/<sweep name>``) is Tune's experiment directory plus ``sweep.json``,
``results.csv``, ``objective.png`` and ``best_config.yaml``. MLflow gets one parent run for the sweep and one
nested child run per trial. ``emonet tune --resume SWEEP_DIR`` restores the Tuner: finished trials are kept,
interrupted ones restart and their training runs resume from their own checkpoints.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from . import tracking, typed
from .config import Config
from .errors import ConfigError, EmonetError, short, short_name
from .runs.store import RUN_JSON, absolute_paths, read_run_json, run_dir_of
from .runs.tracked import start_mlflow_run

log = logging.getLogger(__name__)

SWEEP_JSON = "sweep.json"
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "quniform": 3, "qloguniform": 3, "randint": 2, "choice": 1,
                 "grid": 1}


# ---------------------------------------------------------------------------------------------------------------
# search space
# ---------------------------------------------------------------------------------------------------------------
def parse_space(space: dict, base: Config) -> dict[str, tuple[str, list]]:
    """``{"optim.lr": "loguniform(1e-3, 0.3)", ...}`` -> ``{"optim.lr": ("loguniform", [0.001, 0.3])}``.

    Every key must be a config key and every value the distribution can produce must be valid for it; errors
    name the key, before any trial starts.
    """
    if not isinstance(space, dict) or not space:
        raise ConfigError("the search space must be a non-empty mapping of config keys to distributions, "
                          "e.g. optim.lr: loguniform(1e-3, 0.3)")
    out = {}
    for key, spec in space.items():
        m = re.fullmatch(r"\s*([a-z_]+)\s*\((.*)\)\s*", spec, re.S) if isinstance(spec, str) else None
        where = f"search space key '{short_name(key)}'"  # a bounded prefix of the key, in every message
        if not m or m.group(1) not in DISTRIBUTIONS:
            raise ConfigError(f"{where}: {short(spec)} is not a distribution; use one of "
                              f"{', '.join(f'{d}(...)' for d in DISTRIBUTIONS)}")
        name, raw = m.group(1), m.group(2)
        try:
            args = typed.yaml_load(f"[{raw}]")
        except Exception as exc:  # noqa: BLE001 - YAML errors
            raise ConfigError(f"{where}: cannot read the arguments of {short(spec)} ({short(exc, 200)})") from None
        if len(args) != DISTRIBUTIONS[name]:
            raise ConfigError(f"{where}: {name} takes {DISTRIBUTIONS[name]} argument(s), got {len(args)}")
        if name in ("choice", "grid"):
            if not isinstance(args[0], list) or not args[0]:
                raise ConfigError(f"{where}: {name} needs a non-empty list, e.g. {name}([a, b])")
            samples = args[0]
        else:
            lo, hi = args[0], args[1]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args) or not lo < hi:
                raise ConfigError(f"{where}: {name} needs numbers with low < high, got {short(raw)}")
            if "log" in name and lo <= 0:
                raise ConfigError(f"{where}: {name} needs low > 0, got {short(lo)}")
            samples = [lo, hi] if name != "randint" else [int(lo), int(hi) - 1]
        for v in samples:  # every value must make a valid config (strict types, ranges, Literal choices)
            try:
                base.override(f"{key}={json.dumps(v)}")
            except ConfigError as exc:
                raise ConfigError(f"{where}: value {short(v)} is not valid: {exc}") from None
        out[key] = (name, args)
    if "train.sampling_temperature" in out and "train.corpus_sampling" not in out \
            and base.train.corpus_sampling != "temperature":
        raise ConfigError("search space key 'train.sampling_temperature' has no effect with "
                          f"train.corpus_sampling={base.train.corpus_sampling}: set train.corpus_sampling=temperature "
                          "in the config or the space (see jobs/spaces/sampling_temperature.yaml)")
    return out


def plain(value: Any) -> Any:
    """A sampled value as the plain Python type the typed config checks (Tune may sample numpy scalars)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def tune_space(parsed: dict[str, tuple[str, list]]) -> dict[str, Any]:
    from ray import tune

    make = {"uniform": tune.uniform, "loguniform": tune.loguniform, "quniform": tune.quniform,
            "qloguniform": tune.qloguniform, "randint": tune.randint,
            "choice": lambda xs: tune.choice(xs), "grid": lambda xs: tune.grid_search(xs)}
    return {key: make[name](*args) for key, (name, args) in parsed.items()}


def load_space(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file {path} does not exist (see jobs/spaces/lr_lambda.yaml)")
    return typed.yaml_load(path.read_text()) or {}


def objective_metric(cfg: Config) -> str:
    if cfg.tune.objective == "mean":
        return "dev_uar_mean"
    names = [c.domain for c in cfg.data.corpora]
    if cfg.tune.objective not in names:
        raise ConfigError(f"tune.objective '{cfg.tune.objective}' is neither 'mean' nor one of the run's corpora "
                          f"({', '.join(names)})")
    return tracking.metric_key("dev_uar", cfg.tune.objective)


# ---------------------------------------------------------------------------------------------------------------
# one trial
# ---------------------------------------------------------------------------------------------------------------
def run_trial(config: dict, base: dict, sweep: str, parent_run_id: str | None) -> None:
    """Tune trainable: train the base config with this trial's values ``config["params"]`` (in a trial actor)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from .train.launch import run_training

    params = config["params"]
    trial = tune.get_context().get_trial_id()
    cfg = Config.from_dict(base).replace({k: plain(v) for k, v in params.items()})
    done = run_dir_of(absolute_paths(cfg).output_dir, f"{sweep}-{trial}")
    info = read_run_json(done) if (done / RUN_JSON).is_file() else {}
    if info.get("status") == "FINISHED":
        # the run finished but the sweep was stopped before Tune recorded it: report its result, train nothing
        metrics = info.get("metrics") or {}
        log.info("[tune] trial %s: run %s already finished; reporting its result", trial, done.name)
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        return
    run_training(cfg, run_name=f"{sweep}-{trial}", parent_run_id=parent_run_id,
                 extra_tags={"sweep": sweep, "trial_id": trial, **{f"tune.{k}": str(v) for k, v in params.items()}},
                 callbacks=[TuneReportCallback()])


# ---------------------------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------------------------
def run_sweep(cfg: Config, space: dict, resume: str | None = None) -> dict:
    """Run (or resume) a sweep; returns the summary written to ``sweep.json``."""
    from ray import tune

    from .train.launch import init_ray, storage_path

    if resume:
        sweep_dir = Path(resume).resolve()
        if not (sweep_dir / SWEEP_JSON).is_file():
            raise EmonetError(f"{sweep_dir} is not a sweep directory (it has no {SWEEP_JSON}); pass the directory "
                              f"`emonet tune` printed, <ray.storage>/<name>-sweep-<time>, not a trial's")
        info = json.loads((sweep_dir / SWEEP_JSON).read_text())
        cfg, space = Config.from_dict(info["config"]), info["space"]
    else:
        cfg = absolute_paths(cfg)
    parsed = parse_space(space, cfg)  # refuses bad spaces before anything starts
    metric = objective_metric(cfg)
    if resume is None:
        name = f"{cfg.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        sweep_dir = storage_path(cfg) / name
        sweep_dir.mkdir(parents=True, exist_ok=False)
        parent = None
        if cfg.tracking.enabled:  # experiment first: trials creating it concurrently would race on sqlite
            # the sweep's parent run (itself nested under a job's run when one is open); trials nest under it
            parent = start_mlflow_run(cfg, name, "sweep", {"sweep": name, "objective": metric})
            client = tracking.client(tracking.tracking_uri(cfg))
            client.log_text(parent, json.dumps(space, indent=1), "space.json")
        info = {"name": name, "config": cfg.to_dict(), "space": space, "metric": metric, "parent_run_id": parent,
                "tracking_uri": tracking.tracking_uri(cfg) if cfg.tracking.enabled else None}
        (sweep_dir / SWEEP_JSON).write_text(json.dumps(info, indent=1))
    log.info("[tune] sweep %s: %s (if interrupted: emonet tune --resume %s)", info["name"], sweep_dir, sweep_dir)
    init_ray(cfg)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=cfg.to_dict(), sweep=info["name"], parent_run_id=info["parent_run_id"]),
        {"CPU": cfg.tune.driver_cpus})
    if resume:
        tuner = tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_errored=True)
    else:
        # max_t beyond the last step: a trial reaching max_t is stopped at once, which would kill its driver
        # before the training run is closed.
        total = cfg.train.steps_per_stage * cfg.optim.stages + 1 if cfg.train.schedule == "multi" else 10**9
        scheduler = None
        if cfg.tune.scheduler == "asha":
            scheduler = tune.schedulers.ASHAScheduler(time_attr="step", max_t=total, grace_period=cfg.tune.grace_period,
                                                      reduction_factor=cfg.tune.reduction_factor)
        search = None
        if cfg.tune.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search = OptunaSearch(seed=cfg.seed)
        tuner = tune.Tuner(
            trainable,
            param_space={"params": tune_space(parsed)},
            tune_config=tune.TuneConfig(metric=metric, mode="max", num_samples=cfg.tune.num_samples,
                                        max_concurrent_trials=cfg.tune.max_concurrent, scheduler=scheduler,
                                        search_alg=search),
            run_config=tune.RunConfig(name=info["name"], storage_path=str(sweep_dir.parent),
                                      failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures)),
        )
    t0 = time.time()
    grid = tuner.fit()
    return summarize(grid, cfg, sweep_dir, info, time.time() - t0)


def summarize(grid, cfg: Config, sweep_dir: Path, info: dict, wall: float) -> dict:
    """Results table, best config, plot, and the parent MLflow run's final contents."""
    metric = info["metric"]
    rows = []
    for r in grid:
        params = (r.config or {}).get("params", {})
        last = r.metrics or {}
        history = r.metrics_dataframe
        objective = float(last[metric]) if metric in last else float("nan")
        status = "ERROR" if r.error else "TERMINATED"
        stopped = r.error is None and "train_seconds" not in last  # the final report never came: ASHA stopped it
        rows.append({"trial": str(last.get("trial_id") or (r.path or "?").rsplit("/", 1)[-1]),
                     **{k: params.get(k) for k in info["space"]},
                     "objective": objective, "status": status, "stopped_early": stopped,
                     "steps": int(last.get("step", 0)), "loop_seconds": float(last.get("loop_seconds", float("nan"))),
                     "error": str(r.error).strip().splitlines()[-1][:300] if r.error else "",
                     "history_len": 0 if history is None else len(history)})
    complete = [r for r in rows if r["status"] == "TERMINATED" and not r["stopped_early"]]
    pool = complete or [r for r in rows if r["status"] == "TERMINATED"]
    best = max(pool, key=lambda r: r["objective"]) if pool else None
    with open(sweep_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        w.writeheader()
        w.writerows(rows)
    summary = {**info, "sweep_dir": str(sweep_dir), "wall_seconds": round(wall, 1), "trials": rows, "best": best}
    if best:
        best_cfg = Config.from_dict(info["config"]).replace({k: plain(best[k]) for k in info["space"]},
                                                            name=f"{info['name']}-best")
        (sweep_dir / "best_config.yaml").write_text(best_cfg.to_yaml())
    _plot(rows, info["space"], sweep_dir / "objective.png", metric)
    (sweep_dir / SWEEP_JSON).write_text(json.dumps(summary, indent=1, default=str))
    if info.get("parent_run_id"):
        _log_parent(summary, sweep_dir)
    return summary


def _plot(rows: list[dict], space: dict, path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in space if all(isinstance(r.get(k), (int, float)) for r in rows)][:2] or list(space)[:1]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for stopped, marker in ((False, "o"), (True, "x")):
            pts = [(r[key], r["objective"]) for r in rows if r["stopped_early"] == stopped and r["status"] != "ERROR"]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, label="stopped early" if stopped else "completed")
        if "lr" in key or (str(space[key]).startswith("log")):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _log_parent(summary: dict, sweep_dir: Path) -> None:
    client = tracking.client(summary["tracking_uri"])
    run_id = summary["parent_run_id"]
    best = summary["best"]
    if best:
        client.log_metric(run_id, "best_objective", best["objective"])
        for k in summary["space"]:
            client.set_tag(run_id, f"best.{k}", str(best[k]))
    for name in ("results.csv", "objective.png", "best_config.yaml", SWEEP_JSON):
        if (sweep_dir / name).is_file():
            client.log_artifact(run_id, str(sweep_dir / name))
    # trials stopped by ASHA lost their driver before they could close their MLflow runs
    for child in client.search_runs([client.get_run(run_id).info.experiment_id],
                                    filter_string=f"tags.mlflow.parentRunId = '{run_id}'"):
        if child.info.status == "RUNNING":
            client.set_terminated(child.info.run_id, "KILLED")
    client.set_terminated(run_id, "FINISHED")


def format_table(summary: dict) -> str:
    """The sweep's trials as a text table (what ``emonet tune`` prints)."""
    keys = list(summary["space"])
    head = ["trial", *keys, "objective", "status", "stopped early", "steps"]
    lines = ["  ".join(f"{h:>14s}" for h in head)]
    for r in summary["trials"]:
        vals = [r["trial"][-14:], *[_fmt(r[k]) for k in keys], f"{r['objective']:.4f}", r["status"],
                "yes" if r["stopped_early"] else "no", str(r["steps"])]
        lines.append("  ".join(f"{v:>14s}" for v in vals))
    if summary["best"]:
        lines.append(f"best: {summary['best']['trial']} objective {summary['best']['objective']:.4f}")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)

