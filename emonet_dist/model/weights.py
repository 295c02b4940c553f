"""Weights on disk: safetensors for tensors, JSON for everything else; no pickle anywhere.

A model is a pair of files, ``<stem>.safetensors`` + ``<stem>.json`` (:func:`save_weights`; :func:`save_model`
writes them as ``model.*`` into a directory):
    ``.safetensors``  the full state dict (CPU, contiguous);
    ``.json``         ``{"format": "emonet-model", "version": 1, "config": ModelConfig as a dict,
                      "corpora": [{"name", "kind", "num_classes", "labels"}, ...], "backbone_sha256"}``.
:func:`load_weights` / :func:`load_model` rebuild the model from the JSON, add the corpora in order and load the
tensors strictly; the loaded model can then ``add_corpus`` further corpora. :func:`load_state_into` restores
the tensors into an already built model (resuming).

One corpus's state (its adapters, BNs, per-corpus pooling and head) can be exported separately from the shared
backbone (:func:`export_corpus` / :func:`import_corpus`, files via :func:`save_corpus` / :func:`load_corpus`).
Its tensor names drop the corpus key (``backbone.stem.adapters.<key>.weight`` -> ``backbone.stem.adapters.weight``)
so a corpus can be imported under another name. It records :func:`backbone_hash`, the SHA-256 of the shared
weights, so it is only applied to the backbone it was trained with.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .. import typed
from ..config import ModelConfig
from ..errors import EmonetError
from .build import EmoNet

MODEL_FORMAT, CORPUS_FORMAT, VERSION = "emonet-model", "emonet-corpus", 1


def backbone_hash(model: EmoNet) -> str:
    """SHA-256 (hex) of the shared parameters: names, dtypes, shapes and bytes, in name order.

    Independent of device and memory format; changes when any shared weight changes (e.g. after training
    in ``scratch``/``finetune`` mode), never when only a corpus's own parameters change.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.named_shared_parameters()):
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _corpus_entries(model: EmoNet) -> list[dict]:
    return [{"name": c.name, "kind": c.kind, "num_classes": c.num_classes,
             "labels": list(c.labels) if c.labels is not None else None} for c in model.corpora.values()]


def _write_pair(directory: Path, stem: str, tensors: dict[str, Tensor], meta: dict) -> None:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    st, js = directory / f"{stem}.safetensors", directory / f"{stem}.json"
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(cpu, str(st) + ".tmp", metadata={"format": meta["format"]})
    js.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(str(st) + ".tmp", st)
    os.replace(js.with_suffix(".json.tmp"), js)


def _read_pair(directory: Path, stem: str, fmt: str, device: str | torch.device) -> tuple[dict[str, Tensor], dict]:
    st, js = directory / f"{stem}.safetensors", directory / f"{stem}.json"
    if not st.is_file() or not js.is_file():
        raise EmonetError(f"{directory} holds no {stem}.safetensors + {stem}.json pair; pass the directory "
                          "written by save_model/save_corpus")
    meta = json.loads(js.read_text())
    if meta.get("format") != fmt or meta.get("version") != VERSION:
        raise EmonetError(f"{js} is {meta.get('format')!r} version {meta.get('version')!r}, expected {fmt!r} "
                          f"version {VERSION}")
    return load_file(str(st), device=str(device)), meta


def save_weights(model: EmoNet, stem: str | Path) -> None:
    """Write ``<stem>.safetensors`` + ``<stem>.json`` (e.g. ``ckpt/model`` -> ``ckpt/model.safetensors``)."""
    stem = Path(stem)
    meta = {"format": MODEL_FORMAT, "version": VERSION, "config": typed.to_dict(model.cfg),
            "corpora": _corpus_entries(model), "backbone_sha256": backbone_hash(model)}
    _write_pair(stem.parent, stem.name, model.state_dict(), meta)


def load_weights(stem: str | Path, device: str | torch.device = "cpu") -> EmoNet:
    """Rebuild the model written by :func:`save_weights` on ``device`` (config, corpora, label maps, weights)."""
    stem = Path(stem)
    tensors, meta = _read_pair(stem.parent, stem.name, MODEL_FORMAT, "cpu")
    model = EmoNet(typed.from_dict(ModelConfig, meta["config"]))
    for c in meta["corpora"]:
        model.add_corpus(c["name"], c["num_classes"], kind=c["kind"], labels=c["labels"])
    _load_strict(model, tensors, stem)
    return model.to(device)


