"""Adapter bundles: one corpus's adapters, BNs, (pooling) and head, plus a pointer to the backbone they need.

A bundle directory holds

* ``corpus.safetensors`` + ``corpus.json`` — the corpus's tensors and model metadata (:mod:`emonet_dist.model.weights`);
* ``bundle.json`` — task, label map, class counts, frontend settings, the sha256 of the backbone it was trained
  with, where that backbone lives (a local path and/or an MLflow ``runs:/`` URI), and the sha256 of the two
  corpus files.

A bundle is small (a few hundred kB at the paper's widths); the backbone is shared by every bundle exported
from the same run. Loading refuses a bundle whose files do not match their recorded hashes (tampering or
corruption) and a backbone whose weights hash differently from the one the bundle needs. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from . import typed
from .errors import EmonetError
from .model.build import EmoNet
from .model.weights import backbone_hash, load_corpus, load_model, save_corpus
from .tracking import metric_key

FILES = ("corpus.safetensors", "corpus.json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# backbone
# ---------------------------------------------------------------------------------------------------------------
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


@torch.no_grad()
def load_backbone(directory: Path, device: str = "cpu") -> EmoNet:
    """A corpus-less model holding a saved backbone (bundles are loaded onto it)."""
    from safetensors.torch import load_file

    from .config import ModelConfig

    meta = json.loads((directory / "backbone.json").read_text())
    model = EmoNet(typed.from_dict(ModelConfig, meta["config"]))
    missing, unexpected = model.load_state_dict(load_file(str(directory / "backbone.safetensors")), strict=False)
    if unexpected or missing:
        raise EmonetError(f"{directory}: backbone weights do not match its config")
    if backbone_hash(model) != meta["backbone_sha256"]:
        raise EmonetError(f"{directory}: backbone weights do not match their recorded sha256 (tampered or corrupt)")
    return model.to(device)


def write_bundle(model: EmoNet, corpus: str, out: Path, meta: dict) -> Path:
    """Save ``corpus``'s tensors and a ``bundle.json`` (``meta`` + frontend + file hashes) into ``out``."""
    out = Path(out)
    save_corpus(model, corpus, out)
    full = {"corpus": corpus, **meta, "frontend": typed.to_dict(model.cfg.frontend),
            "files_sha256": {name: _sha256(out / name) for name in FILES}}
    (out / "bundle.json").write_text(json.dumps(full, indent=2))
    return out


def read_bundle_meta(bundle: str | Path) -> dict:
    path = Path(bundle) / "bundle.json"
    if not path.is_file():
        raise EmonetError(f"{bundle} is not an adapter bundle (no bundle.json); export one with "
                          "`emonet bundle export --run RUN --corpus NAME --out DIR`")
    return json.loads(path.read_text())


def export_bundle(run_dir: str | Path, corpus: str, out: str | Path, checkpoint: str = "final") -> Path:
    """Write the bundle of ``corpus`` from a finished run into ``out``; returns ``out``.

    ``final`` points to the run's ``backbone/``; ``best`` (the corpus's best-dev model) saves that model's
    backbone once under ``<run>/best/<corpus>/backbone`` and points there.
    """
    run_dir, out = Path(run_dir), Path(out)
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    key = metric_key(corpus)
    src = run_dir / "bundles" / key
    if not (src / "bundle.json").is_file():
        known = sorted(p.name for p in (run_dir / "bundles").glob("*")) if (run_dir / "bundles").is_dir() else []
        raise EmonetError(f"run {run_dir} has no bundle for corpus '{corpus}' (it has: {', '.join(known) or 'none'})")
    meta = json.loads((src / "bundle.json").read_text())
    if checkpoint == "final":
        model, backbone_dir, backbone_rel = None, run_dir / "backbone", "backbone"
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copy2(src / name, out / name)
    elif checkpoint == "best":
        best = run_dir / "best" / key
        if not (best / "model.safetensors").is_file():
            raise EmonetError(f"run {run_dir} kept no best-dev model for '{corpus}' (no dev partition?)")
        model = load_model(best)
        backbone_dir, backbone_rel = best / "backbone", f"best/{key}/backbone"
        meta["backbone_sha256"] = save_backbone(model, backbone_dir)
    else:
        raise EmonetError(f"checkpoint must be best or final, got '{checkpoint}'")
    meta.update({
        "checkpoint": checkpoint, "run": info.get("name", run_dir.name),
        "backbone_path": str(backbone_dir.resolve()),
        "backbone_uri": f"runs:/{info['mlflow_run_id']}/{backbone_rel}" if info.get("mlflow_run_id") else None,
        "tracking_uri": info.get("tracking_uri"),
    })
    if model is not None:
        return write_bundle(model, corpus, out, {k: v for k, v in meta.items() if k not in ("frontend", "files_sha256")})
    meta["files_sha256"] = {name: _sha256(out / name) for name in FILES}
    (out / "bundle.json").write_text(json.dumps(meta, indent=2))
    return out


