"""Helpers shared by every test directory, in one module with a name no other package uses.

Conftest files hold fixtures only; anything a test module imports comes from here (``from emonet_testkit import
...``), so any subset of the suite collects on its own (``pytest tests/evaluate tests/cluster`` used to import
whichever ``conftest`` was loaded last).

- real audio files and the shared real corpora (with the CI switch that turns a missing corpus into a failure);
- free loopback ports, the ``emonet`` CLI in a subprocess, the tiny training configuration the end-to-end tests use;
- comparisons that cannot pass vacuously: relative tolerances and non-empty equalities;
- clean-up of the Ray sessions a SIGKILLed driver leaves behind;
- a real ``mlflow server`` on 127.0.0.1 that a test can kill and start again on the same port and store;
- a real local cluster (``cluster/local/start.sh`` on free ports), stopped by its ``stop.sh``;
- synthetic run directories and paired predictions for the evaluation tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMONET_SHARED_DATA", ROOT / ".." / "shared" / "data")).resolve()
# Set by .ci/run: in CI the real corpora are part of what is tested, so their absence fails the run.
REQUIRE_SHARED_DATA = os.environ.get("EMONET_REQUIRE_SHARED_DATA", "") not in ("", "0", "false", "no")


# [1] audio and real corpora -----------------------------------------------------------------------------------
def write_tone(path: str | Path, seconds: float = 0.5, sr: int = 16000, channels: int = 1, freq: float = 220.0,
               seed: int = 0) -> Path:
    """Write a short real audio file (tone + a little noise); the format follows the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(str(path), data.astype(np.float32), sr)
    return path


def shared_corpus(name: str) -> Path:
    """Path of a real corpus in ../shared/data.

    Absent: the test skips with a reason on a user's machine, and fails when ``EMONET_REQUIRE_SHARED_DATA=1``
    (CI sets it, so a run without the real corpora cannot pass by skipping their tests)."""
    root = SHARED_DATA / name
    if not (root / "reference_manifest.csv").is_file():
        message = (f"real corpus {name} not found at {root} (../shared/data is only present on the project machines "
                   "and in CI; set EMONET_SHARED_DATA to point elsewhere)")
        if REQUIRE_SHARED_DATA:
            pytest.fail(f"EMONET_REQUIRE_SHARED_DATA is set: {message}", pytrace=False)
        pytest.skip(message)
    return root


# [2] processes and ports --------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emonet_console_script() -> str:
    """The ``emonet`` console script of the venv under test (never another one found on PATH)."""
    exe = Path(sys.executable).with_name("emonet")
    if not exe.is_file():
        pytest.fail(f"no emonet console script next to {sys.executable}: install the package into this venv "
                    "(pip install -e .)", pytrace=False)
    return str(exe)


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's fresh shell, for end-to-end commands: this process's, without the settings
    that choose where runs go (a tracking URI or parent run exported by the caller, a Ray cluster address)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") and k not in ("EMONET_PARENT_RUN_ID", "RAY_ADDRESS")}
    return {**env, **extra}


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, check: bool = True,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """``python -m emonet_dist.cli ARGS`` in a subprocess (this interpreter); ``check`` asserts exit code 0."""
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", *args], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=cwd)
    if check:
        assert res.returncode == 0, f"emonet {' '.join(args)[:300]}: {res.stderr[-2000:]}"
    return res


# [3] the tiny end-to-end training configuration ---------------------------------------------------------------
def tiny_train_dict(shards: str | Path, out: str | Path, name: str = "tiny") -> dict:
    """The end-to-end tests' tiny run as a config tree: synth2 + synth4, widths 4/8, 2 stages of 6 steps,
    2 Ray Train workers. One definition for the training, cluster, URL and sweep tests."""
    return {"name": name, "output_dir": str(out),
            "data": {"shards": str(shards), "corpora": [{"name": "synth2"}, {"name": "synth4"}], "batch_size": 8,
                     "max_seconds": 1.5, "num_workers": 0},
            "model": {"stem_width": 4, "base_width": 8, "pooling": {"units": 16}, "head": {"hidden": 16}},
            "optim": {"stages": 2},
            "train": {"steps_per_stage": 6, "eval_every": 4, "checkpoint_every": 2, "log_every": 1},
            "ray": {"num_workers": 2}, "tracking": {"experiment": "tests"}}


def tiny_train_config(shards: str | Path, out: str | Path, *overrides: str, name: str = "tiny"):
    """:func:`tiny_train_dict` as a :class:`Config`, with user-style overrides applied on top."""
    from emonet_dist.config import Config

    return Config.from_dict(tiny_train_dict(shards, out, name)).override(*overrides)


