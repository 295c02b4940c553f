"""A tiny `emonet demo` against a real `mlflow server` on 127.0.0.1, checked through MLflow's REST API the way a
user browsing the runs would see them: the experiment opens in the model-training view (its kind tag), the job is a
parent run with its steps nested under it, every run names its source and git commit, and the corpora a run read
are its dataset inputs, with the sha256 of their shard index as digest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from emonet_testkit import ROOT, MlflowServer

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
    server = MlflowServer(tmp_path / "server").start()
    yield server.uri
    server.stop()


def test_tiny_demo_against_a_tracking_server(mlflow_server, synth_set, tmp_path, ray_local):
    from emonet_dist.demo import run_demo

    corpora_dir, reports, _ = synth_set
    out = tmp_path / "demo"
    (out / "corpora").mkdir(parents=True)
    for name in [*reports, "raw"]:  # reuse the session's synthetic corpora instead of rebuilding them
        os.symlink(corpora_dir / name, out / "corpora" / name)
    (out / "corpora" / "synth.json").write_text(json.dumps({"seed": 0}))
    # the demo runs the shipped job spec through the pipeline runner, which opens the job's parent run
    result = run_demo(out, [*TINY, f"tracking.uri={mlflow_server}"])
    job_id = result["outcome"].mlflow_run_id
    assert job_id

    api = f"{mlflow_server}/api/2.0/mlflow"
    exp = _get(api, "/experiments/get-by-name", experiment_name="emonet")["experiment"]
    check_browsing_view(api, exp, job_id, result, out / "shards")
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


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def check_browsing_view(api: str, exp: dict, job_id: str, result: dict, shards) -> None:
    """What MLflow 3's UI reads, through the REST API: experiment kind, parent/child runs, source tags, datasets."""
    # [1] the experiment opens in the model-training view, not the GenAI one
    assert {t["key"]: t["value"] for t in exp.get("tags", [])}["mlflow.experimentKind"] == "custom_model_development"

    # [2] the job is a parent run; the demo's steps (pretraining, both transfer arms, the report) nest under it
    job = _get(api, "/runs/get", run_id=job_id)["run"]
    assert job["info"]["status"] == "FINISHED" and _tags(job)["emonet.kind"] == "job"
    children = _post(api, "/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 50,
                                           "filter": f"tags.mlflow.parentRunId = '{job_id}'"})["runs"]
    steps = {r.mlflow_run_id for r in (result["pretrain"], *result["arms"].values())} | {result["report_run"]}

    def ancestors(run_id: str) -> list[str]:  # a runner may add levels (job -> step group -> run)
        chain = []
        while run_id:
            run_id = _tags(_get(api, "/runs/get", run_id=run_id)["run"]).get("mlflow.parentRunId")
            chain += [run_id] if run_id else []
        return chain

    assert children and all(job_id in ancestors(s) for s in steps)
    assert {r["info"]["run_id"] for r in children} <= steps | {c for s in steps for c in ancestors(s)}

    # [3] every run names its source and the git commit it ran
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30).stdout.strip()
    pre = _get(api, "/runs/get", run_id=result["pretrain"].mlflow_run_id)["run"]
    for run_id in (*steps, job_id):
        tags = _tags(_get(api, "/runs/get", run_id=run_id)["run"])
        assert tags["mlflow.source.git.commit"] == head and len(head) == 40
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"].startswith("emonet ")
    assert _tags(pre)["mlflow.source.name"] == "emonet train"

    # [4] the corpora a run read are its dataset inputs: name = corpus, digest = sha256 of its shard index
    inputs = pre["inputs"]["dataset_inputs"]
    got = {d["dataset"]["name"]: d for d in inputs}
    params = {p["key"]: p["value"] for p in pre["data"]["params"]}
    want = {v for k, v in params.items() if k.startswith("data.corpora.") and k.endswith(".name")}
    assert want and set(got) == want
    for corpus, d in got.items():
        sha = hashlib.sha256((shards / corpus / "index.json").read_bytes()).hexdigest()
        assert d["dataset"]["digest"] == sha[:32]
        tags = {t["key"]: t["value"] for t in d.get("tags", [])}
        assert tags["emonet.index_sha256"] == sha and tags["mlflow.data.context"] == "train"
    arm = _get(api, "/runs/get", run_id=result["arms"]["adapters"].mlflow_run_id)["run"]
    assert {d["dataset"]["name"] for d in arm["inputs"]["dataset_inputs"]} == {"synth_target"}
