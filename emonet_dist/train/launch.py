"""``emonet train``: the driver. It creates the run (directory, MLflow run), starts or joins Ray, runs the
``TorchTrainer`` and reports the outcome. ``--resume`` reuses a stopped run's name and storage, which makes
Ray Train restore its latest checkpoint.

A run directory (``<output_dir>/<run name>/``) holds ``config.yaml``, ``run.json`` (names, ids, status,
final metrics), ``metrics.jsonl`` (the metric journal), ``predictions/``, ``best/``, ``final/`` and
``bundles/``; Ray keeps the checkpoints under ``ray.storage_path``.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path

from ..config import Config
from ..errors import EmonetError
from ..log import worker_env
from ..runs import Run, RunResult, absolute_paths, read_partitions
from ..runs.store import RUN_JSON, run_dir_of
from ..tracking import tracking_uri
from ..tracking_http import probe_tracking_server

log = logging.getLogger(__name__)

# Ray Train V2 polls workers every 2 s by default, which makes every ray.train.report block that long.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
           # Starting a worker imports torch; on a busy small machine that can take more than the default 60 s.
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}

LOCAL_RAY_ENV = {
    # A Ray instance of our own (no ray.address) runs its processes on the workers' cores: with as many workers as
    # cores, every cycle they take stalls a rank (0.21 cores of 2 measured by bench/bench_ray_cpu.py; 0.17 with
    # these, docs/benchmarks.md). The periodic work that nobody reads on a private single-node instance runs less
    # often or not at all. A value exported by the user wins; a cluster (ray.address) keeps its own settings.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # one actor that asks GCS every 5 s for nodes being drained: one node
    "RAY_task_events_report_interval_ms": "0",  # no task timeline (`ray list tasks`) for the private instance
    "RAY_metrics_report_interval_ms": "60000",  # every process's metrics to the dashboard agent: every 60 s, not 10
    "RAY_event_stats": "0",  # per-handler timing statistics for Ray's own debugging
    "REPORTER_UPDATE_INTERVAL_MS": "30000",  # the dashboard agent's scan of every process: every 30 s, not 5
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",  # log files re-listed every 0.5 s, not 0.1 s (lines still stream)
}


def storage_path(cfg: Config) -> Path:
    return Path(cfg.ray.storage_path or Path(cfg.output_dir) / "ray").expanduser().resolve()


_INIT_LOCK = threading.Lock()


def init_ray(cfg: Config) -> None:
    """Start Ray for this process (an instance of its own on loopback) or join ``ray.address``; a no-op when it
    is up. Thread-safe: a caller waits for a start that :func:`start_ray_in_background` began."""
    import ray

    with _INIT_LOCK:
        if not ray.is_initialized():
            _init_ray(cfg)


def start_ray_in_background(cfg: Config) -> threading.Event:
    """Begin :func:`init_ray` in a thread, so that Ray's processes start while this one does other work (MLflow's
    database, for example). The returned event is set when the start has ended; a start that failed is retried,
    and reported, by the next :func:`init_ray`.

    The thread stays alive for the life of the process: Ray ties its processes to their parent with Linux's
    parent-death signal, which fires when the *thread* that started them ends, so a thread that returned would
    take a local instance's GCS and raylet with it."""
    import signal
    import sys

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # What ray.init does in the main thread, and cannot do in another: SIGTERM (``ray job stop``) becomes
        # SystemExit, so that runs end as FAILED and the instance is shut down.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        logging.getLogger("ray._private.worker").addFilter(_NOT_MAIN_THREAD)  # Ray's warning is moot (added once)
    ended = threading.Event()

    def start() -> None:
        try:
            init_ray(cfg)
        except Exception as exc:  # noqa: BLE001 - the caller's own init_ray raises it
            log.debug("Ray did not start in the background: %s", exc)
        finally:
            ended.set()
        threading.Event().wait()  # never returns (see above); a daemon thread ends with the process

    threading.Thread(target=start, name="emonet-ray-init", daemon=True).start()
    return ended


class _NotMainThreadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


_NOT_MAIN_THREAD = _NotMainThreadWarning()
"""One instance, so that jobs run one after another in a process add the filter once (addFilter skips repeats)."""


