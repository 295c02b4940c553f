"""Ray Tune sweeps end to end: ASHA stops trials, MLflow parent/child runs, best config reproduces, resume.

Tiny model and few steps; every trial trains with 2 Ray Train workers. Trials run one at a time, so which trial
reaches ASHA's first rung first (and is compared with what) does not depend on scheduling: the outcome is fixed
by the order of the grid.
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
from emonet_testkit import kill_new_sessions, ray_sessions, tiny_train_config

pytestmark = pytest.mark.slow

# The good learning rate first: run one at a time, the later (bad) trial reaches ASHA's first rung (step 4) behind
# the first trial's recorded result and is stopped there; the first trial has nothing to be compared with and runs
# to the end. (Each trial costs ~30 s, mostly start-up: two trials show both outcomes.)
LRS = [0.1, 1e-5]
SPACE = {"optim.lr": f"grid({LRS})", "model.pooling.lam": "uniform(0.0, 1.0)"}


def sweep_cfg(shards: Path, out: Path) -> Config:
    return tiny_train_config(
        shards, out, "name=sweep", "seed=1", "optim.stages=1", "train.steps_per_stage=12", "train.eval_every=4",
        "train.checkpoint_every=4", "train.log_every=4", "ray.cpus_per_worker=0.45", "tune.num_samples=1",
        "tune.max_concurrent=1", "tune.grace_period=4", "tune.reduction_factor=3", "tracking.experiment=sweeps")


@pytest.fixture(scope="module")
def sweep(synth_shards, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("sweep")
    return run_sweep(sweep_cfg(synth_shards, out), SPACE), out


def test_sweep_finishes_with_an_early_stop_and_two_workers_per_trial(sweep):
    summary, out = sweep
    rows = summary["trials"]
    assert len(rows) == len(LRS) and all(r["status"] == "TERMINATED" for r in rows)
    by_lr = {float(r["optim.lr"]): r for r in rows}
    assert sorted(by_lr) == sorted(LRS)
    assert not by_lr[0.1]["stopped_early"] and by_lr[0.1]["steps"] == 12, rows  # ran to the end
    for lr in LRS[1:]:  # behind the first trial's result at the rung: stopped there
        assert by_lr[lr]["stopped_early"] and by_lr[lr]["steps"] < 12, rows
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
    assert len(children) == len(LRS)
    lrs = sorted(float(c.data.params["optim.lr"]) for c in children)
    assert lrs == sorted(LRS)
    evaluations = {}
    for c in children:
        assert c.data.tags["sweep"] == summary["name"] and "dev_uar_mean" in c.data.metrics
        evaluations[float(c.data.params["optim.lr"])] = len(client.get_metric_history(c.info.run_id, "dev_uar_mean"))
    # the whole history, not only the last value: every evaluation (steps 4, 8, 12) of the trial that ran to the end,
    # and the one at the rung where ASHA stopped the others
    assert evaluations == {0.1: 3, **{lr: 1 for lr in LRS[1:]}}, evaluations
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.csv", "best_config.yaml"}


def test_best_config_reproduces_the_best_trial(sweep):
    summary, _ = sweep
    cfg = Config.from_dict(json.loads(json.dumps(
        __import__("yaml").safe_load((Path(summary["sweep_dir"]) / "best_config.yaml").read_text()))))
    result = run_training(cfg.override("tracking.enabled=false"))
    assert abs(result.metrics["dev_uar_mean"] - summary["best"]["objective"]) <= 0.01


@pytest.mark.timeout(1800)  # up to 600 s for a first trial to finish, then up to 900 s to resume
def test_killed_sweep_resumes_without_rerunning_finished_trials(synth_shards, tmp_path):
    # two short trials, one at a time: the kill lands after the first has finished and before the second has
    cfg = sweep_cfg(synth_shards, tmp_path).override("tune.scheduler=none", "train.steps_per_stage=6")
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    space = {"optim.lr": "grid([0.1, 0.05])", "model.pooling.lam": "uniform(0.0, 1.0)"}
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
    # the kill interrupts the sweep: the driver is still running and not every trial has finished
    assert proc.poll() is None and len(done) == 1, (proc.poll(), len(done))
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep driver and the local Ray it started
    proc.wait()
    kill_new_sessions(before)  # the local Ray it started outlives it in its own session
    sweep_dir = next(p.parent for p in (tmp_path / "ray").glob("*/sweep.json"))  # not a trial's Train storage
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "tune", "--resume", str(sweep_dir)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(summary["trials"]) == 2 and all(r["status"] == "TERMINATED" for r in summary["trials"])
    for run_dir, mtime in done.items():  # finished trials were not run again
        assert (run_dir / "run.json").stat().st_mtime_ns == mtime
    runs = list(tmp_path.glob("sweep-sweep-*/run.json"))
    assert len(runs) == 2 and all(json.loads(p.read_text())["status"] == "FINISHED" for p in runs)
