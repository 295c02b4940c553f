"""A run's MLflow side: start (tags, params, config, dataset inputs), nesting under a parent run, finish, sync.

A run starts with:
  - tags: the run name, ``emonet.kind`` (train, baseline, sweep, job, ...), MLflow's source tags
    (``mlflow.source.name``, ``mlflow.source.type``, ``mlflow.source.git.commit``, which the UI shows as the run's
    source and commit), ``git_sha``, package versions and the world size;
  - params: the flattened config (MLflow takes at most 100 per call); ``config.yaml`` as an artifact;
  - ``mlflow.parentRunId`` when it belongs to a job, a sweep or an experiment: the parent comes from the caller or,
    when the caller gives none, from :data:`PARENT_ENV` (set by :func:`parent_run` for everything it starts);
  - the corpora it reads as dataset inputs (:mod:`.inputs`).

The experiment is tagged as model training (``tracking.ensure_experiment``), so MLflow 3 opens it in the
model-training view.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import tracking
from ..config import Config
from ..errors import EmonetError, short
from ..log import start_file_log, stop_file_log
from ..names import check_name, inside
from ..tracking_http import probe_tracking_server, server_of
from .inputs import dataset_inputs

log = logging.getLogger(__name__)

PARENT_ENV = "EMONET_PARENT_RUN_ID"
"""Environment variable holding the MLflow run id that new runs nest under (when no parent is passed)."""
SOURCE_TYPE = "LOCAL"  # MLflow's SourceType for code run from a local checkout or install


def source_tags(kind: str, sha: str) -> dict[str, str]:
    """MLflow's source tags: what ran (``emonet <kind>``) and at which git commit ``sha`` (omitted when unknown)."""
    tags = {"mlflow.source.name": f"emonet {kind}", "mlflow.source.type": SOURCE_TYPE}
    if sha != "unknown":
        tags["mlflow.source.git.commit"] = sha
    return tags


def parent_from_env() -> str | None:
    value = os.environ.get(PARENT_ENV, "").strip()
    return value or None


