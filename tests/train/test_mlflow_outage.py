"""Issue 14, acceptance 3: a real ``mlflow server`` on 127.0.0.1 is killed in the middle of a 2-worker training run.

The run completes (``emonet train`` exits 0 with a "tracking incomplete" warning that names ``emonet track sync``),
its checkpoints are intact, no step waited for the dead server, and once the server is back on the same port and
stores, ``emonet track sync`` makes the MLflow run complete: FINISHED, every metric point of the journal exactly
once, also after a second sync.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from emonet_dist import tracking
from emonet_dist.cli import main
from emonet_dist.train.checkpoint import read_state
from emonet_testkit import MlflowServer, tiny_train_config

pytestmark = pytest.mark.slow

KILL_AT_STEP = 2
STEPS = 2 * 6  # the tiny run's 2 stages of 6 steps: it goes on for most of its steps after the kill


def _kill_when_logged(out: Path, server: MlflowServer, killed: dict) -> None:
    """SIGKILL the server once rank 0's journal holds step KILL_AT_STEP (the run is under way and logging)."""
    deadline = time.time() + 600
    while time.time() < deadline and "at" not in killed:
        for journal in out.glob("*/metrics.jsonl"):
            if any(e["step"] >= KILL_AT_STEP for e in tracking.read_journal(journal)):
                server.kill()
                killed["at"] = time.time() * 1000
                return
        time.sleep(0.05)


def test_a_server_killed_mid_run_costs_nothing_and_track_sync_completes_the_run(synth_shards, tmp_path, ray_local,
                                                                              capsys):
    server = MlflowServer(tmp_path / "server").start()
    out = tmp_path / "runs"
    cfg = tiny_train_config(synth_shards, out, f"tracking.uri={server.uri}", "train.checkpoint_every=4",
                            name="outage")
    config = tmp_path / "outage.yaml"
    config.write_text(cfg.to_yaml())
    killed: dict = {}
    watcher = threading.Thread(target=_kill_when_logged, args=(out, server, killed), daemon=True)
    watcher.start()
    try:
        # [1] the run completes: exit 0, a warning naming the command that completes the MLflow copy
        assert main(["train", str(config)]) == 0
        watcher.join(5)
        assert "at" in killed, f"the server was never killed: the run ended before step {KILL_AT_STEP} was logged"
        (run_dir,) = [p.parent for p in out.glob("*/run.json")]
        err = capsys.readouterr().err
        assert "warning: tracking incomplete" in err and f"emonet track sync {run_dir}" in err, err[-2000:]
        info = json.loads((run_dir / "run.json").read_text())
        assert info["status"] == "FINISHED" and info["tracking"] == "incomplete"
        assert (run_dir / "tracking_error.txt").is_file()

        # [2] its checkpoints are intact: the final one holds the last step, and the outputs are all there
        final_ckpt = Path(info["checkpoint"])
        assert read_state(final_ckpt)["step"] == STEPS
        assert (final_ckpt / "model" / "model.safetensors").is_file() and (final_ckpt / "optim.safetensors").is_file()
        assert all((run_dir / sub).is_dir() for sub in ("backbone", "bundles", "final", "predictions"))

        # [3] no step waited for the dead server: logging calls returned at once, and rank 0 kept logging
        assert info["metrics"]["tracking_max_wait_s"] < 1.0, info["metrics"]["tracking_max_wait_s"]
        journal = tracking.read_journal(run_dir / tracking.JOURNAL)
        after = [e for e in journal if e["time"] > killed["at"]]
        assert after and max(e["step"] for e in after) == STEPS
        gaps = [b["time"] - a["time"] for a, b in zip(journal, journal[1:])]
        assert max(gaps) < 15_000, gaps  # ms; the old client blocked for minutes on each call after the kill

        # [4] the server is back on the same port and stores: track sync completes the run, exactly once per point
        server.start()
        c = tracking.client(server.uri)
        run_id = info["mlflow_run_id"]
        want = {}
        for e in journal:
            for k in e["metrics"]:
                want.setdefault(k, []).append((e["step"], e["time"]))
        before = sum(len(c.get_metric_history(run_id, k)) for k in want)
        assert before < sum(len(v) for v in want.values())  # the kill cost the MLflow copy some points
        assert main(["track", "sync", str(run_dir)]) == 0
        assert main(["track", "sync", str(run_dir)]) == 0  # idempotent
        assert "(0 points were missing)" in capsys.readouterr().out
        for key, points in want.items():
            got = sorted((m.step, m.timestamp) for m in c.get_metric_history(run_id, key))
            assert got == sorted(points), key
        mlflow_run = c.get_run(run_id)
        assert mlflow_run.info.status == "FINISHED"
        assert {a.path for a in c.list_artifacts(run_id)} >= {"backbone", "bundles", "final", "predictions", "logs"}
        info = json.loads((run_dir / "run.json").read_text())
        assert info["tracking"] == "complete" and not (run_dir / "tracking_error.txt").exists()
    finally:
        server.stop()
