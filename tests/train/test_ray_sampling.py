"""Temperature sampling end to end on a real local Ray runtime (2 Ray Train workers, gloo, the synthetic shards):
every logged step trained exactly the corpora the seeded schedule draws for it, and a run whose worker is killed
restores from its checkpoint and continues the same sequence, ending with the uninterrupted run's exact tensors."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from emonet_dist.train.launch import run_training
from emonet_dist.train.streams import corpus_data, corpus_schedule_for
from emonet_testkit import final_tensors, same_tensors, tiny_train_config

pytestmark = pytest.mark.slow

TEMPERATURE = ("train.corpus_sampling=temperature", "train.sampling_temperature=1.0")


def _cfg(shards, out, *extra):
    return tiny_train_config(shards, out, *TEMPERATURE, *extra)  # 2 stages of 6 steps, checkpoints every 2


def _schedule(cfg):
    datas = {s.domain: corpus_data(cfg.data.shards, s, cfg.data.seed) for s in cfg.data.corpora}
    return corpus_schedule_for(cfg, datas)


def _trained_corpora(run_dir: Path) -> dict[int, set[str]]:
    """Step -> the corpora whose loss was logged at that step (log_every=1: every step), from the run's journal."""
    out: dict[int, set[str]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        losses = {k.split("/", 1)[1] for k in rec["metrics"] if k.startswith("loss/")}
        if losses:
            out.setdefault(rec["step"], set()).update(losses)  # a restarted worker group may log a step again
    return out


def _kill_rank_after_checkpoints(storage: Path, prefix: str, out: Path, rank: int, killed: list) -> None:
    """SIGKILL ``rank`` once two complete checkpoints exist (the first is then certainly on record with Ray), as
    ``test_ray_training`` does."""
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpts = [c for c in storage.glob(f"{prefix}*/checkpoint_*") if (c / "state.json").is_file()]
        pids = list(out.glob(f"{prefix}*/workers/rank{rank}.pid"))
        if len(ckpts) >= 2 and pids:
            pid = int(pids[0].read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(synth_shards, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("runs")
    cfg = _cfg(synth_shards, out)
    return run_training(cfg), cfg


def test_each_step_trains_the_corpora_the_schedule_draws(reference):
    result, cfg = reference
    sched = _schedule(cfg)
    trained = _trained_corpora(result.dir)
    assert sorted(trained) == list(range(1, 13))
    for step, corpora in trained.items():
        assert corpora == set(sched.round(step - 1)), step  # the loss of step s is logged after round s - 1
    assert any(len(c) == 1 for c in trained.values())  # temperature sampling, not round-robin in disguise


def test_a_killed_worker_continues_the_same_sequence(reference, synth_shards, tmp_path):
    ref, cfg = reference
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_rank_after_checkpoints,
                               args=(tmp_path / "ray", "killed-", tmp_path, 1, killed), daemon=True)
    watcher.start()
    result = run_training(_cfg(synth_shards, tmp_path, "ray.max_failures=1", "name=killed"))
    watcher.join(timeout=5)
    assert killed, "the worker was never killed"
    start = result.metrics["start_step"]
    assert start >= 2 and start % 2 == 0, start  # restored from a checkpoint, not rerun from the start
    sched = _schedule(cfg)
    trained = _trained_corpora(result.dir)
    assert all(c == set(sched.round(s - 1)) for s, c in trained.items() if s > start)
    assert same_tensors(final_tensors(ref.dir), final_tensors(result.dir))
