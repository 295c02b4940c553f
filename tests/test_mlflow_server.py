"""A tiny `emonet demo` against a real `mlflow server` on 127.0.0.1, checked through MLflow's REST API the way a
user browsing the runs would see them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from emonet_testkit import free_port

pytestmark = pytest.mark.slow

TINY = ["model.stem_width=4", "model.base_width=8", "model.pooling.units=16", "model.head.hidden=16",
        "data.batch_size=8", "data.max_seconds=1.5", "optim.stages=1", "train.steps_per_stage=4",
        "train.eval_every=4", "train.checkpoint_every=4", "train.max_epochs=2", "train.patience=1"]


def _get(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture()
def mlflow_server(tmp_path):
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "artifacts"),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),
        start_new_session=True,  # MLflow 3's job runner (7 huey consumer processes) is not used here
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"mlflow server did not come up: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield base
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_tiny_demo_against_a_tracking_server(mlflow_server, synth_set, tmp_path, ray_local):
    from emonet_dist.demo import run_demo

    corpora_dir, reports, _ = synth_set
    out = tmp_path / "demo"
    (out / "corpora").mkdir(parents=True)
    for name in [*reports, "raw"]:  # reuse the session's synthetic corpora instead of rebuilding them
        os.symlink(corpora_dir / name, out / "corpora" / name)
    (out / "corpora" / "demo.json").write_text(json.dumps({"seed": 0}))
    result = run_demo(out, [*TINY, f"tracking.uri={mlflow_server}"])

    api = f"{mlflow_server}/api/2.0/mlflow"
    exp = _get(api, "/experiments/get-by-name", experiment_name="emonet")["experiment"]
    runs = _post(api, "/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 50})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    pre, arms = result["pretrain"], result["arms"]
    for r in (pre, arms["adapters"], arms["scratch"]):
        run = by_name[r.name]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["tracking.uri"] == mlflow_server
        history = _get(api, "/metrics/get-history", run_id=run["info"]["run_id"], metric_key="dev_uar_mean")["metrics"]
        assert history
        arts = {a["path"] for a in _get(api, "/artifacts/list", run_id=run["info"]["run_id"]).get("files", [])}
        assert {"backbone", "bundles", "predictions", "config.yaml"} <= arts
    metrics = {m["key"]: m["value"] for m in by_name[arms["adapters"].name]["data"]["metrics"]}
    assert "test_uar_best/synth_target" in metrics
    report = next(r for r in runs if {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("emonet.kind")
                  == "report")
    tags = {t["key"]: t["value"] for t in report["data"]["tags"]}
    assert arms["scratch"].mlflow_run_id in tags["report.baseline"]
    assert arms["adapters"].mlflow_run_id in tags["report.candidates"]
    files = {a["path"] for a in _get(api, "/artifacts/list", run_id=report["info"]["run_id"]).get("files", [])}
    assert {"report.html", "report.json", "report.md", "report.csv", "uar_delta.png"} <= files
    shutil.rmtree(out, ignore_errors=True)