def _init_ray(cfg: Config) -> None:
    import ray

    os.environ.update(RAY_ENV)
    env = {"env_vars": {**RAY_ENV, **worker_env()}}  # worker_env: the CLI's log level, for the workers
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, runtime_env=env, log_to_driver=True)
    else:
        # A Ray instance of our own serves this process only: every port on loopback (node IP 127.0.0.1; Ray binds
        # its GCS, raylet, object manager, agents and workers to the node IP) and token authentication, as
        # cluster/local/start.sh does for a shared one.
        _use_private_token()
        for key, value in LOCAL_RAY_ENV.items():  # before ray.init: the instance's processes inherit them
            os.environ.setdefault(key, value)
        # gloo must use loopback: the host name may resolve to 127.0.1.1 or to an interface that is down.
        env["env_vars"]["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", "lo")
        # Ray Train's placement-group cleaner finds its cluster by auto-detection, which fails when another Ray
        # instance runs on the machine (and the workers' resources then leak). Fixing the GCS port lets every
        # actor of this job be told the address.
        port = _free_port()
        env["env_vars"]["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        # Single-node mode, the mode Ray uses on macOS and Windows: the node IP is loopback and Ray's servers bind
        # to it. Ray 2.60 reads the switch when it is imported, so the module constant is set for this call (the
        # instance's processes get the environment variable); both are restored afterwards, so that a later
        # ray.init(address=...) to a real cluster in this process is unaffected.
        import ray._private.ray_constants as ray_constants

        cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        try:
            # address="local": a new instance even when a `ray start` cluster runs on this machine (joining one
            # is what --address / ray.address is for). The dashboard, on loopback, serves the state API that the
            # placement-group cleaner needs.
            ray.init(address="local", runtime_env=env, include_dashboard=True, dashboard_host="127.0.0.1",
                     _node_ip_address="127.0.0.1", log_to_driver=True, num_cpus=max(os.cpu_count() or 1, 1))
        finally:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
            ray_constants.ENABLE_RAY_CLUSTER = cluster_mode


_TOKEN_DIR: list[str] = []


def _use_private_token() -> None:
    """Token authentication for a local Ray instance: a fresh random token in a private directory (0700, token
    0600) for this process and the instance it starts (they inherit the environment), removed at exit. Never
    ~/.ray/auth_token, which other clusters on the machine may use."""
    if not _TOKEN_DIR:
        import atexit
        import shutil
        import tempfile

        d = tempfile.mkdtemp(prefix="emonet-ray-auth-")
        token = Path(d) / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        _TOKEN_DIR.append(d)
        atexit.register(shutil.rmtree, d, True)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(Path(_TOKEN_DIR[0]) / "auth_token"))
    # Ray reads the mode and the token once, when ray._raylet loads; reload both as Ray's own
    # _enable_token_auth() does (Ray 2.60), so a process that imported ray earlier uses the new token too.
    from ray._raylet import AuthenticationTokenLoader
    from ray._raylet import Config as RayConfig

    RayConfig.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def worker_resources(cfg: Config) -> dict[str, float]:
    """What one Ray Train worker asks for: its CPUs, and its GPUs when it uses any."""
    return {"CPU": cfg.ray.cpus_per_worker, **({"GPU": cfg.ray.gpus_per_worker} if cfg.ray.gpus_per_worker else {})}