def verify_bundle(bundle: Path, meta: dict) -> None:
    for name, digest in meta.get("files_sha256", {}).items():
        if not (bundle / name).is_file() or _sha256(bundle / name) != digest:
            raise EmonetError(f"bundle {bundle}: {name} does not match the sha256 recorded in bundle.json (tampered "
                              "or corrupt); re-export it with `emonet bundle export`")


def resolve_backbone(bundle: Path, meta: dict, backbone: str | Path | None) -> Path:
    """The backbone directory: explicit, next to the bundle, its recorded path, or its MLflow URI."""
    candidates = [Path(backbone)] if backbone else []
    candidates += [bundle / "backbone", bundle.parent / "backbone", bundle.parent.parent / "backbone"]
    if meta.get("backbone_path"):
        candidates.append(Path(meta["backbone_path"]))
    for cand in candidates:
        if (cand / "backbone.json").is_file():
            return cand
    if meta.get("backbone_uri"):
        import mlflow

        dst = Path(tempfile.mkdtemp(prefix="emonet-backbone-"))
        return Path(mlflow.artifacts.download_artifacts(meta["backbone_uri"], dst_path=str(dst),
                                                        tracking_uri=meta.get("tracking_uri")))
    raise EmonetError(f"cannot find the backbone of bundle {bundle} (sha256 {meta['backbone_sha256'][:12]}...); "
                      "pass --backbone DIR")


def load_bundle(bundle: str | Path, backbone: str | Path | None = None, device: str | torch.device = "cpu"
                ) -> tuple[EmoNet, str, dict]:
    """The model (backbone + this corpus) ready for inference, the corpus name, and the bundle metadata."""
    bundle = Path(bundle)
    meta = read_bundle_meta(bundle)
    verify_bundle(bundle, meta)
    where = resolve_backbone(bundle, meta, backbone)
    model = load_backbone(where)
    if backbone_hash(model) != meta["backbone_sha256"]:
        raise EmonetError(f"bundle {bundle} was trained on backbone {meta['backbone_sha256'][:12]}..., but {where} "
                          f"holds {backbone_hash(model)[:12]}...; use the backbone the bundle was exported with")
    name = load_corpus(model, bundle)
    return model.to(device).eval(), name, meta


def fetch_bundle(ref: str) -> Path:
    """A local bundle directory for a path, ``runs:/<id>/<path>`` or ``models:/<name>/<version>`` reference."""
    if ref.startswith(("runs:/", "models:/")):
        import mlflow

        dst = Path(tempfile.mkdtemp(prefix="emonet-bundle-"))
        try:
            return Path(mlflow.artifacts.download_artifacts(ref, dst_path=str(dst)))
        except Exception as exc:  # noqa: BLE001 - registry and store errors vary
            raise EmonetError(f"cannot fetch bundle {ref} from MLflow ({exc}); is MLFLOW_TRACKING_URI set?") from None
    path = Path(ref)
    if not path.is_dir():
        raise EmonetError(f"bundle {ref} does not exist; pass a bundle directory, runs:/RUN_ID/bundles/NAME or "
                          "models:/NAME/VERSION")
    return path


def register_bundle(bundle: str | Path, name: str, tracking_uri: str, run_id: str | None = None) -> int:
    """Put a bundle into the MLflow model registry as a new version of ``name``; returns the version.

    The bundle's files are logged as artifacts of ``run_id`` (the training run by default) under
    ``registered/<name>``; the version carries the corpus name and label set as tags.
    """
    import mlflow

    bundle = Path(bundle)
    meta = read_bundle_meta(bundle)
    verify_bundle(bundle, meta)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run_id = run_id or _run_id_from_backbone_uri(meta)
    if run_id is None:
        raise EmonetError("cannot tell which MLflow run this bundle belongs to; pass --run-id")
    path = f"registered/{metric_key(name)}/{metric_key(meta['corpus'])}"
    client.log_artifacts(run_id, str(bundle), path)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(name, tags={"emonet": "adapter-bundle"})
    tags = {"corpus": meta["corpus"], "labels": ",".join(meta["classes"]), "task": meta["task"],
            "backbone_sha256": meta["backbone_sha256"]}
    version = client.create_model_version(name, source=f"runs:/{run_id}/{path}", run_id=run_id, tags=tags)
    return int(version.version)


def _run_id_from_backbone_uri(meta: dict) -> str | None:
    uri = meta.get("backbone_uri") or ""
    return uri.split("/")[1] if uri.startswith("runs:/") else None
