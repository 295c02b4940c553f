"""``emonet submit`` and ``emonet jobs``: experiment specs (``jobs/submit/*.job.yaml``) run as Ray Jobs.

A job spec **embeds** its config instead of pointing at a file: what ``submit`` validates is exactly what the
cluster runs, the cluster never needs the submitter's checkout, and the spec is the whole record of the
experiment. ``submit`` applies the command-line overrides, validates everything (config, steps, search space,
paths), writes the resolved spec (the full config) as ``job.yaml`` into a fresh staging directory and submits
``python -m emonet_dist.cli jobs run job.yaml`` with that directory as the runtime_env ``working_dir``. Keys::

    name, description
    config:       a config tree (partial: defaults fill the rest), as in jobs/demo.yaml
    steps:        run in order by the job's driver; each has an id and one of
                  {run: synth, corpora_dir, names, samples_per_shard}  build + shard the synthetic corpora
                  {run: train, overrides}                               emonet train
                  {run: transfer, from, corpus, mode, task, overrides}  emonet transfer (from: an earlier step)
                  {run: tune, space, overrides}                         emonet tune (dotted keys -> distributions)
                  {run: prepare, recipe, raw, corpus, corpora_dir}      emonet corpus prepare + emonet shard
                  {run: baseline, corpora}                               eGeMAPS + linear SVM on prepared corpora
                  {run: report, baseline, candidates, checkpoint}       McNemar report of earlier steps' runs
    A report column is a step id, ``id@best`` / ``id@final``, or ``{label: NAME, runs: [id, ...]}`` (per-corpus
    runs merged into one column). Every step may carry ``group: NAME``: ``jobs run --group`` runs only some
    groups, and a spec with ``extends: OTHER.job.yaml`` + ``groups: [...]`` reuses OTHER's config and steps.
    ``raw`` and ``corpora_dir`` expand ``$VARS`` and ``~``.
    runtime_env:  Ray's (pip pins, env_vars such as MLFLOW_TRACKING_URI, py_modules, working_dir)
    entrypoint_num_cpus: CPUs reserved for the driver (default 0: it only orchestrates)

Every finished run prints a marker line (``MARKER`` + JSON) that ``submit --follow`` finds in the job's logs to
print the MLflow links. Paths in a submitted config must be absolute (storage every node sees) or URLs: the
job runs in a temporary directory on the cluster, and its workers may be on other machines.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import ConfigError, EmonetError, short, short_list, short_name
from .names import check_name

JOB_FILE = "job.yaml"
ENTRYPOINT = f"python -m emonet_dist.cli jobs run {JOB_FILE}"
MARKER = "@@emonet-run "
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STEP_KEYS = {"synth": {"corpora_dir", "names", "samples_per_shard"}, "train": {"overrides"},
             "prepare": {"recipe", "raw", "corpus", "corpora_dir", "samples_per_shard"}, "baseline": {"corpora"},
             "transfer": {"from", "corpus", "mode", "task", "overrides"}, "tune": {"space", "overrides"},
             "report": {"baseline", "candidates", "checkpoint"}}
SPEC_KEYS = {"name", "description", "config", "steps", "runtime_env", "entrypoint_num_cpus", "extends", "groups",
             "profiles"}
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|pipe:)")


@dataclass(frozen=True)
class JobSpec:
    name: str
    description: str
    config: Config
    steps: tuple[dict, ...]
    runtime_env: dict
    entrypoint_num_cpus: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "config": self.config.to_dict(),
                "steps": [dict(s) for s in self.steps], "runtime_env": self.runtime_env,
                "entrypoint_num_cpus": self.entrypoint_num_cpus}


# ---------------------------------------------------------------------------------------------------------------
# the spec: everything a job could trip over later is checked here, before anything is submitted
# ---------------------------------------------------------------------------------------------------------------
def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = (), profile: str | None = None,
              groups: list[str] | tuple[str, ...] = (), runs_here: bool = False) -> JobSpec:
    """Load and validate a job spec: its ``extends`` chain, a ``profiles`` entry (named override lists, e.g. the
    paper's GPU config), the command-line overrides, and a selection of step groups. ``runs_here``: the steps
    run in this process (``emonet jobs run``), so ``$VARS`` must be set here, not just in ``runtime_env``."""
    path = Path(path)
    data = _raw_spec(path, set())
    unknown = sorted(map(str, set(data) - SPEC_KEYS))
    if unknown or "config" not in data or "steps" not in data:
        raise ConfigError(f"{path}: a job spec has the keys {', '.join(sorted(SPEC_KEYS))} (config and steps are "
                          f"required){'; unknown: ' + short_list(unknown) if unknown else ''}")
    _check_scalars(data, path)
    profiles = data.get("profiles") or {}
    if profile and profile not in profiles:
        raise ConfigError(f"{path}: no profile {short(profile)} (profiles: {short_list(profiles) or 'none'})")
    cfg = Config.from_dict(data["config"] or {}).override(*(profiles.get(profile) or []), *overrides)
    env = dict(data.get("runtime_env") or {})
    check_env(env, path)
    steps = data["steps"]
    wanted = list(groups) or list(data.get("groups") or [])
    if wanted and isinstance(steps, list):
        known = {str(st.get("group")) for st in steps if isinstance(st, dict) and st.get("group")}
        if {str(g) for g in wanted} - known:
            raise ConfigError(f"{path}: no step has group {short_list(sorted({str(g) for g in wanted} - known))} "
                              f"(groups: {short_list(sorted(known))})")
        steps = [st for st in steps if isinstance(st, dict) and str(st.get("group")) in map(str, wanted)]
    check_vars(data, steps, profile, path, runs_here)
    return JobSpec(str(data.get("name") or path.stem.removesuffix(".job")), str(data.get("description") or ""),
                   cfg, tuple(_check_steps(steps, cfg, path)), env, float(data.get("entrypoint_num_cpus") or 0.0))


# -- spec hardening (issue 14): scalar types, unset $VARS -------------------------------------------------------
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _check_scalars(data: dict, where: Path) -> None:
    """The spec's own scalars have the types ``JobSpec`` converts them to (``str()`` of a list is no name)."""
    for key in ("name", "description"):
        if not isinstance(data.get(key) or "", str):
            raise ConfigError(f"{where}: {key} must be a string, got {type(data[key]).__name__} {short(data[key])}")
    cpus = data.get("entrypoint_num_cpus") or 0
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 <= cpus < float("inf"):
        raise ConfigError(f"{where}: entrypoint_num_cpus must be a number >= 0, got {short(cpus)}")
    if not isinstance(data.get("profiles") or {}, dict):
        raise ConfigError(f"{where}: profiles must map profile names to lists of overrides")


def check_vars(data: dict, steps, profile: str | None, where: Path, runs_here: bool = False) -> None:
    """Refuse a ``$VAR`` or ``${VAR}`` that is not set, naming it and its key, when the spec loads: a step would
    otherwise fail hours into a job. Set means: in this environment, or (unless ``runs_here``) in
    ``runtime_env.env_vars``, which a submitted job's driver gets. Only the selected steps and profile count;
    ``runtime_env.env_vars`` values are left to Ray, which expands them on the cluster."""
    env = data.get("runtime_env") if isinstance(data.get("runtime_env"), dict) else {}
    env_vars = env.get("env_vars") if isinstance(env.get("env_vars"), dict) else {}
    defined = set(os.environ) | (set() if runs_here else set(env_vars))
    parts = {k: v for k, v in data.items() if k not in ("steps", "profiles", "runtime_env")}
    parts["runtime_env"] = {k: v for k, v in env.items() if k != "env_vars"}
    parts["profiles"] = {profile: (data.get("profiles") or {}).get(profile)} if profile else {}
    parts["steps"] = {f"{i}({short_name(st.get('id'))})" if isinstance(st, dict) and st.get("id") else str(i): st
                      for i, st in enumerate(steps if isinstance(steps, list) else [])}
    for key, text in _strings(parts, ""):
        for m in _VAR.finditer(text):
            if (name := m.group(1) or m.group(2)) not in defined:
                how = "" if runs_here else " (or set it in runtime_env.env_vars)"
                raise ConfigError(f"{where}: {key} uses ${name}, which is not set; export {name}{how} before "
                                  f"loading the spec")


def _strings(node, key: str):
    """``(dotted key, string)`` for every string in a YAML value (keys included: they are text too)."""
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            sub = f"{key}.{short_name(k)}" if key else short_name(k)
            yield from _strings(k, sub)
            yield from _strings(v, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}.{i}")
# -- end of spec hardening ---------------------------------------------------------------------------------------


def _raw_spec(path: Path, seen: set) -> dict:
    """A spec's YAML with its ``extends`` parent merged in: the child's keys win, ``config`` merges key by key."""
    from . import typed

    if path.resolve() in seen:
        raise ConfigError(f"{short(str(path), 200)}: 'extends' loops back to itself")
    seen.add(path.resolve())
    try:
        found = path.is_file()
    except OSError:  # e.g. a name too long for the file system
        found = False
    if not found:  # the path may come from 'extends' in a file: quote a bounded prefix
        raise ConfigError(f"job spec {short(str(path), 200)} not found")
    data = typed.load_yaml_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job spec is a mapping")
    if not data.get("extends"):
        return data
    if not isinstance(data["extends"], str):
        raise ConfigError(f"{path}: extends must be the path of another spec, got {short(data['extends'])}")
    parent = _raw_spec(path.parent / data["extends"], seen)
    merged = {k: v for k, v in parent.items() if k not in ("name", "description", "groups")}
    merged.update({k: v for k, v in data.items() if k != "extends"})
    merged["config"] = _deep_merge(parent.get("config") or {}, data.get("config") or {})
    return merged


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_env(env: dict, where: Path) -> None:
    from .train.launch import RAY_ENV

    env_vars = env.get("env_vars") or {}
    bad = sorted(set(env_vars) & set(RAY_ENV))
    if bad:  # the driver's ray.init sets these; Ray refuses a job env and a driver env that set the same key
        raise ConfigError(f"{where}: runtime_env.env_vars must not set {', '.join(bad)} (emonet sets them itself)")
    if any(not isinstance(v, str) for v in env_vars.values()):
        raise ConfigError(f"{where}: runtime_env.env_vars values must be strings (quote numbers)")


def _check_steps(raw, cfg: Config, where: Path) -> list[dict]:
    from .train.transfer import MODES
    from .tuning import parse_space

    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: steps must be a non-empty list")
    steps, runs = [], []  # runs: ids of the earlier steps that produce a training run
    for i, step in enumerate(raw):
        kind = step.get("run") if isinstance(step, dict) else None
        if kind not in STEP_KEYS:
            raise ConfigError(f"{where}: steps[{i}] needs run: one of {', '.join(STEP_KEYS)}")
        if not isinstance(step.get("id") or "", str) or len(step.get("id") or "") > 60:  # ids are quoted in errors
            raise ConfigError(f"{where}: steps[{i}]: id must be a string of at most 60 characters, got "
                              f"{short(step['id'])}")
        sid = check_name(str(step.get("id") or f"{kind}{i}"), f"{where}: step id")  # ids name runs
        extra = sorted(map(str, set(step) - STEP_KEYS[kind] - {"run", "id", "group"}))
        if extra or sid in {s["id"] for s in steps}:
            what = f"unknown key(s) {short_list(extra)}" if extra else "duplicate id"
            raise ConfigError(f"{where}: step {sid}: {what}"
                              f" (a {kind} step takes {', '.join(sorted(STEP_KEYS[kind]))})")
        base = cfg.override(*(step.get("overrides") or []))  # a bad override fails here, naming the key
        if kind == "transfer":
            step = {**step, "from": step.get("from") or (runs[-1] if runs else None)}
            if step["from"] not in runs or step.get("mode") not in MODES or not step.get("corpus"):
                raise ConfigError(f"{where}: step {sid}: transfer needs corpus, mode (one of {', '.join(MODES)}) and "
                                  f"from: an earlier train/transfer step ({short_list(runs, 20) or 'none yet'})")
        elif kind == "tune":
            parse_space(step.get("space") or {}, base)
        elif kind == "report":
            cols = [step.get("baseline"), *(step.get("candidates") or [None])]
            missing = [r for c in cols for r in _column_steps(c) if r not in runs] + \
                [c for c in cols if not _column_steps(c)]
            if missing:
                raise ConfigError(f"{where}: step {sid}: report needs baseline and candidates from earlier "
                                  f"train/transfer/baseline steps ({short_list(runs, 20) or 'none yet'}); not found: "
                                  f"{short_list(map(str, missing))}")
        elif kind == "prepare":
            from .corpora.recipes import get_recipe

            if not isinstance(step.get("recipe"), str) or len(step["recipe"]) > 60 or not step.get("raw"):
                raise ConfigError(f"{where}: step {sid}: prepare needs recipe and raw (the corpus in its official "
                                  f"layout)")
            get_recipe(step["recipe"])  # an unknown recipe fails here, listing the known ones
            if _URL.match(base.data.shards):
                raise ConfigError(f"{where}: step {sid}: prepare writes shards into data.shards, which must be a "
                                  f"directory")
        elif kind == "baseline" and not step.get("corpora"):
            raise ConfigError(f"{where}: step {sid}: baseline needs corpora (names of corpora prepared earlier)")
        elif kind == "synth" and _URL.match(base.data.shards):
            raise ConfigError(f"{where}: step {sid}: synth writes shards into data.shards, which must be a directory")
        runs += [sid] if kind in ("train", "transfer", "baseline") else []
        steps.append({**step, "id": sid})
    return steps


def _column_steps(col) -> list[str]:
    """The step ids of a report column: ``id``, ``id@best|final`` or ``{label, runs: [...]}``."""
    if isinstance(col, dict):
        return [str(r).rsplit("@", 1)[0] for r in col.get("runs") or []]
    return [str(col).rsplit("@", 1)[0]] if col else []


def check_shared_paths(cfg: Config) -> None:
    """Refuse relative paths in a submitted config: they would resolve inside the job's temporary directory."""
    paths = {"output_dir": cfg.output_dir, "data.shards": cfg.data.shards, "ray.storage_path": cfg.ray.storage_path,
             "train.init_from": cfg.train.init_from}
    rel = [k for k, v in paths.items() if v and not _URL.match(v) and not v.startswith("/") and "{path}" not in v]
    if rel:
        raise ConfigError(f"{', '.join(rel)} must be absolute paths on storage every node sees, or URLs: a job runs "
                          f"in a temporary directory on the cluster (override them, e.g. {rel[0]}=/mnt/shared/...)")


# ---------------------------------------------------------------------------------------------------------------
# the client side: submit, follow, list, logs, stop
# ---------------------------------------------------------------------------------------------------------------
def job_client(address: str | None):
    """A ``JobSubmissionClient`` for ``address`` (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS if it is an http
    URL, then 127.0.0.1:8265). With token authentication the token comes from $RAY_AUTH_TOKEN or the file
    $RAY_AUTH_TOKEN_PATH (sent explicitly, so RAY_AUTH_MODE need not be set), else from Ray's own lookup
    (RAY_AUTH_MODE=token and ~/.ray/auth_token)."""
    from ray.job_submission import JobSubmissionClient

    env_addr = os.environ.get("RAY_ADDRESS", "")
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or \
        (env_addr if env_addr.startswith("http") else DEFAULT_ADDRESS)
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


def submit(spec_path: str, address: str | None, overrides: list[str], env: list[str], follow: bool,
           timeout: float, no_pip: bool = False, profile: str | None = None, groups: list[str] = ()) -> int:
    spec = load_spec(spec_path, overrides, profile, groups)
    check_shared_paths(spec.config)
    renv, base = dict(spec.runtime_env), Path(spec_path).resolve().parent
    if no_pip:  # the cluster's Python already has the pinned packages (in a venv, Ray would clone all of it)
        renv.pop("pip", None)
    if any("=" not in e for e in env):
        raise EmonetError("--env takes NAME=VALUE")
    renv["env_vars"] = {**(renv.get("env_vars") or {}), **dict(e.split("=", 1) for e in env)}
    check_env(renv, Path(spec_path))
    if renv.get("py_modules"):  # local module paths are relative to the spec file
        renv["py_modules"] = [m if _URL.match(m) else str((base / m).resolve()) for m in renv["py_modules"]]
    if renv.get("working_dir") and _URL.match(renv["working_dir"]):
        raise EmonetError("runtime_env.working_dir must be a local directory (emonet submit adds job.yaml to it); "
                          "ship remote code with py_modules or pip")
    client = job_client(address)
    stage = Path(tempfile.mkdtemp(prefix="emonet-job-"))
    try:
        if renv.get("working_dir"):  # the spec's own working directory, with the resolved spec added
            shutil.copytree((base / renv["working_dir"]).resolve(), stage, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".git", "__pycache__", *renv.get("excludes", [])))
        import yaml

        from . import __version__

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
    print(f"submitted job {job_id} ({spec.name}: {', '.join(s['id'] for s in spec.steps)})", flush=True)
    if not follow:
        print(f"follow it with: emonet jobs logs {job_id} --follow")
        return 0
    return follow_job(client, job_id, timeout)