def create_mlflow_run(uri: str, experiment: str, name: str, kind: str, tags: dict[str, str] | None = None,
                      parent_run_id: str | None = None, artifact_location: str | None = None) -> str:
    """An MLflow run with the tags every run carries (name, kind, source and commit, versions; the parent from
    ``parent_run_id`` or :data:`PARENT_ENV`), in ``experiment`` (created, tagged as model training, if needed)."""
    exp_id = tracking.ensure_experiment(uri, experiment, artifact_location)
    parent = parent_run_id or parent_from_env()
    sha = tracking.git_sha()
    all_tags = {"mlflow.runName": name, "emonet.kind": kind, **source_tags(kind, sha), "git_sha": sha,
                **{f"version.{k}": v for k, v in tracking.package_versions().items()}, **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    return tracking.client(uri).create_run(exp_id, run_name=name, tags=all_tags).info.run_id


def start_mlflow_run(cfg: Config, name: str, kind: str, tags: dict[str, str] | None = None,
                     parent_run_id: str | None = None, parts: dict | None = None) -> str:
    """Create the MLflow run of a run, with the config as params and the data as dataset inputs; returns its id.

    Args:
        kind: what the run is (``train``, ``baseline``, ``sweep``, ``job``...): tag ``emonet.kind`` and the source.
        parent_run_id: nest under this run; None: :data:`PARENT_ENV`, if set.
        parts: the corpora read (:func:`.inputs.read_partitions`), logged as dataset inputs.
    """
    uri = tracking.tracking_uri(cfg)
    run_id = create_mlflow_run(uri, cfg.tracking.experiment, name, kind,
                               {"world_size": str(cfg.ray.num_workers), **(tags or {})}, parent_run_id,
                               tracking.artifact_root(cfg))
    tracking.log_params(uri, run_id, cfg.flat())
    c = tracking.client(uri)
    c.log_text(run_id, cfg.to_yaml(), "config.yaml")
    inputs = dataset_inputs(parts or {})
    if inputs:
        log_inputs(c, run_id, inputs)
    return run_id


_INPUTS_LOCK = threading.Lock()


def log_inputs(client, run_id: str, inputs: list) -> None:
    """The run's dataset inputs. MLflow creates a dataset on first use with a get-or-insert that races: two runs
    of one process (a job's side-by-side steps, a grid) logging the same corpus at once hit its UNIQUE constraint.
    Runs of this process take turns, and a run of another process that wins the race is retried once."""
    with _INPUTS_LOCK:
        try:
            client.log_inputs(run_id, datasets=inputs)
        except Exception:  # noqa: BLE001 - the other writer created the dataset: now it exists
            time.sleep(0.5)
            client.log_inputs(run_id, datasets=inputs)


def finish_mlflow_run(uri: str | None, run_id: str | None, ok: bool) -> None:
    """Best effort: the outcome is already in ``run.json``; a failure here shows as ``tracking_error.txt``."""
    if uri and run_id:
        tracking.quietly(lambda: tracking.finish_run(uri, run_id, ok))


@contextmanager
def parent_run(cfg: Config, name: str, kind: str = "job", tags: dict[str, str] | None = None,
               reuse: str | None = None) -> Iterator[str | None]:
    """An MLflow run for a job (or an experiment) that every run started inside the block nests under.

    Usage (a pipeline runner)::

        with parent_run(cfg, "demo-20260101-120000", kind="job") as parent_id:
            run_training(...)          # and any other run: all get mlflow.parentRunId = parent_id

    Yields the parent's run id (None when ``cfg.tracking.enabled`` is false). Inside the block
    :data:`PARENT_ENV` holds the id (child processes inherit it); the parent ends FINISHED, or FAILED when the block
    raises. A parent already set (a job inside a job) becomes this run's own parent. The block's log lines go to
    ``<output_dir>/jobs/<name>/job.log``, an artifact of the parent run. ``reuse``: the MLflow run id of an earlier
    attempt (a resumed grid), which is reopened instead of a new parent when the server still has it.
    """
    if not cfg.tracking.enabled:
        yield None
        return
    log_file = inside(cfg.output_dir, "jobs", check_name(name, f"{kind} name"), f"{kind}.log")
    uri = tracking.tracking_uri(cfg)
    run_id = _reopened(uri, reuse) if reuse else None
    run_id = run_id or start_mlflow_run(cfg, name, kind, tags)
    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = run_id
    handler = start_file_log(log_file)
    ok = False
    try:
        yield run_id
        ok = True
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before
        stop_file_log(handler)
        tracking.quietly(lambda: tracking.client(uri).log_artifact(run_id, str(log_file), "logs"))
        finish_mlflow_run(uri, run_id, ok)


def _reopened(uri: str, run_id: str) -> str | None:
    """``run_id`` set RUNNING again, or None when the store does not have it."""
    def reopen() -> str:
        tracking.client(uri).update_run(run_id, status="RUNNING")
        return run_id
    return tracking.quietly(reopen)


def sync_run(run_dir: Path, info: dict, uri: str | None = None) -> tuple[int, int]:
    """Complete a run's MLflow copy after an outage: the metric points of its journal that the MLflow run lacks
    (with their original steps and timestamps, so syncing twice duplicates nothing), its artifact folders and its
    final status; ``run.json`` then says ``tracking: "complete"`` and ``tracking_error.txt`` goes.

    Returns (journal entries, metric points sent). A server that does not answer fails within seconds."""
    from .store import write_run_json

    uri = uri or info.get("tracking_uri")
    run_id = info.get("mlflow_run_id")
    if not uri or not run_id:
        raise EmonetError(f"run {run_dir.name} has no MLflow run to sync into (tracking was off)")
    probe_tracking_server(uri, hint="nothing was lost; try again once it is back (or pass --tracking-uri)")
    try:
        journal = run_dir / tracking.JOURNAL
        entries, sent = tracking.replay_journal(uri, run_id, journal) if journal.is_file() else (0, 0)
        c = tracking.client(uri)
        for sub in ("backbone", "bundles", "predictions", "final", "logs"):
            if (run_dir / sub).exists():
                c.log_artifacts(run_id, str(run_dir / sub), sub)
        tracking.finish_run(uri, run_id, info.get("status") == "FINISHED")
    except Exception as exc:  # noqa: BLE001 - the store is still unreachable
        raise EmonetError(f"MLflow at {server_of(uri)} is still unreachable ({short(exc, 200)}); nothing "
                          "was lost, try again later") from None
    (run_dir / "tracking_error.txt").unlink(missing_ok=True)
    if info.get("status") in ("FINISHED", "FAILED"):
        write_run_json(run_dir, {**info, "tracking": "complete"})
    log.info("replayed %d metric entries of %s into MLflow run %s (%d points were missing)", entries, run_dir.name,
             run_id, sent)
    return entries, sent
