"""Adapter bundles: one corpus's adapters, BNs, (pooling) and head, loaded onto the shared backbone they need.

A bundle directory holds ``corpus.safetensors`` + ``corpus.json`` (tensors and model metadata, see
:mod:`emonet_dist.model.weights`) and ``bundle.json`` (task, label map, class counts, frontend settings and the
sha256 of the backbone it was trained with). The backbone is a separate directory (``backbone.safetensors``
+ ``backbone.json``). Loading checks that the backbone's weights hash to what the bundle recorded, so a bundle
is never silently applied to the wrong backbone; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import EmonetError
from .model.build import EmoNet
from .model.weights import backbone_hash, load_corpus
from .train.outputs import load_backbone


def read_bundle_meta(bundle: str | Path) -> dict:
    path = Path(bundle) / "bundle.json"
    if not path.is_file():
        raise EmonetError(f"{bundle} is not an adapter bundle (no bundle.json); export one with "
                          "`emonet bundle export --run RUN --corpus NAME --out DIR`")
    return json.loads(path.read_text())


def default_backbone(bundle: Path) -> Path:
    """Where a run keeps the backbone next to its bundles (``<run>/bundles/<c>`` -> ``<run>/backbone``)."""
    for cand in (bundle / "backbone", bundle.parent / "backbone", bundle.parent.parent / "backbone"):
        if (cand / "backbone.json").is_file():
            return cand
    raise EmonetError(f"no backbone found next to bundle {bundle}; pass the backbone directory explicitly")


def load_bundle(bundle: str | Path, backbone: str | Path | None = None, device: str | torch.device = "cpu"
                ) -> tuple[EmoNet, str, dict]:
    """The model (backbone + this corpus) ready for inference, the corpus name, and the bundle metadata."""
    bundle = Path(bundle)
    meta = read_bundle_meta(bundle)
    backbone = Path(backbone) if backbone is not None else default_backbone(bundle)
    model = load_backbone(backbone)
    if backbone_hash(model) != meta["backbone_sha256"]:
        raise EmonetError(f"bundle {bundle} was trained on backbone {meta['backbone_sha256'][:12]}..., but {backbone} "
                          f"holds {backbone_hash(model)[:12]}...; use the backbone the bundle was exported with")
    name = load_corpus(model, bundle)
    return model.to(device).eval(), name, meta
