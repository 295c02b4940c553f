"""``emonet predict``: label audio files with an adapter bundle.

Any file libsndfile reads, at any sample rate, mono or stereo, of any length: audio is down-mixed and resampled
to the bundle's frontend rate; long files are cut into chunks of at most ``chunk_seconds`` whose posteriors are
averaged (weighted by chunk length). With an emotion bundle whose classes all appear in the arousal/valence
map (paper Table 2), the class posteriors are also summed into arousal and valence posteriors.

Memory does not grow with a file's length: the file is decoded and resampled in blocks
(:func:`emonet_dist.audio.stream_mono`), cut into chunks as it streams, and the model sees at most
``batch_chunks`` chunks at a time. The chunk layout is the one of cutting the whole waveform (chunks of
``chunk`` samples from the start; a tail shorter than ``chunk // 4`` joins the previous chunk), and the
frontend is exactly padding-invariant, so the result equals the one-batch computation up to float rounding.

One bad file (unreadable, empty, shorter than one STFT window, corrupt, or failing in the model) is reported
with its path and reason; every other file still gets its result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from .audio import AudioError, is_audio_file, stream_mono
from .corpora import av
from .errors import CorpusError, EmonetError
from .progress import Progress

log = logging.getLogger(__name__)

BATCH_CHUNKS = 8
"""Chunks per forward pass (8 x 10 s by default): bounds the model's activations whatever the file's length."""


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


def chunk_samples(chunk_seconds: float, sample_rate: int, n_fft: int) -> int:
    """``chunk_seconds`` in samples, refused (one line) unless finite, > 0 and at least one STFT window long."""
    if not isinstance(chunk_seconds, (int, float)) or not math.isfinite(chunk_seconds) or chunk_seconds <= 0:
        raise EmonetError(f"--chunk-seconds must be a finite number > 0, got {str(chunk_seconds)[:20]}")
    chunk = int(chunk_seconds * sample_rate)
    if chunk < n_fft:
        raise EmonetError(f"--chunk-seconds {chunk_seconds:g} is shorter than one STFT window ({n_fft} samples at "
                          f"{sample_rate} Hz); use at least {n_fft / sample_rate:g}")
    return chunk


def split_chunks(blocks: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """Cut a stream of waveform blocks into chunks of ``chunk`` samples; a last piece shorter than
    ``chunk // 4`` joins the chunk before it. Holds at most ``chunk + chunk // 4`` samples plus one block.

    A chunk is only let go once at least ``chunk // 4`` samples follow it, because only then can no short
    tail join it; so the layout equals cutting the whole waveform at once.
    """
    tail = chunk // 4
    parts: list[np.ndarray] = []
    n = 0
    for block in blocks:
        parts.append(block)
        n += len(block)
        if n >= chunk + tail:
            buf, start = np.concatenate(parts), 0
            while n - start >= chunk + tail:
                yield buf[start:start + chunk]
                start += chunk
            parts, n = [buf[start:]], n - start
    if n:
        yield np.concatenate(parts)


@torch.no_grad()
def _batch_posteriors(model, corpus: str, pieces: list[np.ndarray], device, min_width: int) -> np.ndarray:
    """Sum over ``pieces`` of (posteriors x length), float64 ``(C,)``; one forward pass."""
    lengths = torch.tensor([len(p) for p in pieces])
    # Zero padding past each piece changes nothing (the frontend masks those frames); padding to at least one
    # window keeps the STFT's reflect padding valid when a batch holds only a short tail.
    batch = torch.zeros(len(pieces), max(int(lengths.max()), min_width))
    for i, p in enumerate(pieces):
        batch[i, : len(p)] = torch.from_numpy(np.ascontiguousarray(p))
    logits = model(batch.to(device), lengths.to(device), corpus)
    probs = torch.softmax(logits.float(), -1).cpu().double().numpy()
    return (probs * lengths.numpy()[:, None]).sum(0)


def predict_chunks(model, corpus: str, chunks: Iterable[np.ndarray], device, min_width: int = 0,
                   batch_chunks: int = BATCH_CHUNKS) -> tuple[np.ndarray, int]:
    """Length-weighted mean posteriors ``(C,)`` of ``chunks`` and their total length in samples.

    The model sees at most ``batch_chunks`` chunks per call; ``min_width`` is the smallest batch width (n_fft).
    """
    acc, total, batch = None, 0, []
    for piece in chunks:
        batch.append(piece)
        total += len(piece)
        if len(batch) == batch_chunks:
            s = _batch_posteriors(model, corpus, batch, device, min_width)
            acc, batch = s if acc is None else acc + s, []
    if batch:
        s = _batch_posteriors(model, corpus, batch, device, min_width)
        acc = s if acc is None else acc + s
    if acc is None:
        raise AudioError("no audio samples (0 frames)")
    return acc / total, total


def predict_wave(model, corpus: str, wave: np.ndarray, chunk: int, device, n_fft: int = 512,
                 batch_chunks: int = BATCH_CHUNKS) -> np.ndarray:
    """Posteriors ``(C,)`` of one mono waveform at the model's rate: chunks of at most ``chunk`` samples, averaged."""
    return predict_chunks(model, corpus, split_chunks([wave], chunk), device, n_fft, batch_chunks)[0]


