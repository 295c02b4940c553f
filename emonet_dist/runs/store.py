"""A run on disk: its directory under ``output_dir``, its config, and ``run.json``.

A run directory (``<output_dir>/<run name>/``) holds ``config.yaml`` and ``config.json`` (the config the run used),
``run.json`` (name, dir, MLflow run id, tracking URI, status, final metrics; see :func:`write_run_json`) and
whatever its kind of run writes next to them (``metrics.jsonl``, ``partitions.json``, ``predictions/``...). Run
names are identifiers (:func:`emonet_dist.names.check_name`), and a run directory always resolves inside its
``output_dir``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from .. import atomic
from ..config import Config
from ..errors import EmonetError, short
from ..names import MAX_LEN, check_name, inside

RUN_JSON = "run.json"
STATUSES = ("RUNNING", "FINISHED", "FAILED")
_MLFLOW_RUN_ID = re.compile(r"[0-9a-f]{32}")


atomic_write_text = atomic.write_text


def new_run_name(cfg: Config) -> str:
    """Unique per launch: reusing a Ray Train run name would silently resume the old run."""
    suffix = f"-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return cfg.name[: MAX_LEN - len(suffix)] + suffix


def run_dir_of(output_dir: str | Path, name: str) -> Path:
    """``<output_dir>/<name>``, resolved; the name must be an identifier and the directory inside ``output_dir``."""
    return inside(output_dir, check_name(name, "run name"))


def create_run_dir(output_dir: str | Path, name: str) -> Path:
    """A new, empty run directory; an existing one is refused (a second run must not write into the first)."""
    run_dir = run_dir_of(output_dir, name)
    if run_dir.exists():
        raise EmonetError(f"run directory {run_dir} already exists; choose another run name")
    run_dir.mkdir(parents=True)
    return run_dir


def write_config(run_dir: Path, cfg: Config) -> None:
    """``config.yaml`` for people, ``config.json`` for code (:func:`read_config`)."""
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    atomic_write_text(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))


def read_config(run_dir: Path) -> Config:
    """The config a run used (``config.json``), checked like any config."""
    try:
        data = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise EmonetError(f"cannot read the config of run {run_dir}: {short(exc, 200)}") from None
    return Config.from_dict(data)


def write_run_json(run_dir: Path, info: dict) -> None:
    """``run.json``, atomically. ``info`` must hold ``name``, ``dir`` and a ``status`` of :data:`STATUSES`."""
    if info.get("status") not in STATUSES or not info.get("name"):
        raise EmonetError(f"run.json needs a name and a status of {', '.join(STATUSES)}, got "
                          f"{short(info.get('status'))}")
    atomic_write_text(run_dir / RUN_JSON, json.dumps(info, indent=1, default=str))


def read_run_json(run_dir: Path) -> dict:
    try:
        info = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise EmonetError(f"cannot read {run_dir / RUN_JSON}: {short(exc, 200)}") from None
    if not isinstance(info, dict):
        raise EmonetError(f"{run_dir / RUN_JSON} is not a JSON object")
    return info


def local_run(ref: str | Path, output_dir: str | Path = "runs") -> Path | None:
    """The run directory ``ref`` names as a path or as a run name under ``output_dir``, or None."""
    for cand in (Path(ref), Path(output_dir) / ref):
        if (cand / RUN_JSON).is_file():
            return cand.resolve()
    return None


def find_run(ref: str | Path, output_dir: str | Path = "runs") -> Path:
    """A run directory from its path, its name under ``output_dir``, or its MLflow run id (a run under
    ``output_dir`` whose ``run.json`` names that id)."""
    ref = str(ref)
    found = local_run(ref, output_dir)
    if found is not None:
        return found
    if _MLFLOW_RUN_ID.fullmatch(ref):
        for path in sorted(Path(output_dir).glob(f"*/{RUN_JSON}")):
            try:
                if json.loads(path.read_text()).get("mlflow_run_id") == ref:
                    return path.parent.resolve()
            except (OSError, ValueError, AttributeError):
                continue  # a broken run.json is not the run asked for
    raise EmonetError(f"no run {short(ref)} (looked for {short(ref)}/{RUN_JSON}, {short(str(output_dir))}/"
                      f"{short(ref)}/{RUN_JSON} and MLflow run ids under output_dir); pass a run directory, a run "
                      "name under output_dir or an MLflow run id")


def absolute_paths(cfg: Config) -> Config:
    """Local relative paths resolved against the driver's working directory: Ray workers run elsewhere."""

    def fix(path: str) -> str:
        if not path or re.match(r"^([a-z][a-z0-9+.-]*://|pipe:)", path) or "{path}" in path:
            return path
        return str(Path(path).expanduser().resolve())

    values = {"output_dir": fix(cfg.output_dir), "data.shards": fix(cfg.data.shards)}
    if cfg.train.init_from:
        values["train.init_from"] = fix(cfg.train.init_from)
    if cfg.ray.storage_path:
        values["ray.storage_path"] = fix(cfg.ray.storage_path)
    return cfg.replace(values)
