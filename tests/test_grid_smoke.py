"""A grid of folds × seeds × methods on the real EMOVO FLAC files (issue 16, acceptance 1 and 5), run as the spec's
header documents it: ``EMONET_REALDATA=../shared/data emonet jobs run jobs/realdata_grid_smoke.job.yaml``.

One job is SIGKILLed (with its local Ray) once a ResNet run has finished, then run again: the finished runs are
reused (their run.json is not touched), the rest are run, and then every method's pooled test predictions cover
every EMOVO utterance exactly once per seed, and MLflow holds one grid run with every run nested under it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emonet_testkit import SHARED_DATA, kill_new_sessions, ray_sessions, shared_corpus, user_env

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "jobs" / "realdata_grid_smoke.job.yaml"
GRID = "gsmoke-grid"
RUNS = [f"{GRID}-egemaps-svm-s0-fold{f}" for f in (1, 2)] + \
       [f"{GRID}-scratch-resnet-s{s}-fold{f}" for s in (0, 1) for f in (1, 2)]


def _status(out: Path) -> dict[str, str]:
    found = {}
    for name in RUNS:
        try:
            found[name] = json.loads((out / name / "run.json").read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
    return found


def _test_ids(run_dir: Path) -> list[str]:
    with open(run_dir / "predictions" / "best" / "emovo.csv", newline="") as f:
        return [row["id"] for row in csv.DictReader(f)]


def test_a_killed_grid_resumes_and_pools_every_utterance_once(tmp_path):
    shared_corpus("emovo")
    cmd = [sys.executable, "-m", "emonet_dist.cli", "jobs", "run", str(SPEC)]
    env = user_env(EMONET_REALDATA=str(SHARED_DATA))
    out = tmp_path / "runs" / "realdata-grid-smoke"  # the spec's output_dir, relative to where it runs

    # [1] the first attempt, killed once a ResNet run has finished
    before = ray_sessions()
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None and \
                not any(s == "FINISHED" for n, s in _status(out).items() if "scratch" in n):
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, as a lost job would
        proc.wait()
    kill_new_sessions(before)  # the local Ray it started outlives it in its own session
    first = _status(out)
    finished = sorted(n for n, s in first.items() if s == "FINISHED")
    assert any("scratch" in n for n in finished), (first, (tmp_path / "first.log").read_text()[-3000:])
    assert len(finished) < len(RUNS), first  # the kill interrupted the grid
    stamps = {n: (out / n / "run.json").stat().st_mtime_ns for n in finished}

    # [2] the same command again: finished runs are reused, the others run
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    for name in finished:
        assert f"reusing finished run {name}" in text
        assert (out / name / "run.json").stat().st_mtime_ns == stamps[name], name
    started = [n for n in RUNS if f"{n}: method" in text]
    assert sorted(started) == sorted(set(RUNS) - set(finished)), started
    assert set(_status(out).values()) == {"FINISHED"} and len(_status(out)) == len(RUNS)

    # [3] pooled predictions: each method's folds cover every utterance of EMOVO exactly once, per seed
    with open(out / "corpora" / "emovo" / "manifest.jsonl") as f:
        utterances = sorted(json.loads(line)["id"] for line in f if line.strip())
    assert len(utterances) == 588
    for method, seeds in (("egemaps-svm", (0,)), ("scratch-resnet", (0, 1))):
        for seed in seeds:
            ids = [i for fold in (1, 2) for i in _test_ids(out / f"{GRID}-{method}-s{seed}-fold{fold}")]
            assert sorted(ids) == utterances, (method, seed, len(ids))
    report_dir = next((out / "reports").glob(f"{GRID}-*"))
    report = json.loads((report_dir / "report.json").read_text())
    (row,) = report["corpora"]
    assert row["corpus"] == "emovo" and report["grid"]["methods"] == ["egemaps", "scratch"]
    per_seed = row["candidates"]["scratch"]["per_seed"]  # McNemar on the pooled predictions: n = the corpus
    assert [p["seed"] for p in per_seed] == [0, 1] and all(p["n"] == 588 for p in per_seed)

    # [4] MLflow: one grid run (reopened by the second attempt), every run and the report nested under it
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    grids = [r for r in runs if r.data.tags.get("emonet.kind") == "grid"]
    assert len(grids) == 1 and grids[0].info.status == "FINISHED", [(r.info.run_name, r.info.status) for r in grids]
    grid_id = grids[0].info.run_id
    nested = {r.info.run_name: r.data.tags.get("emonet.kind") for r in runs
              if r.data.tags.get("mlflow.parentRunId") == grid_id}
    assert set(RUNS) <= set(nested) and list(nested.values()).count("report") == 1, nested
    jobs = {r.info.run_id for r in runs if r.data.tags.get("emonet.kind") == "job"}
    assert grids[0].data.tags.get("mlflow.parentRunId") in jobs  # the grid nests under its job