# [4] comparisons that cannot pass vacuously ---------------------------------------------------------------------
def max_relative_error(actual, expected) -> float:
    """``max|actual - expected| / max|expected|``: the normwise relative error of a tensor or array.

    Element-wise relative errors blow up where a value happens to be near zero; rounding errors of a computation
    scale with the magnitude of the whole tensor, so that is the scale they are measured against."""
    a = np.asarray(actual.detach().double().cpu() if hasattr(actual, "detach") else actual, dtype=np.float64)
    e = np.asarray(expected.detach().double().cpu() if hasattr(expected, "detach") else expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    if a.size == 0:
        return 0.0
    scale = float(np.abs(e).max())
    diff = float(np.abs(a - e).max())
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def assert_close_relative(actual, expected, rel: float, what: str = "") -> None:
    """Fail when the normwise relative error exceeds ``rel`` (the caller says why ``rel`` has its size)."""
    err = max_relative_error(actual, expected)
    assert err <= rel, f"{what}: relative error {err:.3g} > {rel:.3g}"


def assert_equal_nonempty(actual: dict, expected: dict, what: str = "") -> None:
    """``actual == expected`` where both sides hold something: ``{} == {}`` proves nothing."""
    assert expected, f"{what}: nothing to compare (the expected side is empty)"
    assert actual == expected, what


def final_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "final" / "model.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    """Bit-identical state dicts with the same (non-empty) keys."""
    return bool(a) and a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def run_scores(metrics: dict) -> dict:
    """The dev and test UARs of a run's metrics."""
    return {k: v for k, v in metrics.items() if k.startswith(("test_uar", "dev_uar"))}


# [5] Ray sessions a SIGKILLed driver leaves behind ---------------------------------------------------------------
# ``ray.init()`` starts the GCS, raylet, dashboard and workers in new sessions, so killing the driver's process
# group (as a lost job would be) leaves them running. Tests note the Ray sessions that exist before they start a
# driver and, after killing it, kill every process of the sessions that appeared since.
def _cmdlines():
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


def ray_sessions() -> set[str]:
    """Names of the Ray sessions whose GCS runs on this machine."""
    out = set()
    for _, cmd in _cmdlines():
        if "gcs_server" in cmd and "--session-name=" in cmd:
            out.add(cmd.split("--session-name=", 1)[1].split()[0])
    return out


def kill_new_sessions(before: set[str]) -> int:
    """SIGKILL every process of the Ray sessions not in ``before``; returns how many were killed."""
    new = ray_sessions() - before
    killed = 0
    for pid, cmd in _cmdlines():
        if pid != os.getpid() and any(s in cmd for s in new):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


# [6] run directories and paired predictions for the evaluation tests ----------------------------------------------
def write_run(root: Path, name: str, corpora: dict, checkpoints=("best", "final"), mlflow_run_id=None,
              tracking_uri=None) -> Path:
    """A run directory ``root/name`` laid out as ``emonet train`` leaves it (``run.json`` +
    ``predictions/<checkpoint>/<c>.csv``); ``corpora`` maps corpus -> ``(ids, labels, preds, classes)`` with labels
    and predictions as class names. The CSVs go through the training code's own writer."""
    from emonet_dist.runs.predictions import write_predictions
    from emonet_dist.tracking import metric_key

    run = root / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"name": name, "dir": str(run), "mlflow_run_id": mlflow_run_id,
                                              "tracking_uri": tracking_uri, "status": "FINISHED", "metrics": {}}))
    for corpus, (ids, labels, preds, classes) in corpora.items():
        index = {c: i for i, c in enumerate(classes)}
        probs = np.full((len(ids), len(classes)), 0.1 / max(len(classes) - 1, 1))
        probs[np.arange(len(ids)), [index[p] for p in preds]] = 0.9
        pred = {"ids": list(ids), "targets": [index[t] for t in labels], "probs": probs}
        for ck in checkpoints:
            write_predictions(run / "predictions" / ck / f"{metric_key(corpus)}.csv", pred, corpus, tuple(classes))
    return run


def paired(b: int, c: int, both_right: int, both_wrong: int, classes=("neg", "pos"), seed: int = 0):
    """Baseline and candidate predictions with exactly ``b`` (baseline right only) and ``c`` (candidate right only)
    discordant utterances; returns ``(ids, labels, base_preds, cand_preds)``."""
    rng = np.random.default_rng(seed)
    n = b + c + both_right + both_wrong
    labels = [classes[i] for i in rng.integers(0, len(classes), n)]

    def wrong(lab):
        return classes[(classes.index(lab) + 1) % len(classes)]

    kinds = ["b"] * b + ["c"] * c + ["rr"] * both_right + ["ww"] * both_wrong
    kinds = [kinds[i] for i in rng.permutation(n)]
    base = [lab if k in ("b", "rr") else wrong(lab) for lab, k in zip(labels, kinds)]
    cand = [lab if k in ("c", "rr") else wrong(lab) for lab, k in zip(labels, kinds)]
    return [f"utt{i:04d}" for i in range(n)], labels, base, cand


