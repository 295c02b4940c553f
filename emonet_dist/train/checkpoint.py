"""Full training state on disk: model and optimiser tensors as safetensors, everything else as JSON.

No pickle anywhere, so a checkpoint from an untrusted place cannot run code when loaded. A checkpoint
directory holds::

    model/model.safetensors + .json    weights, model config, corpora and label maps (emonet_dist.model.weights)
    optim.safetensors                  SGD momentum buffers, keyed by parameter name
    state.json                         round/epoch, LR schedule, best dev scores, data positions, fp16 loss scale,
                                       config

:func:`report_checkpoint` and :func:`restore` are the loop's two ends of it: every rank reports (rank 0 with the
checkpoint), and a restarted worker group continues from the latest one exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ConfigError
from ..model.weights import save_model
from .distributed import assert_ranks_agree, average_batchnorm_stats, bn_state_digest
from .state import Position, TrainState
from .worker import Worker, say

STATE = "state.json"


def save_checkpoint(path: str | Path, model, optimizer: torch.optim.Optimizer, state: dict) -> Path:
    """Write a checkpoint directory (files written to temp names, then renamed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, path / "model")
    names = {id(p): n for n, p in model.named_parameters()}
    buffers = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buffers[names[id(p)]] = buf.detach().to("cpu").contiguous()
    tmp = path / "optim.safetensors.tmp"
    save_file(buffers, str(tmp))
    os.replace(tmp, path / "optim.safetensors")
    tmp = path / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path / STATE)
    return path


def read_state(path: str | Path) -> dict:
    return json.loads((Path(path) / STATE).read_text())


def restore_model(path: str | Path, model) -> None:
    """Load a checkpoint's weights into the (already built) model of a resumed run, strictly."""
    tensors = load_file(str(Path(path) / "model" / "model.safetensors"))
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in tensors.items()}, strict=True)


def restore_optimizer(path: str | Path, model, optimizer: torch.optim.Optimizer) -> None:
    """Put the saved momentum buffers back onto the matching parameters."""
    buffers = load_file(str(Path(path) / "optim.safetensors"))
    params = dict(model.named_parameters())
    for name, buf in buffers.items():
        if name in params:
            p = params[name]
            optimizer.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype)


def report_checkpoint(w: Worker, state: TrainState, loaders: dict, metrics: dict) -> TrainState:
    """Full state with the data positions of ``loaders`` now; rank 0 writes it and every rank reports ``metrics``
    (Ray needs all ranks to report). Returns the state as saved."""
    import ray.train

    if not w.sync_bn:
        average_batchnorm_stats(w.model)
    assert_ranks_agree(bn_state_digest(w.model), "BatchNorm running statistics")
    state = replace(state, positions={n: Position(**loaders[n].state()) for n in w.names}, scaler=w.amp.state())
    if w.rank == 0:
        tmp = Path(tempfile.mkdtemp(prefix="emonet-ckpt-"))
        save_checkpoint(tmp, w.model, w.opt, {**state.to_dict(), "config": w.cfg.to_dict()})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        ray.train.report(metrics)
    return state


def restore(w: Worker, checkpoint) -> TrainState:
    """The state to start from: a fresh one, or the one in ``checkpoint`` (a ``ray.train.Checkpoint``, which Ray
    hands a restarted worker group), whose model and optimiser tensors are loaded into ``w`` here.

    The restore is exact: weights, BatchNorm statistics, momentum, fp16's loss scale, data positions, best scores
    and the schedule's position come back, and the random draws follow from the step (``state.step_seed``). Only
    rank 0's tensors count: the caller broadcasts them, as DDP does at start-up."""
    fresh = TrainState(plateau=None if w.multi else w.schedule)
    if checkpoint is None:
        return fresh
    with checkpoint.as_directory() as d:
        restore_model(d, w.model)
        restore_optimizer(d, w.model, w.opt)
        try:
            state = TrainState.from_dict(read_state(d))
        except ConfigError as exc:
            raise ConfigError(f"checkpoint {checkpoint.path}: state.json is no training state: {exc}") from None
    w.amp.load(state.scaler)  # fp16: the loss scale and its growth count continue (the same on every rank)
    if w.log:
        say(f"[train] resumed at step {state.step} from {checkpoint.path}")
    # the single-corpus schedule's position continues; the multi-corpus schedule has none (the step is its position)
    return replace(state, plateau=None if w.multi else state.plateau or fresh.plateau)
