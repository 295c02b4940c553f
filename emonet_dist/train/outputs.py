"""What a training run leaves behind: the shared backbone, one adapter bundle per corpus and the final model (all
logged to MLflow by rank 0, with the prediction CSVs that ``runs.predictions`` writes).

Run directory layout (and MLflow artifact paths)::

    backbone/       backbone.safetensors + backbone.json   shared weights + model config + their sha256
    bundles/<c>/    an adapter bundle (emonet_dist.bundles): corpus tensors, label map, backbone hash and pointer
    predictions/{best,final}/<c>.csv                       id, corpus, label, prediction, prob_<class>...
    final/          model.safetensors + model.json         the whole model at the end
    best/<c>/       model.safetensors + model.json         the whole model at corpus c's best dev UAR
"""

from __future__ import annotations

from pathlib import Path

from ..model.build import EmoNet
from ..model.weights import save_model
from ..tracking import RunLogger, metric_key


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
