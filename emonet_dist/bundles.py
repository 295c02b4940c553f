"""Adapter bundles: one corpus's adapters, BNs, (pooling) and head, plus a pointer to the backbone they need.

A bundle directory holds

* ``corpus.safetensors`` + ``corpus.json`` — the corpus's tensors and model metadata (:mod:`emonet_dist.model.weights`);
* ``bundle.json`` — task, label map, class counts, frontend settings, the sha256 of the backbone it was trained
  with, where that backbone lives (a local path and/or an MLflow ``runs:/`` URI), and the seal.

The seal is ``files_sha256`` in ``bundle.json``; it is mandatory and covers everything that changes a
prediction: ``corpus.safetensors`` and ``corpus.json`` (sha256 of their bytes) and ``bundle.json`` itself
(sha256 of its canonical content without the ``files_sha256`` field: ``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=True)``, so re-indenting the file keeps the seal but editing a class name,
the sample rate or the frontend does not). On top of the hashes, loading checks the bundle against its
weights: the class names against ``corpus.json``'s labels and the head's output size, the frontend and the
model config against the backbone's. The seal detects edits and corruption; it is not a signature (whoever
can write a bundle can re-seal it), so bundles are still only as trustworthy as their source.

A bundle is small (a few hundred kB at the paper's widths); the backbone is shared by every bundle exported
from the same run. Loading refuses a bundle without a seal or whose seal does not match (re-export it with
``emonet bundle export``) and a backbone whose weights hash differently from the one the bundle needs. A
backbone or bundle fetched from MLflow is downloaded into a temporary directory removed after loading, after
a short reachability probe of the tracking server, with bounded HTTP timeouts and retries. Nothing is
unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from . import atomic, typed
from .errors import EmonetError
from .model.build import EmoNet
from .model.weights import backbone_hash, load_corpus, load_model, save_corpus
from .tracking import client as tracking_client
from .tracking import metric_key
from .tracking_http import http_limits, probe_tracking_server, server_of

FILES = ("corpus.safetensors", "corpus.json")
SEALED = (*FILES, "bundle.json")
SEAL_KEY = "files_sha256"
REQUIRED = ("corpus", "task", "classes", "frontend", "backbone_sha256")

NO_SERVER_HINT = ("start it, fix --tracking-uri / MLFLOW_TRACKING_URI, or pass --backbone DIR / a local bundle "
                  "directory")
"""What a user can do when the tracking server a download needs does not answer."""


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


def _canonical(meta: dict) -> bytes:
    """The bytes the ``bundle.json`` seal hashes: its content without the seal, in one canonical spelling."""
    body = {k: v for k, v in meta.items() if k != SEAL_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def seal_bundle(out: Path, meta: dict) -> Path:
    """Write ``out/bundle.json``: ``meta`` plus the seal over the corpus files and over ``meta`` itself."""
    meta = {k: v for k, v in meta.items() if k != SEAL_KEY}
    seal = {name: _sha256(out / name) for name in FILES}
    seal["bundle.json"] = hashlib.sha256(_canonical(meta)).hexdigest()
    atomic.write_text(out / "bundle.json", json.dumps({**meta, SEAL_KEY: seal}, indent=2) + "\n")
    return out


def write_bundle(model: EmoNet, corpus: str, out: Path, meta: dict) -> Path:
    """Save ``corpus``'s tensors and a sealed ``bundle.json`` (``meta`` + frontend + seal) into ``out``."""
    out = Path(out)
    save_corpus(model, corpus, out)
    return seal_bundle(out, {"corpus": corpus, **meta, "frontend": typed.to_dict(model.cfg.frontend)})


def read_bundle_meta(bundle: str | Path) -> dict:
    path = Path(bundle) / "bundle.json"
    if not path.is_file():
        raise EmonetError(f"{bundle} is not an adapter bundle (no bundle.json); export one with "
                          "`emonet bundle export --run RUN --corpus NAME --out DIR`")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        raise EmonetError(f"{path} is not valid JSON ({str(exc)[:60]}); re-export the bundle") from None
    missing = [k for k in REQUIRED if k not in meta] if isinstance(meta, dict) else list(REQUIRED)
    if missing:
        raise EmonetError(f"{path} lacks {', '.join(missing)}; re-export the bundle with `emonet bundle export`")
    return meta