def follow_job(client, job_id: str, timeout: float) -> int:
    """Stream the logs until the job ends; print its MLflow runs; 0 when it SUCCEEDED, 1 otherwise."""
    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(asyncio.wait_for(tail(), timeout))
    except TimeoutError:
        raise EmonetError(f"stopped following job {job_id} after {timeout:.0f} s; it is still "
                          f"{client.get_job_status(job_id)}: `emonet jobs logs {job_id} --follow`") from None
    status = wait_terminal(client, job_id, 60)
    logs = client.get_job_logs(job_id)
    print("\n".join(mlflow_links(logs)))
    if status != "SUCCEEDED":
        print(f"job {job_id} {status}: {failure(logs, client.get_job_info(job_id).message)}", file=sys.stderr)
        return 1
    print(f"job {job_id} SUCCEEDED")
    return 0


def wait_terminal(client, job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (status := str(client.get_job_status(job_id))) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


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


def cmd_submit(args) -> int:
    return submit(args.spec, args.address, list(args.overrides), args.env, args.follow, args.timeout, args.no_pip,
                  args.profile, args.group)


def cmd_jobs_list(args) -> int:
    jobs = sorted(job_client(args.address).list_jobs(), key=lambda j: j.start_time or 0)
    print(f"{'job id':44s} {'status':10s} {'started':19s} {'took':>7s}  name")
    for j in jobs:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        took = f"{(j.end_time - j.start_time) / 1000:.0f}s" if j.end_time and j.start_time else "-"
        name = (j.metadata or {}).get("emonet_job") or (j.entrypoint or "")[:40]
        print(f"{j.submission_id or j.job_id:44s} {str(j.status):10s} {start:19s} {took:>7s}  {name}")
    return 0


def cmd_jobs_logs(args) -> int:
    client = job_client(args.address)
    if args.follow:
        return follow_job(client, args.job_id, args.timeout)
    try:
        logs, info = client.get_job_logs(args.job_id), client.get_job_info(args.job_id)
    except RuntimeError as exc:
        raise EmonetError(f"no job {args.job_id}: {' '.join(str(exc).split())[:200]}") from None
    print(logs, end="")
    if str(info.status) in ("FAILED", "STOPPED"):  # the traceback is above; this line says why it ended
        print(f"job {args.job_id} {info.status}: {failure(logs, info.message)}", file=sys.stderr)
    return 0


def cmd_jobs_stop(args) -> int:
    client = job_client(args.address)
    stopped = client.stop_job(args.job_id)
    status = wait_terminal(client, args.job_id, args.timeout) if args.wait else str(client.get_job_status(args.job_id))
    print(f"job {args.job_id}: {'stop requested' if stopped else 'already finished'}; status {status}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# the cluster side: a spec's steps, run by the job's driver (also on a laptop, without a cluster)
# ---------------------------------------------------------------------------------------------------------------
def run_spec(spec: JobSpec) -> list[dict]:
    """Run the steps in order in this process; returns one record per run (also printed as marker lines)."""
    from . import tracking
    from .train.launch import run_training
    from .train.transfer import transfer_config
    from .tuning import print_table, run_sweep

    cfg = spec.config
    if not cfg.tracking.uri and os.environ.get("MLFLOW_TRACKING_URI"):  # the runtime_env names the server
        cfg = cfg.override(f"tracking.uri={json.dumps(os.environ['MLFLOW_TRACKING_URI'])}")
    if not cfg.ray.address and os.environ.get("RAY_ADDRESS"):  # inside a Ray job: join its cluster
        cfg = cfg.override("ray.address=auto")
    tags = {"emonet_job": spec.name}
    try:  # the job's metadata reaches the driver in Ray's job-config variable: tag runs with the submission id
        meta = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("metadata") or {}
        tags.update({"ray_submission_id": meta["emonet_submission_id"]} if "emonet_submission_id" in meta else {})
    except ValueError:
        pass
    runs, records = {}, []

    def record(step: dict, run: str, run_id: str | None, uri: str | None, run_dir) -> None:
        rec = {"step": step["id"], "run": run, "dir": str(run_dir), "mlflow_run_id": run_id, "tracking_uri": uri}
        try:
            rec["experiment_id"] = tracking.client(uri).get_run(run_id).info.experiment_id if run_id and uri else None
        except Exception:  # noqa: BLE001 - the link is a convenience; the run id is printed anyway
            pass
        records.append(rec)
        print(MARKER + json.dumps(rec), flush=True)

    for step in spec.steps:
        kind, over, sid = step["run"], list(step.get("overrides") or []), step["id"]
        print(f"[job {spec.name}] step {sid}: {kind}", flush=True)
        if kind == "synth":
            _synth(cfg, step)
        elif kind == "prepare":
            _prepare(cfg, step)
        elif kind == "baseline":
            res = runs[sid] = _baseline(cfg, step)
            record(step, res.name, res.mlflow_run_id, res.tracking_uri, res.dir)
        elif kind in ("train", "transfer"):
            src = runs.get(step.get("from"))
            run_cfg = cfg.override(*over) if kind == "train" else \
                transfer_config(str(src.dir), step["corpus"], step["mode"], over, task=step.get("task") or "emotion")
            res = runs[sid] = run_training(run_cfg, extra_tags={**tags, "job_step": sid,
                                                                **({"pretrained_from": src.name} if src else {})})
            record(step, res.name, res.mlflow_run_id, res.tracking_uri, res.dir)
        elif kind == "tune":
            summary = run_sweep(cfg.override(*over), step["space"])
            print_table(summary)
            record(step, Path(summary["sweep_dir"]).name, summary.get("parent_run_id"), summary.get("tracking_uri"),
                   summary["sweep_dir"])
        elif kind == "report":
            record(step, *_report(cfg, step, runs))
    return records


def _synth(cfg: Config, step: dict) -> None:
    from .config import PrepareConfig, ShardConfig
    from .corpora.synth import CORPORA, build_synthetic
    from .data.shards import shard_corpora

    names = list(step.get("names") or CORPORA)
    out = Path(step.get("corpora_dir") or Path(cfg.data.shards).parent / "corpora")
    if not all((out / n / "manifest.jsonl").is_file() for n in names):  # built once; later jobs reuse them
        build_synthetic(out, seed=cfg.seed, cfg=PrepareConfig(jobs=cfg.prepare.jobs), names=names)
    shard_corpora([out / n for n in names], cfg.data.shards,
                  ShardConfig(samples_per_shard=int(step.get("samples_per_shard") or 64)))


def _corpora_dir(cfg: Config, step: dict) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(str(step.get("corpora_dir") or "")))) if \
        step.get("corpora_dir") else Path(cfg.data.shards).parent / "corpora"


