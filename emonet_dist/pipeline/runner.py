"""The one step runner: a job spec's steps, in order, in this process.

``emonet jobs run SPEC`` calls it directly, a job submitted with ``emonet submit`` calls it in the job's driver on
the cluster, and ``emonet demo`` calls it with the shipped demo spec. Every finished run is handed to
``on_record`` (the CLI prints it as a marker line, ``MARKER`` + JSON, which ``emonet submit --follow`` finds in
the job's logs to print the MLflow links).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..names import MAX_LEN
from .grid import run_grid
from .parallel import run_side_by_side, width
from .preflight import preflight
from .spec import JobSpec, Step
from .steps import STEPS, JobContext

log = logging.getLogger(__name__)
MARKER = "@@emonet-run "
RUNNERS = {**STEPS, "grid": run_grid}
"""Step kind -> its function (every kind of :data:`emonet_dist.pipeline.spec.KINDS`); a grid makes many runs."""
SIDE_BY_SIDE = ("train", "transfer", "baseline")
"""Step kinds that may run side by side (:func:`waves`)."""
ON_RAY = ("train", "transfer", "tune", "grid")
"""Step kinds that use Ray: a job with one starts Ray in the background while MLflow sets up the job's run."""


@dataclass(frozen=True)
class JobOutcome:
    """What a job made: one record per run (in order), the runs and reports by step id, the wall time."""

    records: list[dict]
    runs: dict[str, Any]
    reports: dict[str, dict]
    seconds: float
    mlflow_run_id: str | None = None
    """The job's own MLflow run, which every run of the job nests under (None with tracking off)."""


def marker_line(record: dict) -> str:
    return MARKER + json.dumps(record)


def job_config(cfg: Config) -> Config:
    """The spec's config where it runs: inside a Ray job, the job's runtime_env names the MLflow server
    (``MLFLOW_TRACKING_URI``) and the cluster (``RAY_ADDRESS``) unless the config does."""
    values: dict[str, Any] = {}
    if not cfg.tracking.uri and os.environ.get("MLFLOW_TRACKING_URI"):
        values["tracking.uri"] = os.environ["MLFLOW_TRACKING_URI"]
    if not cfg.ray.address and os.environ.get("RAY_ADDRESS"):
        values["ray.address"] = "auto"
    return cfg.replace(values) if values else cfg


def job_tags(spec: JobSpec) -> dict[str, str]:
    """Tags of every run of the job: its name and, in a submitted job, the submission id (from the job's
    metadata, which reaches the driver in Ray's job-config variable)."""
    tags = {"emonet_job": spec.name}
    try:
        meta = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("metadata") or {}
        tags.update({"ray_submission_id": meta["emonet_submission_id"]} if "emonet_submission_id" in meta else {})
    except (ValueError, AttributeError):
        pass
    return tags


def _experiment_id(rec: dict) -> str | None:
    from .. import tracking

    if not rec["mlflow_run_id"] or not rec["tracking_uri"]:
        return None
    try:
        return tracking.client(rec["tracking_uri"]).get_run(rec["mlflow_run_id"]).info.experiment_id
    except Exception:  # noqa: BLE001 - the link is a convenience; the run id is recorded anyway
        return None


def waves(steps: tuple[Step, ...]) -> list[list[Step]]:
    """The steps in order, consecutive runs that do not build on each other grouped (two transfers from one
    pretraining run, scratch runs and baselines); every other step is a wave of its own."""
    out: list[list[Step]] = []
    for st in steps:
        cur = out[-1] if out else []
        if cur and st.run in SIDE_BY_SIDE and all(s.run in SIDE_BY_SIDE for s in cur) and \
                getattr(st, "source", None) not in {s.id for s in cur}:
            cur.append(st)
        else:
            out.append([st])
    return out


def run_wave(wave: list[Step], ctx: JobContext) -> list[dict]:
    """A wave's steps, side by side as far as the cluster holds them; their records in step order. One at a time,
    the first failure stops the job, as it always did; side by side, a failure fails the job once the others of
    its wave have ended."""
    n = width(ctx.config, wave, len(wave))
    for st in wave:
        log.info("[job %s] step %s: %s%s", ctx.spec.name, st.id, st.run, f" ({n} at a time)" if n > 1 else "")
    if n == 1:
        made = [RUNNERS[st.run](st, ctx) for st in wave]
    else:
        results, failed = run_side_by_side(lambda st: RUNNERS[st.run](st, ctx), wave, n)
        for i, exc in failed.items():
            log.error("[job %s] step %s failed: %s", ctx.spec.name, wave[i].id, exc)
        if failed:
            raise failed[min(failed)]
        made = [results[i] for i in range(len(wave))]
    return [rec for m in made for rec in (m if isinstance(m, list) else [m] if m else [])]


def run_spec(spec: JobSpec, on_record: Callable[[dict], None] | None = None) -> JobOutcome:
    """Run the steps in order; returns what they made. A failing step raises and stops the job.

    The job is a parent run in MLflow: every run its steps start (and a sweep's trials, one level further down)
    nests under it, and it ends FAILED when a step fails."""
    from ..runs import parent_run

    t0 = time.time()
    ctx = JobContext(spec, job_config(spec.config), job_tags(spec))
    preflight(spec, ctx.config)  # storage and inputs, before anything is created or started
    starting = None
    if any(st.run in ON_RAY for st in spec.steps):
        from ..train.launch import start_ray_in_background

        starting = start_ray_in_background(ctx.config)  # Ray's processes start while MLflow sets up
    records = []
    stamp = time.strftime("-%Y%m%d-%H%M%S")
    name = spec.name[: MAX_LEN - len(stamp)] + stamp  # the parent run's name and its log directory
    with parent_run(ctx.config, name, kind="job", tags=ctx.tags) as job_run_id:
        if starting:
            starting.wait()  # steps fork worker pools: not while another thread is half-way through Ray's start
        for wave in waves(spec.steps):
            for rec in run_wave(wave, ctx):
                # (no link lookup on a server that just failed the run's tracking)
                rec["experiment_id"] = None if rec.get("tracking") == "incomplete" else _experiment_id(rec)
                records.append(rec)
                log.info("[job %s] step %s: %s in %s", spec.name, rec["step"], rec["run"], rec["dir"])
                if on_record:
                    on_record(rec)
    incomplete = [r["dir"] for r in records if r.get("tracking") == "incomplete"]
    if incomplete:  # each run warned when it ended; the job's last lines say it again, with the commands
        log.warning("[job %s] tracking incomplete for %d run(s); complete their MLflow copies with: %s", spec.name,
                    len(incomplete), "; ".join(f"emonet track sync {d}" for d in incomplete))
    return JobOutcome(records, ctx.runs, ctx.reports, time.time() - t0, job_run_id)
