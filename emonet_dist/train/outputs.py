"""What a run leaves behind: the model it starts from, prediction CSVs, the shared backbone and one adapter
bundle per corpus (all logged to MLflow by rank 0).

Run directory layout (and MLflow artifact paths)::

    backbone/       backbone.safetensors + backbone.json   shared weights + model config + their sha256
    bundles/<c>/    an adapter bundle (emonet_dist.bundles): corpus tensors, label map, backbone hash and pointer
    predictions/{best,final}/<c>.csv                       id, corpus, label, prediction, prob_<class>...
    final/          model.safetensors + model.json         the whole model at the end
    best/<c>/       model.safetensors + model.json         the whole model at corpus c's best dev UAR
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .. import typed
from ..config import Config
from ..errors import EmonetError
from ..model.build import EmoNet, build_model
from ..model.weights import load_model, save_model
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


def write_final_outputs(model: EmoNet, datas: dict, run_dir: Path, log: RunLogger) -> None:
    """Rank 0, after training: the final model, backbone, per-corpus bundles, and their MLflow upload.

    The model stays on its device: every writer copies the tensors it saves to the CPU (``model.to("cpu")`` would
    move the training model itself, in place)."""
    from ..bundles import save_backbone, write_bundle

    save_model(model, run_dir / "final")
    sha = save_backbone(model, run_dir / "backbone")
    for name, d in datas.items():
        write_bundle(model, name, run_dir / "bundles" / metric_key(name), {
            "task": d.spec.task, "classes": list(d.classes), "class_counts": d.class_counts,
            "checkpoint": "final", "run": run_dir.name, "backbone_sha256": sha,
            "backbone_path": str((run_dir / "backbone").resolve()),
            "backbone_uri": f"runs:/{log.run_id}/backbone" if log.run_id else None, "tracking_uri": log.uri})
    for sub in ("backbone", "bundles", "predictions", "final"):
        if (run_dir / sub).exists():
            log.log_artifact(run_dir / sub, sub)