def _prepare(cfg: Config, step: dict) -> None:
    """``emonet corpus prepare`` + ``emonet shard`` for one corpus; a corpus prepared from the same raw directory
    with the same settings is reused (and finished shards are never rewritten)."""
    from dataclasses import asdict

    from .config import ShardConfig
    from .corpora.prepare import prepare_corpus
    from .corpora.recipes import get_recipe
    from .data.shards import shard_corpora

    raw_text = os.path.expandvars(str(step["raw"]))
    if "$" in raw_text:
        raise EmonetError(f"step {step['id']}: raw '{step['raw']}' names an unset environment variable; set it "
                          f"(e.g. EMONET_REALDATA=/path/to/corpora) or override the step")
    raw = Path(os.path.expanduser(raw_text)).resolve()
    name = str(step.get("corpus") or get_recipe(step["recipe"]).NAME)
    out = _corpora_dir(cfg, step) / name
    report = out / "report.json"
    old = json.loads(report.read_text()) if report.is_file() else {}
    if old.get("raw") == str(raw) and old.get("recipe") == step["recipe"] and \
            {k: v for k, v in old.get("prepare", {}).items() if k != "allow_speaker_overlap"} == \
            {k: v for k, v in asdict(cfg.prepare).items() if k != "allow_speaker_overlap"}:
        print(f"[prepare {name}] reusing {out} (same raw directory and settings)", flush=True)
    else:
        prepare_corpus(step["recipe"], raw, out, cfg.prepare, name=name)
    shard_corpora([out], cfg.data.shards, ShardConfig(samples_per_shard=int(step.get("samples_per_shard") or 64)))


