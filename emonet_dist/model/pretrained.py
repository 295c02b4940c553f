"""The model a run starts from: built from its config, or a pretrained model (``train.init_from``) with the run's
new corpora added."""

from __future__ import annotations

from pathlib import Path

from .. import typed
from ..config import Config
from ..errors import EmonetError
from .build import EmoNet, build_model
from .weights import load_model


def resolve_init(ref: str) -> Path:
    """A model directory from ``train.init_from``: a model/checkpoint directory or a run directory."""
    p = Path(ref).expanduser()
    for cand in (p, p / "final", p / "model"):
        if (cand / "model.safetensors").is_file():
            return cand
    raise EmonetError(f"train.init_from={ref!r} is neither a model directory (model.safetensors + model.json) nor "
                      "a finished run directory (with final/); pass the run directory printed by `emonet train`")


def build_model_for_run(cfg: Config, datas: dict) -> EmoNet:
    """From scratch, or the pretrained model of ``train.init_from`` with this run's new corpora added.

    Args:
        datas: ``{domain: data}`` where each data has ``classes`` and ``kind`` (``train.streams.CorpusData``).

    In ``head`` mode a new corpus starts as a copy of the first pretrained corpus's adapters and BNs, so the
    frozen backbone computes exactly the pretrained features; otherwise new adapters start at zero.
    """
    if cfg.train.init_from:
        model = load_model(resolve_init(cfg.train.init_from))
        if typed.to_dict(model.cfg.frontend) != typed.to_dict(cfg.model.frontend):
            raise EmonetError("the pretrained model's frontend differs from model.frontend of this run")
        template = next(iter(model.corpora), None) if cfg.train.mode == "head" else None
    elif cfg.train.mode not in ("scratch",):
        raise EmonetError(f"train.mode={cfg.train.mode} needs a pretrained model: set train.init_from")
    else:
        model, template = build_model(cfg.model), None
    for name, d in datas.items():
        if name not in model.corpora:
            model.add_corpus(name, len(d.classes), kind=d.kind, labels=list(d.classes), init_from=template)
    return model