def load_state_into(model: EmoNet, stem: str | Path) -> None:
    """Load the weights written by :func:`save_weights` into an existing model with the same config and
    corpora (resuming a run: the model is built first, then its state restored, on its current device)."""
    stem = Path(stem)
    tensors, meta = _read_pair(stem.parent, stem.name, MODEL_FORMAT, next(model.parameters()).device)
    if typed.from_dict(ModelConfig, meta["config"]) != model.cfg:
        raise EmonetError(f"{stem}: saved with a different model config; build the model from the saved one "
                          "(load_weights) instead")
    if meta["corpora"] != _corpus_entries(model):
        raise EmonetError(f"{stem}: saved corpora {[c['name'] for c in meta['corpora']]} differ from the model's "
                          f"{list(model.corpora)}")
    _load_strict(model, tensors, stem)


def _load_strict(model: EmoNet, tensors: dict[str, Tensor], where: Path) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise EmonetError(f"{where}: weights do not match the saved config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")


def save_model(model: EmoNet, directory: str | Path) -> None:
    """Write ``model.safetensors`` + ``model.json`` into ``directory``."""
    save_weights(model, Path(directory) / "model")


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> EmoNet:
    """Rebuild the model saved by :func:`save_model` in ``directory`` on ``device``."""
    return load_weights(Path(directory) / "model", device)


def export_corpus(model: EmoNet, name: str) -> tuple[dict[str, Tensor], dict]:
    """One corpus's tensors (parameters and BN buffers, corpus key removed from the names) and metadata."""
    info = model.corpus_info(name)
    tensors: dict[str, Tensor] = {}
    for path, module in model.corpus_modules(name).items():
        base = path[: -len(info.key) - 1]  # "<CorpusDict path>.<key>" -> "<CorpusDict path>"
        for k, v in module.state_dict().items():
            tensors[f"{base}.{k}"] = v.detach()
    meta = {"format": CORPUS_FORMAT, "version": VERSION, "name": info.name, "kind": info.kind,
            "num_classes": info.num_classes, "labels": list(info.labels) if info.labels is not None else None,
            "config": typed.to_dict(model.cfg), "backbone_sha256": backbone_hash(model)}
    return tensors, meta


def import_corpus(model: EmoNet, tensors: dict[str, Tensor], meta: dict, name: str | None = None,
                  check_backbone: bool = True) -> str:
    """Load an exported corpus into ``model`` (adding it if absent) and return its name.

    Args:
        name: import under this name instead of ``meta["name"]``.
        check_backbone: refuse unless the model's shared weights hash to ``meta["backbone_sha256"]``.
    """
    name = name or meta["name"]
    if check_backbone and meta["backbone_sha256"] != backbone_hash(model):
        raise EmonetError(f"corpus {meta['name']!r} was trained on another backbone (sha256 "
                          f"{meta['backbone_sha256'][:12]}..., this model has {backbone_hash(model)[:12]}...); "
                          "load the matching backbone or pass check_backbone=False")
    if name in model.corpora:
        info = model.corpus_info(name)
        if (info.kind, info.num_classes) != (meta["kind"], meta["num_classes"]):
            raise EmonetError(f"corpus {name!r} exists with {info.num_classes} {info.kind} classes; the import "
                              f"has {meta['num_classes']} {meta['kind']} classes")
    else:
        model.add_corpus(name, meta["num_classes"], kind=meta["kind"], labels=meta["labels"])
    info = model.corpus_info(name)
    remaining = dict(tensors)
    for path, module in model.corpus_modules(name).items():
        base = path[: -len(info.key) - 1]
        own = {k: remaining.pop(f"{base}.{k}") for k in module.state_dict() if f"{base}.{k}" in remaining}
        module.load_state_dict(own, strict=True)  # raises, naming the key, if one is missing or mis-shaped
    if remaining:
        raise EmonetError(f"corpus import has tensors this model has no place for: {sorted(remaining)[:3]}")
    return name


def save_corpus(model: EmoNet, name: str, directory: str | Path) -> None:
    """Write ``corpus.safetensors`` + ``corpus.json`` for corpus ``name`` into ``directory``."""
    tensors, meta = export_corpus(model, name)
    _write_pair(Path(directory), "corpus", tensors, meta)


def load_corpus(model: EmoNet, directory: str | Path, name: str | None = None, check_backbone: bool = True) -> str:
    """Import the corpus saved by :func:`save_corpus`; returns its name in the model."""
    device = next(model.parameters()).device
    tensors, meta = _read_pair(Path(directory), "corpus", CORPUS_FORMAT, device)
    return import_corpus(model, tensors, meta, name=name, check_backbone=check_backbone)

