"""What a run leaves behind: the model it starts from, prediction CSVs, the shared backbone and one adapter
bundle per corpus (all logged to MLflow by rank 0).

Run directory layout (and MLflow artifact paths)::

    backbone/       backbone.safetensors + backbone.json   shared weights + model config + their sha256
    bundles/<c>/    corpus.safetensors + corpus.json       adapters, BNs, (pooling), head of corpus c
                    bundle.json                            task, label map, class counts, frontend, backbone hash
    predictions/{best,final}/<c>.csv                       id, corpus, label, prediction, prob_<class>...
    final/          model.safetensors + model.json         the whole model at the end
    best/<c>/       model.safetensors + model.json         the whole model at corpus c's best dev UAR
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from .. import typed
from ..config import Config
from ..errors import EmonetError
from ..model.build import EmoNet, build_model
from ..model.weights import backbone_hash, load_model, save_corpus, save_model
from ..tracking import RunLogger, metric_key


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


def write_predictions(path: Path, pred: dict, corpus: str, classes: tuple[str, ...]) -> None:
    """Per-utterance predictions as CSV: id, corpus, label, prediction, prob_<class>... (atomic write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "corpus", "label", "prediction", *[f"prob_{c}" for c in classes]])
        for i, uid in enumerate(pred["ids"]):
            probs = pred["probs"][i]
            w.writerow([uid, corpus, classes[int(pred["targets"][i])], classes[int(probs.argmax())],
                        *[f"{p:.8g}" for p in probs]])
    os.replace(tmp, path)


def save_backbone(model: EmoNet, directory: Path) -> str:
    """The shared weights (every state entry that belongs to no corpus) with the model config; returns the hash."""
    from safetensors.torch import save_file

    owned = {k for name in model.corpora for k in _corpus_state_keys(model, name)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in owned}
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "backbone.safetensors"))
    sha = backbone_hash(model)
    (directory / "backbone.json").write_text(json.dumps({"format": "emonet-backbone", "version": 1,
                                                         "config": typed.to_dict(model.cfg), "backbone_sha256": sha},
                                                        indent=2))
    return sha


def _corpus_state_keys(model: EmoNet, name: str) -> set[str]:
    return {f"{path}.{k}" for path, mod in model.corpus_modules(name).items() for k in mod.state_dict()}


def write_final_outputs(model: EmoNet, datas: dict, run_dir: Path, log: RunLogger) -> None:
    """Rank 0, after training: the final model, backbone, per-corpus bundles, and their MLflow upload."""
    model = model.to("cpu") if next(model.parameters()).device.type != "cpu" else model
    save_model(model, run_dir / "final")
    sha = save_backbone(model, run_dir / "backbone")
    for name, d in datas.items():
        out = run_dir / "bundles" / metric_key(name)
        save_corpus(model, name, out)
        (out / "bundle.json").write_text(json.dumps({
            "corpus": name, "task": d.spec.task, "classes": list(d.classes), "class_counts": d.class_counts,
            "frontend": typed.to_dict(model.cfg.frontend), "backbone_sha256": sha}, indent=2))
    for sub in ("backbone", "bundles", "predictions", "final"):
        if (run_dir / sub).exists():
            log.log_artifact(run_dir / sub, sub)


@torch.no_grad()
def load_backbone(directory: Path, device: str = "cpu") -> EmoNet:
    """A corpus-less model holding a saved backbone (bundles are loaded onto it)."""
    from safetensors.torch import load_file

    meta = json.loads((directory / "backbone.json").read_text())
    from ..config import ModelConfig

    model = EmoNet(typed.from_dict(ModelConfig, meta["config"]))
    missing, unexpected = model.load_state_dict(load_file(str(directory / "backbone.safetensors")), strict=False)
    if unexpected or missing:
        raise EmonetError(f"{directory}: backbone weights do not match its config")
    if backbone_hash(model) != meta["backbone_sha256"]:
        raise EmonetError(f"{directory}: backbone weights do not match their recorded sha256 (tampered or corrupt)")
    return model.to(device)
