"""One run, start to end: :class:`Run` ties the directory, ``run.json`` and the MLflow run together.

Every kind of run goes through it (training and transfer in ``train.launch``, the eGeMAPS baseline, evaluation
of a finished run, Tune's sweep)::

    run = Run.create(cfg, name, kind="train", parts=read_partitions(cfg))   # dir, config, MLflow, run.json RUNNING
    ...                                                                    # the work; rank 0 logs via run.logger()
    error = run.finish(ok, metrics=metrics)                                # run.json FINISHED/FAILED, MLflow status

``run.json`` holds ``name``, ``dir``, ``mlflow_run_id``, ``tracking_uri``, ``status``, ``tracking`` (``complete``
or ``incomplete``, for a run with an MLflow run) and what the kind of run adds (``kind``, ``metrics``,
``checkpoint``, ``error``...). Tracking never decides a run's outcome: if MLflow fails, the run still finishes on
disk with ``tracking: "incomplete"`` and a warning, ``tracking_error.txt`` says what went wrong, and
``emonet track sync`` completes the MLflow copy.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import log, tracking
from ..config import Config
from ..errors import short
from ..tracking_http import reachable, server_of
from . import store, tracked

logger = logging.getLogger(__name__)
TRACKING_ERROR = "tracking_error.txt"
PARTITIONS = "partitions.json"
LOGS = "logs"
"""The run's log files: ``driver.log`` (the process that started the run) and ``rank<N>.log`` (training workers);
logged to the MLflow run as artifacts under ``logs/`` when it finishes."""


@dataclass
class RunResult:
    """What a finished run returns to its caller."""

    name: str
    dir: Path
    metrics: dict
    checkpoint: str | None
    mlflow_run_id: str | None
    tracking_uri: str | None
    tracking_error: str | None = None
    """Why the MLflow copy of the run is incomplete (``emonet track sync`` completes it), or None."""


@dataclass
class Run:
    name: str
    dir: Path
    cfg: Config
    tracking_uri: str | None
    mlflow_run_id: str | None
    fields: dict = field(default_factory=dict)
    """Extra ``run.json`` fields kept for the whole run (e.g. ``kind``, ``baseline``)."""
    log_handler: object = field(default=None, repr=False, compare=False)
    """The handler copying this process's log lines into ``logs/driver.log`` (:meth:`start_log`)."""

    @classmethod
    def create(cls, cfg: Config, name: str | None = None, kind: str = "train", tags: dict[str, str] | None = None,
               parent_run_id: str | None = None, parts: dict | None = None, fields: dict | None = None) -> Run:
        """A new run: its directory ``<output_dir>/<name>`` (a new name when None), config files, MLflow run
        (when ``cfg.tracking.enabled``; nested under ``parent_run_id`` or ``$EMONET_PARENT_RUN_ID``),
        ``partitions.json`` from ``parts`` and ``run.json`` with status RUNNING.

        ``cfg`` should already have absolute paths (:func:`store.absolute_paths`)."""
        name = name or store.new_run_name(cfg)
        run_dir = store.create_run_dir(cfg.output_dir, name)
        store.write_config(run_dir, cfg)
        uri = tracking.tracking_uri(cfg) if cfg.tracking.enabled else None
        run_id = tracked.start_mlflow_run(cfg, name, kind, tags, parent_run_id, parts) if uri else None
        run = cls(name, run_dir, cfg, uri, run_id, dict(fields or {}))
        run.start_log()
        run.write_status("RUNNING")
        if parts is not None:
            run.write_partitions(parts)
        return run

    @classmethod
    def open(cls, ref: str | Path, output_dir: str | Path = "runs") -> Run:
        """An existing run from its directory, its name under ``output_dir`` or its MLflow run id."""
        run_dir = store.find_run(ref, output_dir)
        info = store.read_run_json(run_dir)
        known = {"name", "dir", "mlflow_run_id", "tracking_uri", "status", "metrics", "checkpoint", "storage_path",
                 "error", "tracking"}
        return cls(info.get("name") or run_dir.name, run_dir, store.read_config(run_dir), info.get("tracking_uri"),
                   info.get("mlflow_run_id"), {k: v for k, v in info.items() if k not in known})

    @property
    def info(self) -> dict:
        """The fields every ``run.json`` holds, plus this run's own."""
        return {"name": self.name, "dir": str(self.dir), "mlflow_run_id": self.mlflow_run_id,
                "tracking_uri": self.tracking_uri, **self.fields}

    def read_info(self) -> dict:
        return store.read_run_json(self.dir)

    def write_status(self, status: str, **fields) -> None:
        store.write_run_json(self.dir, {**self.info, "status": status, **fields})

    def logger(self, journal: str | Path | None = None, background: bool = False) -> tracking.RunLogger:
        """Metrics to a journal (default ``<run>/metrics.jsonl``) and, while it is reachable, to the MLflow run
        (``background``: through a sender thread, see :class:`~emonet_dist.tracking.RunLogger`)."""
        return tracking.RunLogger(self.tracking_uri, self.mlflow_run_id, journal or self.dir / tracking.JOURNAL,
                                  background=background)

    def write_partitions(self, parts: dict) -> None:
        """``partitions.json`` in the run (and MLflow): the exact speaker-independent split the run used."""
        path = self.dir / PARTITIONS
        store.atomic_write_text(path, json.dumps(parts, indent=1))
        if self.tracking_uri and self.mlflow_run_id:
            tracking.quietly(lambda: tracking.client(self.tracking_uri).log_artifact(self.mlflow_run_id, str(path)))

    def start_log(self) -> None:
        """Copy this process's log lines into ``logs/driver.log`` until :meth:`finish` (appended on resume)."""
        if self.log_handler is None:
            main = threading.current_thread() is threading.main_thread()
            self.log_handler = log.start_file_log(self.dir / LOGS / "driver.log",
                                                  None if main else threading.get_ident())

    def tracking_error(self) -> str | None:
        """Why MLflow logging failed during the run (``tracking_error.txt``), or None."""
        path = self.dir / TRACKING_ERROR
        return path.read_text().strip() if path.is_file() else None

    def finish(self, ok: bool, tracking_error: str | None = None, **fields) -> str | None:
        """End the run: ``tracking_error.txt`` (when given), the logs and status of the MLflow run (FAILED also
        when tracking failed), then ``run.json`` FINISHED or FAILED with ``fields`` and ``tracking``. Returns the
        tracking error, if any; an incomplete MLflow copy is a warning, never the run's failure.

        When tracking already failed, the MLflow calls here are made only if the server answers a short probe, so a
        server that is down costs seconds, not minutes."""
        if tracking_error:
            self._write_tracking_error(tracking_error)
        log.stop_file_log(self.log_handler)  # the driver's log is complete before it is uploaded
        self.log_handler = None
        error = self.tracking_error()
        tracked_run = bool(self.tracking_uri and self.mlflow_run_id)
        if tracked_run and (error is None or reachable(self.tracking_uri)):
            if error is None and (self.dir / LOGS).is_dir():
                try:
                    tracking.client(self.tracking_uri).log_artifacts(self.mlflow_run_id, str(self.dir / LOGS), LOGS)
                except Exception as exc:  # noqa: BLE001 - any failure of the tracking store
                    error = self._write_tracking_error(f"MLflow at {server_of(self.tracking_uri)} failed "
                                                       f"while logging the run's logs: {short(exc, 300)}")
            tracked.finish_mlflow_run(self.tracking_uri, self.mlflow_run_id, ok and error is None)
        state = {"tracking": "incomplete" if error else "complete"} if tracked_run else {}
        self.write_status("FINISHED" if ok else "FAILED", **state, **fields)
        if error:
            logger.warning("run %s: tracking incomplete, the MLflow run lacks part of what is in %s (%s); complete it "
                           "with `emonet track sync %s` once the tracking server is reachable", self.name, self.dir,
                           error, self.dir)
        return error

    def _write_tracking_error(self, error: str) -> str:
        store.atomic_write_text(self.dir / TRACKING_ERROR, error.strip() + "\n")
        return error.strip()

    def result(self, metrics: dict, checkpoint: str | None = None) -> RunResult:
        return RunResult(self.name, self.dir, metrics, checkpoint, self.mlflow_run_id, self.tracking_uri,
                         self.tracking_error())