def _baseline(cfg: Config, step: dict):
    from .baselines.egemaps import EgemapsConfig, run_egemaps_baseline

    dirs = [_corpora_dir(cfg, step) / str(c) for c in step["corpora"]]
    missing = [str(d) for d in dirs if not (d / "manifest.jsonl").is_file()]
    if missing:
        raise EmonetError(f"step {step['id']}: no prepared corpus at {', '.join(missing)} (add a prepare step first)")
    return run_egemaps_baseline(dirs, cfg, EgemapsConfig(), run_name=f"{cfg.name}-{step['id']}-"
                                f"{time.strftime('%Y%m%d-%H%M%S')}")


def _column(col, runs: dict) -> tuple[str, str]:
    """A report column of a spec as (reference for build_report, label)."""
    def ref(item: str) -> str:
        sid, _, ck = str(item).partition("@")
        return f"{runs[sid].dir}@{ck}" if ck else str(runs[sid].dir)

    if isinstance(col, dict):
        items = list(col["runs"])
        return ",".join(ref(i) for i in items), str(col.get("label") or "+".join(items))
    return ref(col), str(col)


def _report(cfg: Config, step: dict, runs: dict) -> tuple:
    from .evaluate.report import build_report, log_report_run
    from .evaluate.report_format import format_table

    base = _column(step["baseline"], runs)
    cands = [_column(c, runs) for c in step["candidates"]]
    out = Path(cfg.output_dir) / "reports" / f"{step['id']}-{time.strftime('%Y%m%d-%H%M%S')}"
    report = build_report(base[0], [c[0] for c in cands], out, checkpoint=step.get("checkpoint", "best"),
                          labels=dict([base, *cands]))
    print(format_table(report), flush=True)
    print(f"report: {out / 'report.md'} (html, json, csv, uar_delta.png)", flush=True)
    uri = next((r.tracking_uri for r in runs.values() if r.tracking_uri), None)
    return out.name, log_report_run(report, uri, cfg.tracking.experiment, out) if uri else None, uri, out


