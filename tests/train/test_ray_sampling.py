"""Temperature sampling end to end on a real local Ray runtime (2 Ray Train workers, gloo, the synthetic shards):
every logged step trained exactly the corpora the seeded schedule draws for it. That a resumed run continues the
same sequence follows from the schedule being a function of (seed, step) (tests/data/test_schedule.py) and from the
restore tests of tests/train/test_ray_training.py, which resume at the checkpoint's step; a killed-worker run under
temperature sampling was dropped here to keep the slow tier's time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emonet_dist.train.launch import run_training
from emonet_dist.train.streams import corpus_data, corpus_schedule_for
from emonet_testkit import tiny_train_config

pytestmark = pytest.mark.slow

TEMPERATURE = ("train.corpus_sampling=temperature", "train.sampling_temperature=1.0")


def _cfg(shards, out, *extra):
    # 2 stages of 6 steps, checkpoints every 2; global BatchNorm (not the default) so that the slow tier also runs
    # it end to end on Ray, with rounds that draw a corpus twice or not at all
    return tiny_train_config(shards, out, *TEMPERATURE, "ray.sync_batchnorm=true", *extra)


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
