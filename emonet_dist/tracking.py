"""The MLflow client: tracking URIs, experiments, metric keys, and logging that survives a server that goes away.

What a run *is* (its directory, ``run.json``, the MLflow run's start, tags, params, dataset inputs and end) is the
run layer's (:mod:`emonet_dist.runs`); this module is the thin client it and the training workers use. Rank 0 of
the training workers logs into the run through a :class:`RunLogger`, which appends every metric to a local
JSON-lines journal first (the source of truth) and then hands the MLflow call to a background sender
(:mod:`emonet_dist.tracking_sender`), so a training step never waits for the server. If MLflow becomes unreachable,
logging goes on in the journal only, training goes on, and the error is reported at the end (``RunLogger.close``);
``emonet track sync RUN_DIR`` replays the journal later, idempotently (:func:`replay_journal`). Checkpoints never
depend on MLflow.

Every call to an ``http(s)`` server is bounded in time (:mod:`emonet_dist.tracking_http`): a short reachability
probe before a run starts, and MLflow's own per-request timeout and retries capped for every call made through
:func:`client`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import Config
from .errors import EmonetError, short
from .tracking_http import BoundedClient, is_http, probe_tracking_server, server_of
from .tracking_sender import Retry, Sender

log = logging.getLogger(__name__)

JOURNAL = "metrics.jsonl"
# MLflow 3 opens an experiment in the view its kind names; without the tag the UI guesses, and an experiment
# without traces may open in the GenAI view. These runs are model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

FLUSH_SECONDS = 30.0
"""How long a background :class:`RunLogger` may take at the end of a run to send what is still queued."""
MAX_BATCH = 1000
"""Metrics per ``log_batch`` call (MLflow's limit)."""


def tracking_uri(cfg: Config) -> str:
    """The configured URI, or an absolute sqlite file under ``output_dir`` (relative URIs would land in
    whatever directory a Ray worker or Tune trial runs in)."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    return f"sqlite:///{Path(cfg.output_dir).expanduser().resolve() / 'mlflow.db'}"


def artifact_root(cfg: Config) -> str | None:
    """Absolute artifact location for local stores; None lets a tracking server decide."""
    uri = tracking_uri(cfg)
    if uri.startswith(("sqlite:", "file:", "/")):
        return (Path(cfg.output_dir).expanduser().resolve() / "mlartifacts").as_uri()
    return None


def metric_key(*parts: str) -> str:
    """MLflow allows only ``[A-Za-z0-9_\\-. /]`` in keys; corpus names like ``ravdess:arousal`` need mapping."""
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]", "-", p) for p in parts)


def client(uri: str):
    """An MLflow client for ``uri``; for an ``http(s)`` server, every call is bounded in time
    (:func:`~emonet_dist.tracking_http.http_limits`)."""
    import mlflow

    c = mlflow.MlflowClient(tracking_uri=uri)
    return BoundedClient(c) if is_http(uri) else c


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """Experiment id, creating the experiment if needed (do this in the driver, before parallel trials:
    concurrent creation races on sqlite).

    The experiment is tagged as model training (:data:`EXPERIMENT_KIND_TAG`), also when it exists without a kind;
    a kind someone else set is left alone. An ``http(s)`` server that does not answer fails within seconds
    (:func:`probe_tracking_server`)."""
    probe_tracking_server(uri)
    c = client(uri)
    kind = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    try:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            return c.create_experiment(name, artifact_location=artifact_location, tags=kind)
        if EXPERIMENT_KIND_TAG not in exp.tags:
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    except Exception as exc:  # noqa: BLE001 - mlflow raises many types (RestException, OperationalError...)
        exp = quietly(lambda: c.get_experiment_by_name(name))
        if exp is not None:  # created concurrently by someone else
            return exp.experiment_id
        raise EmonetError(f"cannot reach the MLflow tracking store at {uri}: {short(exc, 300)}; start the server "
                          "or set tracking.uri (tracking.enabled=false runs without MLflow)") from None


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("emonet-dist", "torch", "torchaudio", "ray", "mlflow", "webdataset", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def finish_run(uri: str, run_id: str, ok: bool) -> None:
    client(uri).set_terminated(run_id, "FINISHED" if ok else "FAILED")


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Params in batches (MLflow takes at most 100 per call; values are cut at 6000 characters)."""
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    c = client(uri)
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i:i + 100])