def wait_for_resources(cfg: Config) -> None:
    """Return once the Ray cluster can hold the run's worker group; fail after ``ray.resources_timeout_s``.

    Ray Train waits without end for resources it cannot get (a run asking for GPUs on a CPU-only cluster sits
    PENDING forever). Totals must cover ``num_workers`` workers and one node must fit a whole worker; an
    autoscaling cluster may grow into the request while this waits."""
    import ray

    per_worker = worker_resources(cfg)
    need = {k: v * cfg.ray.num_workers for k, v in per_worker.items()}
    deadline = time.monotonic() + cfg.ray.resources_timeout_s
    while True:
        total = ray.cluster_resources()
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        fits = any(all(node.get(k, 0) + 1e-9 >= v for k, v in per_worker.items()) for node in nodes)
        if fits and all(total.get(k, 0) + 1e-9 >= v for k, v in need.items()):
            return
        if time.monotonic() >= deadline:
            has = ", ".join(f"{k} {total.get(k, 0):g}" for k in need)
            asked = ", ".join(f"{k} {v:g} ({cfg.ray.num_workers} workers x {per_worker[k]:g})" for k, v in need.items())
            raise EmonetError(f"the run asks for {asked}, but the Ray cluster has {has} (largest node: "
                              f"{max((n.get('CPU', 0) for n in nodes), default=0):g} CPU) after waiting "
                              f"{cfg.ray.resources_timeout_s:g} s; lower ray.num_workers / ray.cpus_per_worker / "
                              "ray.gpus_per_worker, or raise ray.resources_timeout_s for an autoscaling cluster")
        time.sleep(min(2.0, max(deadline - time.monotonic(), 0.05)))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_training(cfg: Config, resume: str | None = None, run_name: str | None = None,
                 extra_tags: dict | None = None, parent_run_id: str | None = None,
                 callbacks: list | None = None) -> RunResult:
    """Run (or resume) one training run to the end and return its outcome.

    A ``run_name`` whose directory already holds a run resumes it (Tune retries a failed trial this way).
    ``parent_run_id`` nests the MLflow run (default: ``$EMONET_PARENT_RUN_ID``, see ``runs.parent_run``).
    ``callbacks`` go to Ray Train's RunConfig (a sweep passes Tune's report callback).
    """
    if run_name and not resume:
        existing = run_dir_of(absolute_paths(cfg).output_dir, run_name)
        if (existing / RUN_JSON).is_file():
            resume = str(existing)
    import ray.train
    from ray.train.torch import TorchTrainer

    from .loop import train_loop_per_worker
    from .rendezvous import RendezvousConfig

    if resume:
        run = Run.open(resume, cfg.output_dir)
        if run.tracking_uri and run.mlflow_run_id:
            probe_tracking_server(run.tracking_uri)  # before Ray starts: a dead server fails in seconds
        run.start_log()
        cfg = run.cfg
        init_ray(cfg)
        wait_for_resources(cfg)
        log.info("[train] resuming run %s (%s)", run.name, run.dir)
    else:
        cfg = absolute_paths(cfg)
        if not cfg.data.corpora:
            raise EmonetError("data.corpora is empty: list the corpora to train on (see jobs/ for examples)")
        if cfg.tracking.enabled:
            probe_tracking_server(tracking_uri(cfg))  # before Ray or anything else starts: fails in seconds
        parts = read_partitions(cfg)  # also: a missing corpus fails here, before anything is created
        init_ray(cfg)
        wait_for_resources(cfg)  # and a worker group the cluster cannot hold
        kind = "transfer" if cfg.train.init_from else "train"
        run = Run.create(cfg, run_name, kind, extra_tags, parent_run_id, parts)
        log.info("[train] run %s in %s: %d worker(s), MLflow run %s", run.name, run.dir, cfg.ray.num_workers,
                 run.mlflow_run_id or "(tracking off)")
    init_ray(cfg)
    backend = cfg.ray.backend if cfg.ray.backend != "auto" else ("nccl" if cfg.ray.gpus_per_worker > 0 else "gloo")
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": cfg.to_dict(), "run": {"name": run.name, "dir": str(run.dir),
                                                             "mlflow_run_id": run.mlflow_run_id,
                                                             "tracking_uri": run.tracking_uri}},
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.gpus_per_worker > 0,
                                                   resources_per_worker=worker_resources(cfg)),
            torch_config=RendezvousConfig(backend=backend),  # the store on the node's Ray address only
            run_config=ray.train.RunConfig(name=run.name, storage_path=str(storage_path(cfg)),
                                           failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
                                           checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                           callbacks=callbacks or []),
        )
        result = trainer.fit()
        error = result.error
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types
        result, error = None, exc
    ok = error is None
    log.info("[train] run %s %s", run.name, "finished" if ok else "failed")
    metrics = dict(result.metrics or {}) if result is not None else {}
    checkpoint = result.checkpoint.path if result is not None and result.checkpoint else None
    # the loop's rank 0 writes tracking_error.txt when MLflow failed; finish() reads it, and an incomplete MLflow
    # copy ends the run with a warning and run.json's tracking: "incomplete", not a failure (`emonet track sync`)
    run.finish(ok, metrics=metrics, checkpoint=checkpoint, storage_path=str(storage_path(cfg)),
               error=None if ok else str(error)[:2000])
    if not ok:
        raise EmonetError(f"training run {run.name} failed: {str(error).strip().splitlines()[-1][:500]}; "
                          f"checkpoints are in {storage_path(cfg) / run.name}; continue with "
                          f"`emonet train --resume {run.dir}`")
    return run.result(metrics, checkpoint)
