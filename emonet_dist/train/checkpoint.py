"""Full training state on disk: model and optimiser tensors as safetensors, everything else as JSON.

No pickle anywhere, so a checkpoint from an untrusted place cannot run code when loaded. A checkpoint
directory holds::

    model/model.safetensors + .json    weights, model config, corpora and label maps (emonet_dist.model.weights)
    optim.safetensors                  SGD momentum buffers, keyed by parameter name
    state.json                         round/epoch, LR schedule, best dev scores, data positions, config
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..model.weights import save_model

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