class RunLogger:
    """Rank-0 logger: every metric to a local journal first, then to MLflow while it is reachable.

    In the foreground (the default) each MLflow call runs at once, bounded in time (:func:`client`); the first failure
    switches the logger to journal-only. With ``background=True`` (a training run's rank 0) the calls go to a
    :class:`~emonet_dist.tracking_sender.Sender` and every method returns at once; :meth:`close` waits for them,
    up to a deadline. Either way :attr:`error` says why the MLflow copy is incomplete, and the journal has
    everything (``emonet track sync`` replays it).
    """

    def __init__(self, uri: str | None, run_id: str | None, journal: str | Path, background: bool = False,
                 retry: Retry = Retry()):
        self.uri, self.run_id = uri, run_id
        self.journal = Path(journal)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self._error: str | None = None
        self._client = client(uri) if uri and run_id else None
        self._sender = Sender(f"MLflow at {server_of(uri)}", retry=retry) if self._client and background else None
        self.max_wait_s = 0.0
        """The longest any logging call kept its caller waiting (seconds)."""

    @property
    def error(self) -> str | None:
        """Why some tracking calls did not reach MLflow, or None (in the background: so far; final after
        :meth:`close`)."""
        return self._error or (self._sender.error if self._sender else None)

    @property
    def online(self) -> bool:
        return self._client is not None and self.error is None

    def _call(self, what: str, fn) -> None:
        if not self.online:
            return
        if self._sender is not None:
            self._sender.submit(what, fn)
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - any failure of the tracking store
            self._error = f"MLflow at {server_of(self.uri)} failed while logging {what}: {short(exc, 300)}"

    @contextmanager
    def _timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.max_wait_s = max(self.max_wait_s, time.perf_counter() - t0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Append ``metrics`` at ``step`` to the journal (with the timestamp MLflow gets, in ms), then send them."""
        from mlflow.entities import Metric

        with self._timed():
            now = int(time.time() * 1000)
            with open(self.journal, "a") as f:
                f.write(json.dumps({"step": step, "time": now, "metrics": metrics}) + "\n")
            ms = [Metric(k, float(v), now, step) for k, v in metrics.items()]
            self._call("metrics", lambda: self._client.log_batch(self.run_id, metrics=ms))

    def log_artifact(self, local: str | Path, artifact_path: str | None = None) -> None:
        if not self.online:
            return
        local = Path(local)
        with self._timed():
            fn = self._client.log_artifacts if local.is_dir() else self._client.log_artifact
            self._call(f"artifact {local.name}", lambda: fn(self.run_id, str(local), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        with self._timed():
            self._call(f"artifact {artifact_file}", lambda: self._client.log_text(self.run_id, text, artifact_file))

    def log_params(self, params: dict[str, Any]) -> None:
        with self._timed():
            self._call("params", lambda: log_params(self.uri, self.run_id, params))

    def set_tag(self, key: str, value: Any) -> None:
        with self._timed():
            self._call(f"tag {key}", lambda: self._client.set_tag(self.run_id, key, str(value)))

    def close(self, timeout_s: float = FLUSH_SECONDS) -> str | None:
        """Send what is still queued, waiting at most ``timeout_s`` seconds; returns :attr:`error`."""
        if self._sender is not None:
            self._sender.close(timeout_s)
        return self.error


def _point(step: int, timestamp: int, value: float) -> tuple:
    """A metric point as the store keeps it: NaN as NaN, infinities as the largest finite floats (MLflow's SQL
    stores sanitise them so), for comparing a journal with a run's history."""
    if math.isnan(value):
        return (int(step), int(timestamp), "nan")
    if math.isinf(value):
        value = math.copysign(sys.float_info.max, value)
    return (int(step), int(timestamp), float(value))


def read_journal(journal: str | Path) -> list[dict]:
    """The entries of a metric journal (``{"step", "time", "metrics"}``); a line cut short by a crash is skipped."""
    entries = []
    for n, line in enumerate(Path(journal).read_text().splitlines(), 1):
        try:
            e = json.loads(line)
            entries.append({"step": int(e["step"]), "time": int(e["time"]),
                            "metrics": {str(k): float(v) for k, v in e["metrics"].items()}})
        except (ValueError, TypeError, KeyError, AttributeError):
            if line.strip():
                log.warning("%s line %d is not a journal entry (%s); skipped", journal, n, short(line, 60))
    return entries


def replay_journal(uri: str, run_id: str, journal: str | Path) -> tuple[int, int]:
    """Log a journal's metric points into a run (after an outage): only the points the run does not hold yet, with
    the journal's own step and timestamp, so replaying twice, or after a partial send, duplicates nothing (whatever
    the store does with duplicates). Returns (journal entries, points sent)."""
    from mlflow.entities import Metric

    entries = read_journal(journal)
    c = client(uri)
    have = {k: {_point(m.step, m.timestamp, m.value) for m in c.get_metric_history(run_id, k)}
            for k in sorted({k for e in entries for k in e["metrics"]})}
    missing = []
    for e in entries:
        for k, v in e["metrics"].items():
            point = _point(e["step"], e["time"], v)
            if point not in have[k]:
                have[k].add(point)
                missing.append(Metric(k, v, e["time"], e["step"]))
    for i in range(0, len(missing), MAX_BATCH):
        c.log_batch(run_id, metrics=missing[i:i + MAX_BATCH])
    return len(entries), len(missing)


def quietly(fn):
    """``fn()``, or None if it raises: for best-effort tracking calls whose outcome is already recorded elsewhere
    (``run.json``, ``tracking_error.txt``)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - any failure of the tracking store
        return None
