"""A real cluster: cluster/local/start.sh (Ray head + MLflow server on 127.0.0.1, free ports), `emonet submit`,
the run and its artifacts found through MLflow's REST API, a failing job, and stop.sh leaving nothing behind.

The tests share one module-scoped cluster, in any order; the stop test starts a cluster of its own, stops it
and checks the process table. Every cluster's finaliser runs stop.sh (a no-op after a stop), so a failing test
never leaks a cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from emonet_testkit import (
    LOOPBACK,
    STOP,
    listening_sockets,
    run_cli,
    started_cluster,
    tiny_train_dict,
    uar_from_predictions,
)

# the first test also pays for the module's cluster (start.sh up to 420 s), and a job may follow for 900 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TIMINGS: dict[str, float] = {}


def marked_pids(cluster_id: str) -> set[int]:
    """Processes whose environment carries this cluster's marker (what start.sh started, and their children)."""
    out = set()
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"EMONET_LOCAL_CLUSTER_ID={cluster_id}".encode() in env.read_bytes().split(b"\0"):
                out.add(int(env.parent.name))
        except OSError:
            continue
    return out


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # an exited process its parent has not reaped yet holds nothing


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def cluster():
    with started_cluster(TIMINGS) as c:
        yield c


def emonet(cluster: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """The CLI as a user of this cluster runs it (its env.sh sourced); the caller checks the exit code."""
    return run_cli(*args, env=cluster["env"], timeout=timeout, check=False)


def rest(cluster: dict, path: str, body: dict | None = None) -> dict:
    """MLflow's REST API, as a browser or script would call it (no MLflow client)."""
    req = urllib.request.Request(cluster["mlflow"] + path, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def cluster_config(shards: Path, out: Path, name: str) -> dict:
    """The tiny end-to-end run, logged to its own experiment on the cluster's MLflow server."""
    cfg = tiny_train_dict(shards, out, name)
    cfg["tracking"] = {"experiment": "cluster-tests"}
    return cfg


def write_spec(path: Path, cluster: dict, shards: Path, out: Path, name: str) -> Path:
    spec = {"name": name, "description": "demo-sized end-to-end job", "config": cluster_config(shards, out, name),
            "steps": [{"id": "pretrain", "run": "train"}],
            "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": cluster["mlflow"]}}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_start_binds_every_server_to_loopback_and_prints_the_addresses(cluster):
    out = cluster["start_output"]
    assert cluster["dashboard"] in out and cluster["mlflow"] in out and "source " in out
    assert cluster["dashboard"].startswith("http://127.0.0.1:") and cluster["mlflow"].startswith("http://127.0.0.1:")
    # every listening TCP socket of the cluster's processes is on 127.0.0.1
    listening = listening_sockets(marked_pids(cluster["cluster_id"]))
    assert listening and all(addr in LOOPBACK for _, addr, _ in listening), listening


def test_a_submitted_job_succeeds_and_its_run_is_on_the_mlflow_server(cluster, cli_synth_shards, tmp_path):
    spec = write_spec(tmp_path / "tiny.job.yaml", cluster, cli_synth_shards, tmp_path / "runs", "tiny-cluster")
    t0 = time.monotonic()
    res = emonet(cluster, "submit", str(spec), "--follow", "--no-pip", "--timeout", "800")
    TIMINGS["job"] = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    job_id = re.search(r"submitted job (\S+)", res.stdout).group(1)
    link = re.search(r"mlflow run (\w+) \(pretrain: (tiny-cluster-\S+)\) at (\S+)", res.stdout)
    assert link and f"job {job_id} SUCCEEDED" in res.stdout
    run_id, run_name, url = link.groups()
    assert url == f"{cluster['mlflow']}/#/experiments/{url.split('/experiments/')[1].split('/')[0]}/runs/{run_id}"

    # browse as a user would: the experiment, the job's run by its tag, its metrics, params and artifacts
    exp = rest(cluster, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=cluster-tests")["experiment"]
    found = rest(cluster, "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [exp["experiment_id"]], "filter": f"tags.ray_submission_id = '{job_id}'"})["runs"]
    # the job's own parent run and its training run, nested under it (both carry the submission's tag)
    by_kind = {{t["key"]: t["value"] for t in r["data"]["tags"]}["emonet.kind"]: r for r in found}
    assert sorted(by_kind) == ["job", "train"] and len(found) == 2, [r["info"]["run_id"] for r in found]
    run = by_kind["train"]
    assert run["info"]["run_id"] == run_id
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["mlflow.parentRunId"] == by_kind["job"]["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == run_name
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert "dev_uar_mean" in metrics
    assert params["data.shards"] == str(cli_synth_shards) and params["ray.address"] == "auto"
    assert tags["emonet_job"] == "tiny-cluster" and tags["job_step"] == "pretrain" and tags["world_size"] == "2"
    q = urllib.parse.urlencode
    root = rest(cluster, f"/api/2.0/mlflow/artifacts/list?{q({'run_id': run_id})}")
    assert {"config.yaml", "backbone", "bundles", "predictions", "final"} <= {f["path"] for f in root["files"]}
    bundle = rest(cluster, f"/api/2.0/mlflow/artifacts/list?{q({'run_id': run_id, 'path': 'bundles/synth4'})}")
    sizes = {Path(f["path"]).name: int(f.get("file_size", 0)) for f in bundle["files"]}
    assert sizes["corpus.safetensors"] > 0 and sizes["bundle.json"] > 0
    with urllib.request.urlopen(f"{cluster['mlflow']}/get-artifact?{q({'run_uuid': run_id, 'path': 'config.yaml'})}",
                                timeout=30) as r:
        assert yaml.safe_load(r.read())["name"] == "tiny-cluster"
    # the logged test UAR is the one the run's prediction artifact gives
    csv_path = tmp_path / "synth2.csv"
    url = f"{cluster['mlflow']}/get-artifact?{q({'run_uuid': run_id, 'path': 'predictions/final/synth2.csv'})}"
    with urllib.request.urlopen(url, timeout=30) as r:
        csv_path.write_bytes(r.read())
    assert metrics["test_uar_final/synth2"] == pytest.approx(uar_from_predictions(csv_path), rel=1e-12)
    # the server keeps them under its artifact root (start.sh's state directory), not in the job's directories
    assert list((cluster["state"] / "mlflow" / "artifacts").rglob("corpus.safetensors"))

    listed = emonet(cluster, "jobs", "list", timeout=120)
    assert listed.returncode == 0 and re.search(rf"{job_id}\s+SUCCEEDED", listed.stdout)


def test_a_failing_job_exits_nonzero_with_its_status_and_its_logs_show_the_error(cluster, cli_synth_shards, tmp_path):
    spec = write_spec(tmp_path / "bad.job.yaml", cluster, cli_synth_shards, tmp_path / "runs", "bad")
    t0 = time.monotonic()
    res = emonet(cluster, "submit", str(spec), "--follow", "--no-pip", "--timeout", "600",
                 "data.corpora=[{name: nope}]")
    TIMINGS["failing job"] = time.monotonic() - t0
    job_id = re.search(r"submitted job (\S+)", res.stdout).group(1)
    assert res.returncode == 1
    assert f"job {job_id} FAILED: " in res.stderr and "no shards for corpus 'nope'" in res.stderr
    logs = emonet(cluster, "jobs", "logs", job_id, timeout=120)
    assert logs.returncode == 0
    # the driver refuses the run before starting Ray Train: one error line in the job's own log
    assert "error: no shards for corpus 'nope'" in logs.stdout
    assert f"job {job_id} FAILED: " in logs.stderr and "no shards for corpus 'nope'" in logs.stderr
    listed = emonet(cluster, "jobs", "list", timeout=120)
    assert re.search(rf"{job_id}\s+FAILED", listed.stdout)


def test_clients_without_the_token_are_refused(cluster, tmp_path):
    env = {k: v for k, v in cluster["env"].items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "jobs", "list"], env=env, capture_output=True,
                         text=True, timeout=120)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and last.startswith("error: cannot use the Ray job API") and "token" in last


def test_stop_stops_exactly_what_start_started():
    with started_cluster(TIMINGS) as cluster:
        _stop_and_check(cluster)


def _stop_and_check(cluster: dict) -> None:
    cid, state = cluster["cluster_id"], str(cluster["state"])
    before = marked_pids(cid)
    names = " ".join(cmdline(p) for p in before)
    assert {cluster["ray_pid"], cluster["mlflow_pid"]} <= before
    assert "gcs_server" in names and "raylet" in names and "mlflow" in names
    t0 = time.monotonic()
    res = subprocess.run([str(STOP), "--state-dir", state], capture_output=True, text=True, timeout=180)
    TIMINGS["stop"] = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert not running(cluster["ray_pid"]) and not running(cluster["mlflow_pid"])
    assert not [p for p in before if running(p)]
    assert not [p for p in marked_pids(cid) if running(p)]
    strays = [(p, cmdline(p)[:120]) for p in map(int, (d.name for d in Path("/proc").glob("[0-9]*")))
              if running(p) and state in cmdline(p)]
    assert not strays, strays  # no raylet, GCS, dashboard or MLflow process of this cluster is left
