"""The Ray job client: submit a job spec to a cluster, follow its logs, list, read and stop jobs.

``submit`` loads the spec with :func:`emonet_dist.pipeline.spec.load_spec` (the command-line overrides, profile
and groups applied; everything a job could trip over later checked), refuses paths a cluster's nodes cannot all
see, writes the resolved spec (the full config, the steps with their overrides) as ``job.yaml`` into a fresh
staging directory and submits ``python -m emonet_dist.cli jobs run job.yaml`` with that directory as the
runtime_env ``working_dir``: the job's driver runs the steps with the same runner as ``emonet jobs run``.

The driver prints a marker line (:data:`emonet_dist.pipeline.runner.MARKER` + JSON) per finished run;
:func:`mlflow_links` finds them in the job's logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import EmonetError, short
from .pipeline.checks import URL, check_env, check_shared_paths
from .pipeline.runner import MARKER
from .pipeline.spec import JobSpec, load_spec

log = logging.getLogger(__name__)

JOB_FILE = "job.yaml"
ENTRYPOINT = f"python -m emonet_dist.cli jobs run {JOB_FILE}"
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def job_client(address: str | None):
    """A ``JobSubmissionClient`` for ``address`` (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS if it is an http
    URL, then 127.0.0.1:8265). With token authentication the token comes from $RAY_AUTH_TOKEN or the file
    $RAY_AUTH_TOKEN_PATH (sent explicitly, so RAY_AUTH_MODE need not be set), else from Ray's own lookup
    (RAY_AUTH_MODE=token and ~/.ray/auth_token)."""
    from ray.job_submission import JobSubmissionClient

    address = api_address(address)
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token and os.environ.get("RAY_AUTH_TOKEN_PATH"):
        try:
            token = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser().read_text().strip()
        except OSError as exc:
            raise EmonetError(f"cannot read RAY_AUTH_TOKEN_PATH: {exc}") from None
    try:
        return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"} if token else None)
    except Exception as exc:  # noqa: BLE001 - connection and authentication errors come in several types
        msg = " ".join(str(exc).split())[:300]
        hint = ("the cluster uses token authentication: set RAY_AUTH_TOKEN_PATH to its token file (cluster/local: "
                "source STATE/env.sh), or RAY_AUTH_TOKEN" if "auth" in msg.lower() else
                "is the cluster up? (cluster/local/start.sh prints the address; or pass --address)")
        raise EmonetError(f"cannot use the Ray job API at {address}: {msg}; {hint}") from None


def api_address(address: str | None) -> str:
    """The job API's address: ``address``, else $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS if it is an http URL, then
    127.0.0.1:8265."""
    env_addr = os.environ.get("RAY_ADDRESS", "")
    return address or os.environ.get("RAY_API_SERVER_ADDRESS") or \
        (env_addr if env_addr.startswith("http") else DEFAULT_ADDRESS)


def runs_this_python(address: str, pip) -> bool:
    """Whether the job API at ``address`` is a ``cluster/local`` cluster, whose ``env.sh`` exports its address as
    ``EMONET_LOCAL_CLUSTER``: its jobs run this machine's Python, which has this package, so the spec's pip pin is
    left out (for a pip environment Ray would clone the whole venv, torch included, before the job starts). A pin of
    another version than this one is refused: the job would not run the version the spec names."""
    from . import __version__

    if not pip or os.environ.get("EMONET_LOCAL_CLUSTER", "").rstrip("/") != address.rstrip("/"):
        return False
    packages = pip.get("packages") or [] if isinstance(pip, dict) else pip if isinstance(pip, list) else []
    pins = [p for p in packages if isinstance(p, str) and p.replace(" ", "").startswith("emonet-dist==")]
    if any(p.replace(" ", "") != f"emonet-dist=={__version__}" for p in pins):
        raise EmonetError(f"the spec pins {short(pins[0])}, but the local cluster at {address[:100]} runs this "
                          f"machine's emonet-dist {__version__}")
    log.info("[submit] %s is a local cluster (cluster/local) running this machine's Python: the spec's pip "
             "packages are not installed (as with --no-pip)", address[:100])
    return True


def tracking_server_env(given: dict[str, str]) -> dict[str, str]:
    """The MLflow server of the submitting shell, when it names one: ``MLFLOW_TRACKING_URI`` from the environment
    (``cluster/local``'s ``env.sh`` exports its server's) wins over the spec's default, and ``--env
    MLFLOW_TRACKING_URI=...`` wins over both. A local store in the shell (``sqlite:``, a path) is not forwarded: the
    job's driver could not reach it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if "MLFLOW_TRACKING_URI" in given or not uri.startswith(("http://", "https://")):
        return {}
    log.info("[submit] the job logs to the MLflow server of this shell, %s (MLFLOW_TRACKING_URI; --env "
             "MLFLOW_TRACKING_URI=... chooses another)", uri[:200])
    return {"MLFLOW_TRACKING_URI": uri}


