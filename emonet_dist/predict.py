"""``emonet predict``: label audio files with an adapter bundle.

Any file libsndfile reads, at any sample rate, mono or stereo, of any length: audio is down-mixed and resampled
to the bundle's frontend rate; long files are cut into chunks of at most ``chunk_seconds`` whose posteriors are
averaged (weighted by chunk length). With an emotion bundle whose classes all appear in the arousal/valence
map (paper Table 2), the class posteriors are also summed into arousal and valence posteriors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .audio import AudioError, is_audio_file, load_mono
from .corpora import av
from .errors import CorpusError
from .progress import Progress


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Audio files from files and directories (recursively, sorted); missing inputs are reported, not fatal."""
    files, missing = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file() and is_audio_file(q))
        elif p.exists() or p.is_symlink():
            files.append(p)
        else:
            missing.append((item, "no such file or directory"))
    return files, missing


def av_groups(classes: list[str]) -> dict[str, dict[str, list[int]]] | None:
    """``{"arousal": {"low": [class indices], ...}, "valence": {...}}`` or None if a class has no mapping."""
    try:
        out = {}
        for task, names in av.CLASSES.items():
            out[task] = {n: [i for i, c in enumerate(classes) if av.map_label(c, task) == n] for n in names}
        return out
    except CorpusError:
        return None


@torch.no_grad()
def predict_wave(model, corpus: str, wave: np.ndarray, chunk: int, device) -> np.ndarray:
    """Posteriors ``(C,)`` of one mono 16 kHz waveform: chunks of at most ``chunk`` samples, averaged."""
    starts = list(range(0, max(len(wave), 1), chunk))
    pieces = [wave[s:s + chunk] for s in starts]
    if len(pieces) > 1 and len(pieces[-1]) < chunk // 4:  # a short tail joins the previous chunk
        pieces[-2] = np.concatenate([pieces[-2], pieces.pop()])
    lengths = torch.tensor([len(p) for p in pieces])
    batch = torch.zeros(len(pieces), int(lengths.max()))
    for i, p in enumerate(pieces):
        batch[i, : len(p)] = torch.from_numpy(p)
    probs = torch.softmax(model(batch.to(device), lengths.to(device), corpus).float(), -1).cpu().numpy()
    w = lengths.numpy() / lengths.sum().item()
    return (probs * w[:, None]).sum(0)


def predict_files(model, corpus: str, meta: dict, files: list[Path], chunk_seconds: float = 10.0,
                  device="cpu") -> tuple[list[dict], list[tuple[str, str]]]:
    """One result per readable file, and ``(file, reason)`` for every file that could not be read."""
    sr = meta["frontend"]["sample_rate"]
    classes = list(meta["classes"])
    groups = av_groups(classes) if meta.get("task", "emotion") == "emotion" else None
    results, failed = [], []
    prog = Progress("predict", len(files), "files", enabled=len(files) > 1)
    for path in files:
        prog.update()
        try:
            wave = load_mono(path, sr)
        except AudioError as exc:
            failed.append((str(path), str(exc)))
            continue
        p = predict_wave(model, corpus, wave, int(chunk_seconds * sr), device)
        row = {"file": str(path), "label": classes[int(p.argmax())], "confidence": float(p.max()),
               "seconds": round(len(wave) / sr, 3), "probs": {c: float(x) for c, x in zip(classes, p)}}
        if groups:
            for task, g in groups.items():
                probs = {n: float(p[idx].sum()) for n, idx in g.items()}
                row[task] = max(probs, key=probs.get)
                row[f"{task}_probs"] = probs
        results.append(row)
    prog.close()
    return results, failed
