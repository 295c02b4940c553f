"""Audio I/O and conversion, in one place for every stage (prepare, shard, stream, predict).

soundfile does the reading and writing (torchaudio 2.9's load/save need torchcodec); torchaudio does the
resampling. Waveforms are float32 numpy arrays shaped ``(frames,)`` once they are mono.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import short


class AudioError(Exception):
    """The file could not be read as audio; the message is the reason shown in reports."""


@lru_cache(maxsize=1)
def audio_extensions() -> frozenset[str]:
    """Lower-case extensions (with dot) of every format this libsndfile can read, e.g. ``.wav``, ``.flac``."""
    exts = {f".{k.lower()}" for k in sf.available_formats()} - {".raw"}  # headerless: needs rate/format
    # Usual extensions that libsndfile names differently.
    exts |= {".aif", ".oga", ".opus"} if ".aiff" in exts and ".ogg" in exts else {".aif"}
    return frozenset(exts)


def is_audio_file(path: Path) -> bool:
    return path.suffix.lower() in audio_extensions()


def read_audio(path: str | Path, check_frames: bool = True) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 ``(frames, channels)``.

    Raises :class:`AudioError` with a readable reason for empty, unreadable, corrupt or truncated files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioError(f"cannot access file: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            expected, sr = f.frames, f.samplerate
            data = f.read(dtype="float32", always_2d=True)
    except PermissionError as exc:
        raise AudioError(f"cannot open file: {exc.strerror}") from None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"not decodable audio: {short(exc, 200)}") from None
    if data.shape[0] == 0:
        raise AudioError("no audio samples (0 frames)")
    if check_frames and data.shape[0] < expected:
        raise AudioError(f"truncated: header promises {expected} frames, only {data.shape[0]} decode")
    if not np.isfinite(data).all():
        raise AudioError("audio holds NaN or infinite samples")
    return data, sr


def probe_audio(path: str | Path, decode: bool = True) -> tuple[float, int, int]:
    """``(duration_s, sample_rate, channels)``; with ``decode`` the whole file is read to catch corruption."""
    if decode:
        data, sr = read_audio(path)
        return data.shape[0] / sr, sr, data.shape[1]
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise AudioError("empty file (0 bytes)")
        info = sf.info(str(path))
    except AudioError:
        raise
    except PermissionError as exc:
        raise AudioError(f"cannot open file: {exc.strerror}") from None
    except OSError as exc:
        raise AudioError(f"cannot access file: {exc.strerror or exc}") from None
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"not decodable audio: {short(exc, 200)}") from None
    if info.frames <= 0:
        raise AudioError("no audio samples (0 frames)")
    return info.frames / info.samplerate, info.samplerate, info.channels


def to_mono(data: np.ndarray) -> np.ndarray:
    """``(frames, channels)`` -> ``(frames,)`` by averaging channels."""
    if data.ndim == 1:
        return data
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with torchaudio (sinc interpolation, Kaiser window)."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), orig_sr, target_sr,
                      lowpass_filter_width=16, rolloff=0.945, resampling_method="sinc_interp_kaiser", beta=8.555)
    return out.numpy()


def load_mono(path: str | Path, target_sr: int) -> np.ndarray:
    """Read any supported file as mono float32 at ``target_sr``."""
    data, sr = read_audio(path)
    return resample(to_mono(data), sr, target_sr)


def encode_flac(wave: np.ndarray, sr: int) -> bytes:
    """Mono float32 in [-1, 1] -> 16-bit FLAC bytes (lossless for 16-bit sources)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Encoded audio bytes (FLAC, WAV, ...) -> mono float32 ``(frames,)`` and its rate."""
    wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return to_mono(wave), sr