def cmd_jobs_run(args) -> int:
    t0 = time.time()
    spec = load_spec(args.spec, list(args.overrides), args.profile, args.group, runs_here=True)
    print(f"[job {spec.name}] finished: {len(run_spec(spec))} run(s) in {time.time() - t0:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------------------------
def _selection(p) -> None:
    p.add_argument("--profile", help="apply one of the spec's profiles (named overrides, e.g. paper)")
    p.add_argument("--group", action="append", default=[], metavar="GROUP",
                   help="run only the steps of this group (repeat for more)")


def add_parsers(sub) -> None:
    """Register ``emonet submit`` and ``emonet jobs list|logs|stop|run`` on the CLI's subparsers."""
    from .cli_parser import Parser

    def parser(group, name: str, help: str, func, *, job_id=False, address=True, timeout=None):
        p = group.add_parser(name, help=help)
        if job_id:
            p.add_argument("job_id", metavar="JOB_ID")
        if address:
            p.add_argument("--address", help="Ray job API (default: $RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265)")
        if timeout:
            p.add_argument("--timeout", type=float, default=timeout, help=f"seconds (default {timeout:.0f})")
        p.set_defaults(func=func)
        return p

    s = parser(sub, "submit", "submit a job spec (jobs/submit/*.job.yaml) to a Ray cluster", cmd_submit,
               timeout=86400.0)
    s.add_argument("spec", metavar="JOB.yaml")
    _selection(s)
    s.add_argument("--follow", action="store_true", help="stream the logs, print the MLflow runs, exit with the status")
    s.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="add a runtime_env variable")
    s.add_argument("--no-pip", action="store_true",
                   help="drop the spec's pip pins (the cluster's Python has them, e.g. cluster/local's venv)")
    s.epilog = ("KEY=VALUE overrides of the embedded config may follow, "
                "e.g. 'data.shards=pipe:aws s3 cp s3://bucket/shards/{path} -'.")

    jobs = sub.add_parser("jobs", help="Ray jobs: list, logs, stop; `run` executes a spec here")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, parser_class=Parser)
    parser(jsub, "list", "every job on the cluster, oldest first", cmd_jobs_list)
    logs = parser(jsub, "logs", "a job's logs (and its error, if it failed)", cmd_jobs_logs, job_id=True,
                  timeout=86400.0)
    logs.add_argument("--follow", action="store_true", help="stream until the job ends; exit with its status")
    stop = parser(jsub, "stop", "stop a running job", cmd_jobs_stop, job_id=True, timeout=120.0)
    stop.add_argument("--wait", action="store_true", help="wait until it has stopped")
    run = parser(jsub, "run", "run a job spec's steps in this process (what a submitted job executes)",
                 cmd_jobs_run, address=False)
    run.add_argument("spec", metavar="JOB.yaml")
    _selection(run)
    run.epilog = "KEY=VALUE overrides of the embedded config may follow."