def export_bundle(run_dir: str | Path, corpus: str, out: str | Path, checkpoint: str = "final") -> Path:
    """Write the sealed bundle of ``corpus`` from a finished run into ``out``; returns ``out``.

    ``final`` points to the run's ``backbone/``; ``best`` (the corpus's best-dev model) saves that model's
    backbone once under ``<run>/best/<corpus>/backbone`` and points there. The run's own bundle is verified
    first: its corpus files always, its ``bundle.json`` unless the run predates the seal (it is sealed here).
    """
    run_dir, out = Path(run_dir), Path(out)
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    key = metric_key(corpus)
    src = run_dir / "bundles" / key
    if not (src / "bundle.json").is_file():
        known = sorted(p.name for p in (run_dir / "bundles").glob("*")) if (run_dir / "bundles").is_dir() else []
        raise EmonetError(f"run {run_dir} has no bundle for corpus '{corpus}' (it has: {', '.join(known) or 'none'})")
    meta = read_bundle_meta(src)
    verify_bundle(src, meta, require_meta_seal=False)
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
        return write_bundle(model, corpus, out, {k: v for k, v in meta.items() if k not in ("frontend", SEAL_KEY)})
    return seal_bundle(out, meta)


def verify_bundle(bundle: Path, meta: dict, require_meta_seal: bool = True) -> None:
    """Refuse a bundle without a complete seal or whose files or ``bundle.json`` content do not match it."""
    seal = meta.get(SEAL_KEY)
    need = SEALED if require_meta_seal else FILES
    if not isinstance(seal, dict) or any(not isinstance(seal.get(n), str) for n in need):
        raise EmonetError(f"bundle {bundle} is not sealed (bundle.json needs {SEAL_KEY} with the sha256 of "
                          f"{', '.join(need)}); re-export it with `emonet bundle export`")
    unknown = sorted(set(seal) - set(SEALED))
    if unknown:
        raise EmonetError(f"bundle {bundle}: {SEAL_KEY} names files a bundle does not have ({str(unknown)[:60]}); "
                          "re-export it with `emonet bundle export`")
    for name in FILES:
        if not (bundle / name).is_file() or _sha256(bundle / name) != seal[name]:
            raise EmonetError(f"bundle {bundle}: {name} does not match the sha256 recorded in bundle.json (tampered "
                              "or corrupt); re-export it with `emonet bundle export`")
    if "bundle.json" in seal and hashlib.sha256(_canonical(meta)).hexdigest() != seal["bundle.json"]:
        raise EmonetError(f"bundle {bundle}: bundle.json was edited after it was sealed (class names, frontend or "
                          "backbone pointer do not match its sha256); re-export it with `emonet bundle export`")


def check_against_weights(bundle: Path, meta: dict, model: EmoNet, name: str) -> None:
    """The bundle's class names, frontend and corpus against the weights they are applied with."""
    from .config import FrontendConfig, ModelConfig

    classes, info = meta["classes"], model.corpus_info(name)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise EmonetError(f"bundle {bundle}: classes must be a list of names")
    if meta["corpus"] != name:
        raise EmonetError(f"bundle {bundle}: bundle.json is for corpus {str(meta['corpus'])[:60]!r}, its weights "
                          f"for {name!r}")
    if info.labels is not None and list(info.labels) != classes:
        raise EmonetError(f"bundle {bundle}: class names {str(classes)[:60]} differ from the weights' labels "
                          f"{str(list(info.labels))[:60]}; re-export the bundle")
    n_fft = model.cfg.frontend.n_fft
    with torch.no_grad():  # the head's output size, from the weights themselves
        outputs = model.eval()(torch.zeros(1, n_fft), torch.tensor([n_fft]), name).shape[-1]
    if len(classes) != outputs or len(classes) != info.num_classes:
        raise EmonetError(f"bundle {bundle}: {len(classes)} class names for a head with {outputs} outputs")
    corpus_meta = json.loads((bundle / "corpus.json").read_text())
    try:
        same = (typed.from_dict(FrontendConfig, meta["frontend"]) == model.cfg.frontend
                and typed.from_dict(ModelConfig, corpus_meta["config"]) == model.cfg)
    except (EmonetError, KeyError, TypeError) as exc:
        raise EmonetError(f"bundle {bundle}: unreadable frontend or model config ({str(exc)[:60]})") from None
    if not same:
        raise EmonetError(f"bundle {bundle}: its frontend or model config differs from the backbone's; use the "
                          "backbone the bundle was exported with")


