"""The MLflow client: tracking URIs, experiments, metric keys, and logging that survives a server that goes away.

What a run *is* (its directory, ``run.json``, the MLflow run's start, tags, params, dataset inputs and end) is the
run layer's (:mod:`emonet_dist.runs`); this module is the thin client it and the training workers use. Rank 0 of
the training workers logs into the run through a :class:`RunLogger`, which also appends every metric to a local
JSON-lines journal. If MLflow becomes unreachable, logging switches to journal-only, training goes on, and the
error is reported at the end (``RunLogger.error``); ``emonet track sync RUN_DIR`` replays the journal later.
Checkpoints never depend on MLflow.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from .config import Config
from .errors import EmonetError, short

JOURNAL = "metrics.jsonl"
# MLflow 3 opens an experiment in the view its kind names; without the tag the UI guesses, and an experiment
# without traces may open in the GenAI view. These runs are model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_location: str | None = None) -> str:
    """Experiment id, creating the experiment if needed (do this in the driver, before parallel trials:
    concurrent creation races on sqlite).

    The experiment is tagged as model training (:data:`EXPERIMENT_KIND_TAG`), also when it exists without a kind;
    a kind someone else set is left alone."""
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
    """Rank-0 logger: metrics to a local journal always, and to MLflow while it is reachable."""

    def __init__(self, uri: str | None, run_id: str | None, journal: str | Path):
        self.uri, self.run_id = uri, run_id
        self.journal = Path(journal)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self.error: str | None = None
        self._client = client(uri) if uri and run_id else None

    @property
    def online(self) -> bool:
        return self._client is not None and self.error is None

    def _call(self, what: str, fn) -> None:
        if not self.online:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - any failure of the tracking store
            self.error = f"MLflow at {self.uri} failed while logging {what}: {short(exc, 300)}"

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with open(self.journal, "a") as f:
            f.write(json.dumps({"step": step, "time": now, "metrics": metrics}) + "\n")
        ms = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._call("metrics", lambda: self._client.log_batch(self.run_id, metrics=ms))

    def log_artifact(self, local: str | Path, artifact_path: str | None = None) -> None:
        if not self.online:
            return
        local = Path(local)
        fn = self._client.log_artifacts if local.is_dir() else self._client.log_artifact
        self._call(f"artifact {local.name}", lambda: fn(self.run_id, str(local), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call(f"artifact {artifact_file}", lambda: self._client.log_text(self.run_id, text, artifact_file))

    def log_params(self, params: dict[str, Any]) -> None:
        self._call("params", lambda: log_params(self.uri, self.run_id, params))

    def set_tag(self, key: str, value: Any) -> None:
        self._call(f"tag {key}", lambda: self._client.set_tag(self.run_id, key, str(value)))


def replay_journal(uri: str, run_id: str, journal: str | Path) -> int:
    """Log every metric of a journal into a run (after an outage); returns the number of entries."""
    from mlflow.entities import Metric

    c = client(uri)
    n = 0
    for line in Path(journal).read_text().splitlines():
        e = json.loads(line)
        c.log_batch(run_id, metrics=[Metric(k, float(v), e["time"], e["step"]) for k, v in e["metrics"].items()])
        n += 1
    return n


def quietly(fn):
    """``fn()``, or None if it raises: for best-effort tracking calls whose outcome is already recorded elsewhere
    (``run.json``, ``tracking_error.txt``)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - any failure of the tracking store
        return None
