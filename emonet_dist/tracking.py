"""MLflow: experiments, runs, params, metrics and artifacts — and surviving a tracking server that goes away.

The driver creates the experiment and the run (params = the flattened config, the YAML as an artifact, tags
with the git SHA, package versions and world size). Rank 0 of the training workers then logs into that run
through a :class:`RunLogger`, which also appends every metric to a local JSON-lines journal. If MLflow
becomes unreachable, logging switches to journal-only, training goes on, and the error is reported at the
end (``RunLogger.error``); ``emonet track sync RUN_DIR`` replays the journal later. Checkpoints never depend on
MLflow.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from .config import Config
from .errors import EmonetError

JOURNAL = "metrics.jsonl"


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
    concurrent creation races on sqlite)."""
    c = client(uri)
    try:
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return c.create_experiment(name, artifact_location=artifact_location)
    except Exception as exc:  # noqa: BLE001 - mlflow raises many types (RestException, OperationalError...)
        exp = _quiet(lambda: c.get_experiment_by_name(name))
        if exp is not None:  # created concurrently by someone else
            return exp.experiment_id
        raise EmonetError(f"cannot reach the MLflow tracking store at {uri}: {_short(exc)}; start the server or "
                          "set tracking.uri (tracking.enabled=false runs without MLflow)") from None


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


def start_run(cfg: Config, run_name: str, extra_tags: dict[str, str] | None = None,
              parent_run_id: str | None = None) -> str:
    """Create a run with the config as params and tags; returns its id."""
    from mlflow.entities import Param

    uri = tracking_uri(cfg)
    exp_id = ensure_experiment(uri, cfg.tracking.experiment, artifact_root(cfg))
    tags = {"mlflow.runName": run_name, "git_sha": git_sha(), "world_size": str(cfg.ray.num_workers),
            **{f"version.{k}": v for k, v in package_versions().items()}, **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    c = client(uri)
    run = c.create_run(exp_id, run_name=run_name, tags=tags)
    params = [Param(k, str(v)[:6000]) for k, v in cfg.flat().items()]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run.info.run_id, params=params[i:i + 100])
    c.log_text(run.info.run_id, cfg.to_yaml(), "config.yaml")
    return run.info.run_id


def finish_run(uri: str, run_id: str, ok: bool) -> None:
    client(uri).set_terminated(run_id, "FINISHED" if ok else "FAILED")


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
            self.error = f"MLflow at {self.uri} failed while logging {what}: {_short(exc)}"

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


def _quiet(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return None


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