# ---------------------------------------------------------------------------------------------------------------
# MLflow: bounded in time, temporary downloads removed
# ---------------------------------------------------------------------------------------------------------------
@contextmanager
def mlflow_download(uri: str, tracking_uri: str | None, what: str) -> Iterator[Path]:
    """An MLflow ``runs:/`` or ``models:/`` artifact in a temporary directory that is removed on exit."""
    if not isinstance(uri, str) or not uri.startswith(("runs:/", "models:/")):
        raise EmonetError(f"{what} location {str(uri)[:60]!r} is not a runs:/ or models:/ URI")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    probe_tracking_server(tracking_uri, hint=NO_SERVER_HINT)  # before importing mlflow: fails in seconds
    import mlflow
    with tempfile.TemporaryDirectory(prefix="emonet-") as tmp:
        with http_limits():
            try:
                path = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp, tracking_uri=tracking_uri))
            except Exception as exc:  # noqa: BLE001 - registry and store errors vary
                raise EmonetError(f"cannot fetch {what} {uri[:60]} from MLflow at {server_of(tracking_uri)} "
                                  f"({str(exc)[:80]}); is the tracking URI right?") from None
        yield path


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------
def _local_backbone(bundle: Path, meta: dict, backbone: str | Path | None) -> Path | None:
    """The backbone directory on disk: explicit, next to the bundle, or its recorded path."""
    candidates = [Path(backbone)] if backbone else []
    candidates += [bundle / "backbone", bundle.parent / "backbone", bundle.parent.parent / "backbone"]
    if isinstance(meta.get("backbone_path"), str):
        candidates.append(Path(meta["backbone_path"]))
    return next((c for c in candidates if (c / "backbone.json").is_file()), None)


def _backbone_of(bundle: Path, meta: dict, backbone: str | Path | None) -> tuple[EmoNet, str]:
    """The bundle's backbone model and where it came from (a local one first, else its MLflow URI)."""
    where = _local_backbone(bundle, meta, backbone)
    if where is not None:
        return load_backbone(where), str(where)
    if meta.get("backbone_uri"):
        with mlflow_download(meta["backbone_uri"], meta.get("tracking_uri"), "backbone") as where:
            return load_backbone(where), meta["backbone_uri"]
    raise EmonetError(f"cannot find the backbone of bundle {bundle} (sha256 {str(meta['backbone_sha256'])[:12]}...); "
                      "pass --backbone DIR")


def load_bundle(bundle: str | Path, backbone: str | Path | None = None, device: str | torch.device = "cpu"
                ) -> tuple[EmoNet, str, dict]:
    """The model (backbone + this corpus) ready for inference, the corpus name, and the bundle metadata."""
    bundle = Path(bundle)
    meta = read_bundle_meta(bundle)
    verify_bundle(bundle, meta)
    model, where = _backbone_of(bundle, meta, backbone)
    if backbone_hash(model) != meta["backbone_sha256"]:
        raise EmonetError(f"bundle {bundle} was trained on backbone {str(meta['backbone_sha256'])[:12]}..., but "
                          f"{where[:60]} holds {backbone_hash(model)[:12]}...; use the backbone the bundle was "
                          "exported with")
    try:
        name = load_corpus(model, bundle)
    except RuntimeError as exc:  # load_state_dict(strict=True): a tensor missing or of the wrong shape
        raise EmonetError(f"bundle {bundle}: corpus.safetensors does not fit corpus.json ({str(exc)[:80]})") from None
    check_against_weights(bundle, meta, model, name)
    return model.to(device).eval(), name, meta


@contextmanager
def open_bundle(ref: str) -> Iterator[Path]:
    """A local bundle directory for a path, ``runs:/<id>/<path>`` or ``models:/<name>/<version>`` reference;
    a downloaded one lives in a temporary directory removed when the ``with`` block ends."""
    if ref.startswith(("runs:/", "models:/")):
        with mlflow_download(ref, None, "bundle") as path:
            yield path
        return
    path = Path(ref)
    if not path.is_dir():
        raise EmonetError(f"bundle {ref[:60]} does not exist; pass a bundle directory, runs:/RUN_ID/bundles/NAME or "
                          "models:/NAME/VERSION")
    yield path


def register_bundle(bundle: str | Path, name: str, tracking_uri: str, run_id: str | None = None) -> int:
    """Put a bundle into the MLflow model registry as a new version of ``name``; returns the version.

    The bundle's files are logged as artifacts of ``run_id`` (the training run by default) under
    ``registered/<name>``; the version carries the corpus name and label set as tags.
    """
    bundle = Path(bundle)
    meta = read_bundle_meta(bundle)
    verify_bundle(bundle, meta)
    probe_tracking_server(tracking_uri)
    client = tracking_client(tracking_uri)
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