def _long_enough(chunks: Iterator[np.ndarray], n_fft: int, sr: int) -> Iterator[np.ndarray]:
    """Refuse a file shorter than one STFT window (its first chunk is then the whole file)."""
    for i, piece in enumerate(chunks):
        if i == 0 and len(piece) < n_fft:
            raise AudioError(f"too short: {len(piece)} samples at {sr} Hz, need at least one STFT window "
                             f"({n_fft} samples, {1000 * n_fft / sr:g} ms)")
        yield piece


def predict_file(model, corpus: str, path: Path, sr: int, chunk: int, n_fft: int, device,
                 batch_chunks: int = BATCH_CHUNKS) -> tuple[np.ndarray, int]:
    """Posteriors ``(C,)`` and length in samples (at ``sr``) of one file, streamed; :class:`AudioError` if bad."""
    chunks = _long_enough(split_chunks(stream_mono(path, sr), chunk), n_fft, sr)
    return predict_chunks(model, corpus, chunks, device, n_fft, batch_chunks)


def _row(path: Path, p: np.ndarray, n: int, sr: int, classes: list[str], groups) -> dict:
    row = {"file": str(path), "label": classes[int(p.argmax())], "confidence": float(p.max()),
           "seconds": round(n / sr, 3), "probs": {c: float(x) for c, x in zip(classes, p)}}
    if groups:
        for task, g in groups.items():
            probs = {name: float(p[idx].sum()) for name, idx in g.items()}
            row[task] = max(probs, key=probs.get)
            row[f"{task}_probs"] = probs
    return row


def predict_files(model, corpus: str, meta: dict, files: list[Path], chunk_seconds: float = 10.0,
                  device="cpu", batch_chunks: int = BATCH_CHUNKS) -> tuple[list[dict], list[tuple[str, str]]]:
    """One result per good file, and ``(file, reason)`` for every file that could not be predicted."""
    sr, n_fft = int(meta["frontend"]["sample_rate"]), int(meta["frontend"]["n_fft"])
    chunk = chunk_samples(chunk_seconds, sr, n_fft)
    classes = list(meta["classes"])
    groups = av_groups(classes) if meta.get("task", "emotion") == "emotion" else None
    results, failed = [], []
    prog = Progress("predict", len(files), "files", enabled=len(files) > 1)
    for path in files:
        prog.update()
        try:
            p, n = predict_file(model, corpus, path, sr, chunk, n_fft, device, batch_chunks)
        except AudioError as exc:
            failed.append((str(path), str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one file's failure must not cost the others their results
            log.debug("prediction of %s failed", path, exc_info=True)
            reason = str(exc).replace("\n", " ").strip()[:120]
            failed.append((str(path), f"prediction failed: {type(exc).__name__}: {reason}"))
            continue
        results.append(_row(path, p, n, sr, classes, groups))
    prog.close()
    return results, failed
