"""Ray Tune sweeps end to end: ASHA stops trials, MLflow parent/child runs, best config reproduces, resume.

Tiny model and few steps; every trial trains with 2 Ray Train workers (fractional CPUs so that two trials
fit on two cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emonet_dist.config import Config
from emonet_dist.train.launch import run_training
from emonet_dist.tuning import run_sweep
from emonet_testkit import kill_new_sessions, ray_sessions

pytestmark = pytest.mark.slow

# good learning rates first: with two trials at a time, the later (bad) ones reach ASHA's first rung behind
# better results and are stopped there
SPACE = {"optim.lr": "grid([0.1, 0.05, 1e-5, 2e-5, 3e-5])", "model.pooling.lam": "uniform(0.0, 1.0)"}


def sweep_cfg(shards: Path, out: Path) -> Config:
    return Config().override(
        f"output_dir={out}", f"data.shards={shards}", "name=sweep", "seed=1",
        "data.corpora=[{name: synth2}, {name: synth4}]", "data.batch_size=8", "data.max_seconds=1.5",
        "data.num_workers=0", "model.stem_width=4", "model.base_width=8", "model.pooling.units=16",
        "model.head.hidden=16", "optim.stages=1", "train.steps_per_stage=24", "train.eval_every=4",
        "train.checkpoint_every=8", "train.log_every=4", "ray.num_workers=2", "ray.cpus_per_worker=0.45",
        "tune.num_samples=1", "tune.max_concurrent=2", "tune.grace_period=8", "tune.reduction_factor=3",
        "tracking.experiment=sweeps")


@pytest.fixture(scope="module")
def sweep(synth_shards, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("sweep")
    return run_sweep(sweep_cfg(synth_shards, out), SPACE), out


def test_sweep_finishes_with_an_early_stop_and_two_workers_per_trial(sweep):
    summary, out = sweep
    rows = summary["trials"]
    assert len(rows) == 5 and all(r["status"] == "TERMINATED" for r in rows)
    assert any(r["stopped_early"] for r in rows), rows
    assert any(not r["stopped_early"] for r in rows)
    for r in rows:  # each trial's training run had ranks 0 and 1
        run_dir = next(out.glob(f"*{r['trial']}"))
        assert {p.name for p in (run_dir / "workers").iterdir()} == {"rank0.pid", "rank1.pid"}
    sweep_dir = Path(summary["sweep_dir"])
    for name in ("results.csv", "objective.png", "best_config.yaml", "sweep.json"):
        assert (sweep_dir / name).is_file(), name


def test_mlflow_holds_one_parent_and_a_child_per_trial(sweep):
    import mlflow

    summary, _ = sweep
    client = mlflow.MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_objective"] == summary["best"]["objective"]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 5
    lrs = sorted(float(c.data.params["optim.lr"]) for c in children)
    assert lrs == sorted([0.1, 0.05, 1e-5, 2e-5, 3e-5])
    for c in children:
        assert c.data.tags["sweep"] == summary["name"] and "dev_uar_mean" in c.data.metrics
        assert len(client.get_metric_history(c.info.run_id, "dev_uar_mean")) >= 2
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.csv", "best_config.yaml"}


def test_best_config_reproduces_the_best_trial(sweep):
    summary, _ = sweep
    cfg = Config.from_dict(json.loads(json.dumps(
        __import__("yaml").safe_load((Path(summary["sweep_dir"]) / "best_config.yaml").read_text()))))
    result = run_training(cfg.override("tracking.enabled=false"))
    assert abs(result.metrics["dev_uar_mean"] - summary["best"]["objective"]) <= 0.01


def test_killed_sweep_resumes_without_rerunning_finished_trials(synth_shards, tmp_path):
    cfg = sweep_cfg(synth_shards, tmp_path).override("tune.max_concurrent=1", "tune.scheduler=none")
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    space = {"optim.lr": "grid([0.1, 0.05, 0.02])", "model.pooling.lam": "uniform(0.0, 1.0)"}
    (tmp_path / "space.yaml").write_text("\n".join(f"{k}: {v}" for k, v in space.items()) + "\n")
    cmd = [sys.executable, "-m", "emonet_dist.cli", "tune", str(tmp_path / "cfg.yaml"), "--space",
           str(tmp_path / "space.yaml")]
    before = ray_sessions()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def finished() -> list[Path]:
        return [p.parent for p in tmp_path.glob("sweep-sweep-*/run.json")
                if json.loads(p.read_text())["status"] == "FINISHED"]

    deadline = time.time() + 600
    while time.time() < deadline and not finished():
        time.sleep(0.5)
    done = {p: (p / "run.json").stat().st_mtime_ns for p in finished()}
    assert done, "no trial finished before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep driver and the local Ray it started
    proc.wait()
    kill_new_sessions(before)  # the local Ray it started outlives it in its own session
    sweep_dir = next(p.parent for p in (tmp_path / "ray").glob("*/sweep.json"))  # not a trial's Train storage
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "tune", "--resume", str(sweep_dir)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(summary["trials"]) == 3 and all(r["status"] == "TERMINATED" for r in summary["trials"])
    for run_dir, mtime in done.items():  # finished trials were not run again
        assert (run_dir / "run.json").stat().st_mtime_ns == mtime
    assert len(list(tmp_path.glob("sweep-sweep-*/run.json"))) == 3