# Two fp32 kernels computing the same function (another batch size or padding, memory layout, fused vs separate
# convolutions, thread split) add the same terms in a different order. Each layer's output then differs by a few
# ulps (1.2e-7) of its magnitude, and the ~20 layers of the tiny test models keep the difference of the outputs
# near 1e-6 of their magnitude (4.4e-7 measured on an AMD EPYC of the project's kind). 1e-5 leaves a margin of 20x
# and stays 100x below what the negative controls show (a missing mask or a non-zero adapter: > 1e-3).
FP32_REORDERED = 1e-5


def uar_from_predictions(csv_path: str | Path) -> float:
    """UAR recomputed from a run's prediction CSV (``label`` and ``prediction`` columns): the mean recall over the
    classes present in the labels. Comparing it with the run's logged metric gives that number its meaning."""
    import csv

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"{csv_path} has no predictions"
    labels = sorted({r["label"] for r in rows})
    return float(np.mean([np.mean([r["prediction"] == c for r in rows if r["label"] == c]) for c in labels]))


# [7] listening sockets -----------------------------------------------------------------------------------------
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}  # v4, v4-mapped, ::1


def listening_sockets(pids) -> list[tuple[int, str, int]]:
    """``(pid, address hex as /proc/net shows it, port)`` of every listening TCP socket the processes hold."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A":  # LISTEN
                addr, port = cols[1].split(":")
                inodes[cols[9]] = (addr, int(port, 16))
    out = []
    for pid in pids:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        out += [(pid, *inodes[ln[8:-1]]) for ln in links if ln.startswith("socket:[") and ln[8:-1] in inodes]
    return out


def session_pids(session: str) -> set[int]:
    """Processes whose command line names a Ray session (GCS, raylet, agents, workers of that instance)."""
    return {pid for pid, cmd in _cmdlines() if session in cmd}


# [8] tar files for the shard-boundary tests ----------------------------------------------------------------------
def tar_members(path: str | Path) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every member of a tar file, in order."""
    import tarfile

    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A GNU tar archive of ``(name, bytes)`` members with fixed metadata (mtime 0), as the shard writer makes."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# [9] a real MLflow tracking server on 127.0.0.1 ---------------------------------------------------------------------
class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend store and an artifact store under ``root``. It can be
    killed (SIGKILL, as a crash) and started again on the same port and stores; its output goes to
    ``root/server.log``."""

    def __init__(self, root: Path, port: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> MlflowServer:
        """Start it and wait until ``/health`` answers (the test fails, with the server's log, if it does not)."""
        import time
        import urllib.request

        with open(self.root / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
                stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,  # its own process group: kill() and stop() reach its workers too
                # MLflow 3's job runner (7 huey consumer processes) is not used here
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.stop(signal.SIGKILL)
        pytest.fail(f"mlflow server did not come up: {(self.root / 'server.log').read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its workers: it stops answering at once, as in a crash."""
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None



# [10] a local cluster (cluster/local) -----------------------------------------------------------------------------
START, STOP = ROOT / "cluster" / "local" / "start.sh", ROOT / "cluster" / "local" / "stop.sh"


@contextlib.contextmanager
def started_cluster(timings: dict[str, float] | None = None):
    """A cluster from start.sh with free ports and its own state directory, stopped (by stop.sh) on exit. Yields
    cluster.json's fields plus ``state``, ``env`` (a client's environment: this one's, with env.sh's exports instead
    of any RAY_ or MLFLOW_ setting) and ``start_output``; ``timings`` gets the start time."""
    timings = {} if timings is None else timings
    # short and fresh: Ray puts unix sockets under the state dir (107-byte limit), and nothing is shared
    state = Path(tempfile.mkdtemp(prefix="emrc-", dir="/tmp"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "START_TIMEOUT": "300",
           "RAY_DASHBOARD_PORT": str(free_port()), "RAY_GCS_PORT": str(free_port()), "MLFLOW_PORT": str(free_port()),
           "RAY_NUM_CPUS": "2"}
    t0 = time.monotonic()
    res = subprocess.run([str(START), "--state-dir", str(state)], env=env, capture_output=True, text=True, timeout=420)
    timings["start"] = time.monotonic() - t0
    try:
        assert res.returncode == 0, f"start.sh failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        info = json.loads((state / "cluster.json").read_text())
        client_env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        for line in (state / "env.sh").read_text().splitlines():  # what a user sources
            if m := re.match(r"^export (\w+)=(\S+)", line):
                client_env[m.group(1)] = m.group(2)
        yield {**info, "state": state, "env": client_env, "start_output": res.stdout}
    finally:
        subprocess.run([str(STOP), "--state-dir", str(state)], capture_output=True, timeout=180)
        shutil.rmtree(state, ignore_errors=True)
        print(f"\n[cluster timings] {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}")
