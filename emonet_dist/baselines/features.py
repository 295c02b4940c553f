"""eGeMAPS functionals per utterance with openSMILE (Eyben et al. 2016; EmoNet paper section 4.1), cached.

Every utterance becomes the 88 eGeMAPSv02 functionals of its whole signal, read as 16 kHz mono (the rate the
shards and the neural models use). Extraction costs about 0.05-0.2 s of CPU per utterance, so the features of a
corpus are cached in one ``.npz`` under ``cache_dir``, keyed by the feature set, the sample rate, the openSMILE
version and every file's path, size and modification time — not by partitions, so re-partitioning a corpus
reuses its features, while a replaced audio file invalidates them.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import atomic
from ..corpora.manifest import Utterance
from ..errors import EmonetError
from ..progress import Progress

FEATURE_SET = "eGeMAPSv02"
SAMPLE_RATE = 16000
"""Hz; audio at other rates is resampled first (emonet_dist.audio.load_mono)."""

_SMILE = None  # one openSMILE instance per worker process (building it parses the config: ~0.3 s)


def _smile():
    global _SMILE
    if _SMILE is None:
        import opensmile

        _SMILE = opensmile.Smile(feature_set=opensmile.FeatureSet[FEATURE_SET],
                                 feature_level=opensmile.FeatureLevel.Functionals)
    return _SMILE


def feature_names() -> list[str]:
    """The 88 functional names, in column order."""
    return list(_smile().feature_names)


def _extract(args: tuple[str, int]) -> np.ndarray | str:
    """``(path, sample_rate)`` -> float32 ``(88,)`` functionals, or the reason the file failed."""
    from ..audio import AudioError, load_mono

    path, sr = args
    try:
        wave = load_mono(path, sr)
        return _smile().process_signal(wave, sr).to_numpy(dtype=np.float32).reshape(-1)
    except AudioError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - openSMILE raises plain RuntimeError/OSError on bad input
        return f"openSMILE failed: {' '.join(str(exc).split())[:200] or type(exc).__name__}"


def cache_key(paths: list[str], sample_rate: int = SAMPLE_RATE) -> str:
    """sha256 over the feature set, rate, openSMILE version and each file's (path, size, mtime_ns)."""
    from importlib.metadata import version

    h = hashlib.sha256(json.dumps([FEATURE_SET, sample_rate, version("opensmile")]).encode())
    for p in sorted(paths):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _load_cache(path: Path, paths: list[str]) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            index = {p: i for i, p in enumerate(z["paths"].tolist())}
            x = z["features"]
        return x[[index[p] for p in paths]]
    except (OSError, KeyError, ValueError):  # missing, partial or foreign file: extract again
        return None


def _save_cache(path: Path, paths: list[str], x: np.ndarray) -> None:
    # atomic: concurrent runs on the same corpus never read a half-written cache
    with atomic.replacing(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" then
        np.savez(f, paths=np.asarray(paths), features=x, names=np.asarray(feature_names()))


def extract_all(paths: list[str], jobs: int = 0, label: str = "egemaps", sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Functionals of every file, in order: float32 ``(N, 88)``.

    Args:
        paths: audio files (any rate and channel count libsndfile reads).
        jobs: worker processes; 0 uses every core. openSMILE runs single-threaded, so processes are what
            parallelises it.
    Raises:
        EmonetError naming every file that could not be processed (manifests only list decodable files, so
        this means the corpus changed since ``emonet corpus prepare``).
    """
    jobs = jobs or os.cpu_count() or 1
    prog = Progress(label, len(paths), "files")
    items = [(p, sample_rate) for p in paths]
    out: list[np.ndarray | str] = []
    if jobs == 1 or len(paths) < 32:  # a pool costs ~1 s to start: not worth it for a handful of files
        for it in items:
            out.append(_extract(it))
            prog.update()
    else:
        with ProcessPoolExecutor(jobs) as pool:
            for res in pool.map(_extract, items, chunksize=8):
                out.append(res)
                prog.update()
    prog.close()
    failed = [(p, r) for p, r in zip(paths, out) if isinstance(r, str)]
    if failed:
        shown = "; ".join(f"{p}: {r}" for p, r in failed[:3])
        raise EmonetError(f"eGeMAPS extraction failed for {len(failed)} file(s): {shown}; re-run "
                          "`emonet corpus prepare` if the corpus changed")
    return np.stack(out).astype(np.float32)


def corpus_features(rows: list[Utterance], cache_dir: str | Path, jobs: int = 0,
                    sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, dict]:
    """Features of a corpus's rows, in row order, from the cache when it matches.

    Returns:
        ``(X, info)``: X float32 ``(N, 88)``; info holds ``cache`` (file), ``cached`` (bool), ``seconds``
        (extraction wall time, 0 on a hit) and ``nonfinite`` (values set to 0; openSMILE gives NaN for some
        functionals of fully unvoiced or silent signals).
    """
    import time

    corpus = rows[0].corpus
    paths = [r.path for r in rows]
    key = cache_key(paths, sample_rate)
    path = Path(cache_dir).expanduser().resolve() / f"{corpus.replace('/', '-')}-{key[:16]}.npz"
    x = _load_cache(path, paths)
    info = {"cache": str(path), "cached": x is not None, "seconds": 0.0}
    if x is None:
        t0 = time.monotonic()
        x = extract_all(paths, jobs, label=f"egemaps {corpus}", sample_rate=sample_rate)
        info["seconds"] = round(time.monotonic() - t0, 2)
        _save_cache(path, paths, x)
    bad = ~np.isfinite(x)
    info["nonfinite"] = int(bad.sum())
    if info["nonfinite"]:
        x = np.where(bad, 0.0, x).astype(np.float32)
    return x, info
