"""Step [6]'s dev evaluation on one real worker (world size 1, the synthetic shards, a tiny model): it takes the
training state and returns a new one, keeps the model and test predictions of each new best, and precise BN leaves
the BatchNorm modules as it found them."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from emonet_dist.tracking import metric_key
from emonet_dist.train.dev_eval import evaluate_dev
from emonet_dist.train.state import Best, TrainState
from emonet_dist.train.worker import setup_worker
from emonet_testkit import tiny_train_config


@pytest.fixture
def worker(synth_shards, tmp_path):
    threads = torch.get_num_threads()  # setup_worker sets the process's torch threads to the worker's CPUs
    cfg = tiny_train_config(synth_shards, tmp_path, "train.bn_recalibration_batches=2")
    yield setup_worker(cfg, {"name": "dev-eval", "dir": str(tmp_path / "run")})
    torch.set_num_threads(threads)


def _bn_modules(w):
    return [m for n in w.names for m in w.model.corpus_batchnorms(n).values()]


def _best_files(w):
    return [p for n in w.names for p in (w.run_dir / "best" / metric_key(n) / "model.safetensors",
                                         w.run_dir / "predictions" / "best" / f"{metric_key(n)}.csv")]


def test_evaluate_dev_returns_a_new_state_and_keeps_each_new_best(worker):
    w = worker
    bn_before = [(m.momentum, sorted(vars(m))) for m in _bn_modules(w)]
    start = TrainState(step=3)
    state, metrics = evaluate_dev(w, start)
    assert start == TrainState(step=3)  # the state it was given is a value, untouched
    assert set(metrics) == {metric_key(k, n) for n in w.names for k in ("dev_uar", "dev_wa")} | {"dev_uar_mean"}
    assert state.step == 3 and state.last_eval == metrics
    for n in w.names:
        best = state.best[n]
        assert (best.dev_uar, best.step) == (metrics[metric_key("dev_uar", n)], 3) and best.test_uar is not None
    assert all(p.is_file() for p in _best_files(w))
    # precise BN ran (2 batches per corpus) and put each module's momentum back, adding no attribute
    assert [(m.momentum, sorted(vars(m))) for m in _bn_modules(w)] == bn_before
    assert w.model.training  # evaluation leaves the model in training mode

    for p in _best_files(w):
        p.unlink()
    unbeatable = replace(state, step=5, best={n: Best(dev_uar=2.0, step=1) for n in w.names})
    again, metrics = evaluate_dev(w, unbeatable)
    assert again.best == unbeatable.best and again.last_eval == metrics and again.step == 5
    assert not any(p.exists() for p in _best_files(w))  # no new best: nothing is saved