def runtime_env(spec: JobSpec, spec_path: str | Path, env: list[str], no_pip: bool) -> dict:
    """The job's runtime_env: the spec's, ``--env NAME=VALUE`` added, local py_modules made absolute."""
    renv, base = dict(spec.runtime_env), Path(spec_path).resolve().parent
    if no_pip:  # the cluster's Python already has the pinned packages (in a venv, Ray would clone all of it)
        renv.pop("pip", None)
    if any("=" not in e for e in env):
        raise EmonetError("--env takes NAME=VALUE")
    given = dict(e.split("=", 1) for e in env)
    renv["env_vars"] = {**(renv.get("env_vars") or {}), **tracking_server_env(given), **given}
    check_env(renv, Path(spec_path))
    if renv.get("py_modules"):  # local module paths are relative to the spec file
        renv["py_modules"] = [m if URL.match(m) else str((base / m).resolve()) for m in renv["py_modules"]]
    if renv.get("working_dir") and URL.match(renv["working_dir"]):
        raise EmonetError("runtime_env.working_dir must be a local directory (emonet submit adds job.yaml to it); "
                          "ship remote code with py_modules or pip")
    if renv.get("working_dir"):
        renv["working_dir"] = str((base / renv["working_dir"]).resolve())
    return renv


def submit(spec_path: str, address: str | None, overrides: list[str], env: list[str], no_pip: bool = False,
           profile: str | None = None, groups: list[str] = ()) -> tuple[str, JobSpec, object]:
    """Submit a spec; returns the job id, the spec as submitted and the job client (to follow the job)."""
    import yaml

    from . import __version__

    spec = load_spec(spec_path, overrides, profile, groups)
    check_shared_paths(spec.config)
    address = api_address(address)
    no_pip = no_pip or runs_this_python(address, spec.runtime_env.get("pip") or [])
    renv = runtime_env(spec, spec_path, env, no_pip)
    client = job_client(address)
    stage = Path(tempfile.mkdtemp(prefix="emonet-job-"))
    try:
        if renv.get("working_dir"):  # the spec's own working directory, with the resolved spec added
            shutil.copytree(renv["working_dir"], stage, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".git", "__pycache__", *renv.get("excludes", [])))
        (stage / JOB_FILE).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        renv["working_dir"] = str(stage)
        job_id = f"emonet-{re.sub(r'[^A-Za-z0-9_-]', '-', spec.name)}-{time.strftime('%Y%m%d-%H%M%S')}-" \
                 f"{secrets.token_hex(2)}"
        client.submit_job(entrypoint=ENTRYPOINT, submission_id=job_id, runtime_env=renv,
                          metadata={"emonet_job": spec.name, "emonet_version": __version__,
                                    "emonet_submission_id": job_id},
                          **({"entrypoint_num_cpus": spec.entrypoint_num_cpus} if spec.entrypoint_num_cpus else {}))
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # submit_job has uploaded the directory by now
    return job_id, spec, client


def follow_job(client, job_id: str, timeout: float, write: Callable[[str], None]) -> tuple[str, str]:
    """Hand the logs to ``write`` until the job ends; returns its final status and its whole log."""
    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(asyncio.wait_for(tail(), timeout))
    except TimeoutError:
        raise EmonetError(f"stopped following job {job_id} after {timeout:.0f} s; it is still "
                          f"{client.get_job_status(job_id)}: `emonet jobs logs {job_id} --follow`") from None
    return wait_terminal(client, job_id, 60), client.get_job_logs(job_id)


def wait_terminal(client, job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (status := str(client.get_job_status(job_id))) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


def job_rows(client) -> list[dict]:
    """Every job on the cluster, oldest first: id, status, start (local time), duration, name."""
    rows = []
    for j in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        took = f"{(j.end_time - j.start_time) / 1000:.0f}s" if j.end_time and j.start_time else "-"
        rows.append({"id": j.submission_id or j.job_id, "status": str(j.status), "started": start, "took": took,
                     "name": (j.metadata or {}).get("emonet_job") or (j.entrypoint or "")[:40]})
    return rows


def job_logs(client, job_id: str) -> tuple[str, str, str | None]:
    """A job's logs, status and (when it failed or stopped) why."""
    try:
        logs, info = client.get_job_logs(job_id), client.get_job_info(job_id)
    except RuntimeError as exc:
        raise EmonetError(f"no job {job_id}: {' '.join(str(exc).split())[:200]}") from None
    why = failure(logs, info.message) if str(info.status) in ("FAILED", "STOPPED") else None
    return logs, str(info.status), why


def failure(logs: str, message: str | None) -> str:
    """Why a job failed: the driver's one-line ``error:`` (the CLI's), else Ray's status message."""
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    return errors[-1][7:][:500] if errors else " ".join((message or "no message").split())[:500]


def run_records(logs: str) -> list[dict]:
    """The marker lines of ``jobs run`` in a job's logs, in order (wherever they sit on a line)."""
    out = []
    for line in logs.splitlines():
        if (i := line.find(MARKER)) >= 0:
            try:
                out.append(json.loads(line[i + len(MARKER):]))
            except json.JSONDecodeError:
                continue
    return out


def mlflow_links(logs: str) -> list[str]:
    """``mlflow run ID (step: run name) at URL`` per run; the URL opens the run in the MLflow UI."""
    lines = []
    for r in (r for r in run_records(logs) if r.get("mlflow_run_id")):
        uri, rid = r.get("tracking_uri") or "", r["mlflow_run_id"]
        where = f"{uri.rstrip('/')}/#/experiments/{r['experiment_id']}/runs/{rid}" \
            if uri.startswith("http") and r.get("experiment_id") else uri
        lines.append(f"mlflow run {rid} ({r['step']}: {r.get('run') or ''}) at {where}")
    return lines
