"""A checkpoint's two ends on one real worker (world size 1, the synthetic shards): what ``save_checkpoint`` writes,
``restore`` gives back exactly, including the single-corpus schedule's position, and a ``state.json`` that is no
training state is refused. (Reporting to Ray and restarting a killed worker group run end to end in
``test_ray_training.py``.)"""

from __future__ import annotations

import pytest
import ray.train
import torch

from emonet_dist.errors import ConfigError
from emonet_dist.train.checkpoint import restore, save_checkpoint
from emonet_dist.train.loop import train_round
from emonet_dist.train.precision import ScalerState
from emonet_dist.train.state import Best, Position, TrainState
from emonet_dist.train.streams import train_loader
from emonet_dist.train.worker import setup_worker
from emonet_testkit import same_tensors, tiny_train_config


@pytest.fixture
def single_cfg(synth_shards, tmp_path):
    threads = torch.get_num_threads()  # setup_worker sets the process's torch threads to the worker's CPUs
    yield tiny_train_config(synth_shards, tmp_path, "data.corpora=[{name: synth2}]", "train.schedule=single",
                            "train.patience=2")
    torch.set_num_threads(threads)


def _trained_worker(cfg, run_dir):
    """A worker whose weights and momentum differ from a fresh one's (as after some training)."""
    w = setup_worker(cfg, {"name": "ckpt", "dir": str(run_dir)})
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in w.trainable:
            p.add_(torch.randn(p.shape, generator=g), alpha=0.01)
            w.opt.state[p]["momentum_buffer"] = torch.randn(p.shape, generator=g)
    return w


def _momentum(w) -> dict:
    return {n: w.opt.state[p]["momentum_buffer"] for n, p in w.model.named_parameters()
            if "momentum_buffer" in w.opt.state.get(p, {})}


def test_restore_gives_back_what_the_checkpoint_saved(single_cfg, tmp_path):
    w = _trained_worker(single_cfg, tmp_path / "run")
    plateau, _ = w.schedule.end_epoch(0.4)
    plateau, _ = plateau.end_epoch(0.3)  # one epoch without a gain: a position a fresh schedule does not have
    state = TrainState(step=9, positions={"synth2": Position(epoch=1, batch=2)}, best={"synth2": Best(0.4, 5, 0.3)},
                       plateau=plateau, last_eval={"dev_uar/synth2": 0.3, "dev_uar_mean": 0.3})
    save_checkpoint(tmp_path / "ckpt", w.model, w.opt, {**state.to_dict(), "config": single_cfg.to_dict()})

    fresh = setup_worker(single_cfg, {"name": "ckpt", "dir": str(tmp_path / "run")})
    assert restore(fresh, None) == TrainState(plateau=fresh.schedule)
    assert not same_tensors(fresh.model.state_dict(), w.model.state_dict())
    restored = restore(fresh, ray.train.Checkpoint.from_directory(str(tmp_path / "ckpt")))
    assert restored == state and restored.plateau.since_best == 1
    assert same_tensors(fresh.model.state_dict(), w.model.state_dict())
    assert same_tensors(_momentum(fresh), _momentum(w))


def test_a_state_json_that_is_no_training_state_is_refused(single_cfg, tmp_path):
    w = setup_worker(single_cfg, {"name": "ckpt", "dir": str(tmp_path / "run")})
    save_checkpoint(tmp_path / "ckpt", w.model, w.opt, {**TrainState().to_dict(), "step": "9"})
    with pytest.raises(ConfigError, match="state.json is no training state: step: expected int"):
        restore(w, ray.train.Checkpoint.from_directory(str(tmp_path / "ckpt")))


def test_fp16_loss_scaler_state_comes_back_with_the_checkpoint(single_cfg, tmp_path):
    """train.precision=fp16: the loss scale and its growth count are part of the state a checkpoint saves, so a
    restored worker takes the same next step as the one that kept running (bit for bit)."""
    cfg = single_cfg.replace({"train.precision": "fp16"})
    w = setup_worker(cfg, {"name": "ckpt", "dir": str(tmp_path / "run")})
    assert w.amp.name == "fp16" and w.opt.defaults["fused"]  # the fused SGD keeps the inf check on the device
    loaders = {"synth2": train_loader(w.datas["synth2"], cfg.data, 0, 1)}
    for step in range(3):
        train_round(w, loaders, ["synth2"], step)
    state = TrainState(step=3, positions={"synth2": Position(**loaders["synth2"].state())}, plateau=w.schedule,
                       scaler=w.amp.state())
    fresh_scaler = ScalerState(scale=2.0 ** 16, growth_tracker=0)
    assert state.scaler != fresh_scaler  # fp16 overflowed at 2^16 and backed off, or counted good steps
    save_checkpoint(tmp_path / "ckpt", w.model, w.opt, {**state.to_dict(), "config": cfg.to_dict()})

    fresh = setup_worker(cfg, {"name": "ckpt", "dir": str(tmp_path / "run")})
    assert fresh.amp.state() == fresh_scaler
    restored = restore(fresh, ray.train.Checkpoint.from_directory(str(tmp_path / "ckpt")))
    assert restored == state and fresh.amp.state() == state.scaler
    resumed = {"synth2": train_loader(fresh.datas["synth2"], cfg.data, 0, 1, restored.positions["synth2"])}
    train_round(w, loaders, ["synth2"], 3)
    train_round(fresh, resumed, ["synth2"], 3)
    assert fresh.amp.state() == w.amp.state()
    assert same_tensors(fresh.model.state_dict(), w.model.state_dict())
    for loader in (*loaders.values(), *resumed.values()):
        loader.close()
