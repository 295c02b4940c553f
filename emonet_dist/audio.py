"""Audio I/O and conversion, in one place for every stage (prepare, shard, stream, predict).

soundfile does the reading and writing (torchaudio 2.9's load/save need torchcodec); torchaudio does the
resampling. Waveforms are float32 numpy arrays shaped ``(frames,)`` once they are mono.
"""

from __future__ import annotations

import io
import math
import stat
from collections.abc import Iterator
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
    _check_file(path, check_frames)
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
    _check_file(path, check_frames=True)
    try:
        info = sf.info(str(path))
    except PermissionError as exc:
        raise AudioError(f"cannot open file: {exc.strerror}") from None
    except OSError as exc:
        raise AudioError(f"cannot access file: {exc.strerror or exc}") from None
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"not decodable audio: {short(exc, 200)}") from None
    if info.frames <= 0:
        raise AudioError("no audio samples (0 frames)")
    return info.frames / info.samplerate, info.samplerate, info.channels


def _check_file(path: Path, check_frames: bool) -> None:
    """Refuse a file that is missing, unreadable, empty or (WAV) truncated, before libsndfile sees it.

    libsndfile quietly shortens a WAV whose data chunk claims more bytes than the file holds, so truncation of
    WAV files is detected here from the RIFF header; other formats fail to decode when cut.
    """
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO or device would block or never end
            raise AudioError("not a regular file")
        size = st.st_size
        with open(path, "rb") as f:
            head = f.read(_WAV_HEAD_BYTES) if check_frames and path.suffix.lower() == ".wav" else b""
    except PermissionError as exc:
        raise AudioError(f"permission denied: cannot read the file ({exc.strerror})") from None
    except OSError as exc:
        raise AudioError(f"cannot access file: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    promised = _wav_promised_frames(head, size)
    if promised is not None and promised[0] > promised[1]:
        raise AudioError(f"truncated: header promises {promised[0]} frames, the file holds {promised[1]}")


_WAV_HEAD_BYTES = 8192  # fmt and data chunk headers sit at the start (after at most small metadata chunks)


def _wav_promised_frames(head: bytes, size: int) -> tuple[int, int] | None:
    """``(frames the data chunk declares, frames the file holds)`` of a RIFF/WAVE file, or None if unknown."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None  # RF64/W64 or not WAV at all: libsndfile decides
    pos, block = 12, 0
    while pos + 8 <= len(head):
        cid, n = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"fmt " and pos + 22 <= len(head):
            block = int.from_bytes(head[pos + 20:pos + 22], "little")  # bytes per frame, all channels
        elif cid == b"data":
            if not block or n in (0, 0xFFFFFFFF):  # streamed WAVs leave the size unset
                return None
            return n // block, max(size - pos - 8, 0) // block
        pos += 8 + n + (n & 1)  # chunks are padded to even sizes
    return None


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


# ---------------------------------------------------------------------------------------------------------------
# streaming (``emonet predict``): memory bounded by the block size, whatever the file's length
# ---------------------------------------------------------------------------------------------------------------
STREAM_BLOCK_FRAMES = 1 << 16
"""Frames decoded per read (about 4 s at 16 kHz, 1.5 s at 44.1 kHz)."""


class StreamResampler:
    """:func:`resample`, fed block by block, with the same output as resampling the whole signal at once.

    torchaudio's resampler is a strided convolution: with both rates divided by their gcd (``orig``, ``new``),
    the signal is zero-padded by ``width`` samples on the left and ``width + orig`` on the right, and output
    group ``j`` (``new`` samples) reads padded input ``[j*orig, j*orig + 2*width + orig)``. Carrying the input a
    group still needs over to the next block gives every group exactly the input it gets from the whole-file
    call, so blocks leave no edge artefacts; only the convolution's float summation order may differ (~1e-7).
    """

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        self.identity = orig_sr == target_sr
        if self.identity:
            return
        import torch
        import torchaudio

        rs = torchaudio.transforms.Resample(orig_sr, target_sr, lowpass_filter_width=16, rolloff=0.945,
                                            resampling_method="sinc_interp_kaiser", beta=8.555, dtype=torch.float32)
        self.kernel, self.width = rs.kernel, rs.width  # the kernel :func:`resample` builds (float32), (new, 1, K)
        self.orig, self.new = orig_sr // rs.gcd, target_sr // rs.gcd
        self.pending = np.zeros(self.width, np.float32)  # the left zero padding, then input not yet consumed
        self.n_in = self.n_out = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Resampled samples that ``x`` (mono float32, the next part of the signal) completes."""
        if self.identity:
            return x.astype(np.float32, copy=False)
        self.n_in += len(x)
        self.pending = np.concatenate([self.pending, x.astype(np.float32, copy=False)])
        return self._groups()

    def flush(self) -> np.ndarray:
        """The last samples, after the right zero padding; output length ``ceil(n_in * new / orig)`` in all."""
        if self.identity:
            return np.zeros(0, np.float32)
        self.pending = np.concatenate([self.pending, np.zeros(self.width + self.orig, np.float32)])
        out = self._groups()
        # torchaudio's own rule for the output length (float division, then ceil)
        keep = math.ceil(self.new * self.n_in / self.orig) - (self.n_out - len(out))
        return out[:max(keep, 0)]

    def _groups(self) -> np.ndarray:
        import torch

        k = 2 * self.width + self.orig
        if len(self.pending) < k:
            return np.zeros(0, np.float32)
        m = (len(self.pending) - k) // self.orig + 1
        x = torch.from_numpy(self.pending[: (m - 1) * self.orig + k])[None, None]
        y = torch.nn.functional.conv1d(x, self.kernel, stride=self.orig)  # (1, new, m)
        self.pending = self.pending[m * self.orig:].copy()
        out = y[0].transpose(0, 1).reshape(-1).numpy()
        self.n_out += len(out)
        return out


def stream_mono(path: str | Path, target_sr: int, block_frames: int = STREAM_BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Read a file block by block as mono float32 at ``target_sr`` (what :func:`load_mono` returns, in pieces).

    Raises :class:`AudioError` with the same reasons as :func:`read_audio`; a truncated or corrupt file may
    raise only after some blocks were yielded, so callers discard what they computed from them.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioError(f"cannot access file: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        f = sf.SoundFile(str(path))
    except PermissionError as exc:
        raise AudioError(f"cannot open file: {exc.strerror}") from None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"not decodable audio: {short(exc, 200)}") from None
    with f:
        expected, rs, got = f.frames, StreamResampler(f.samplerate, target_sr), 0
        while True:
            try:
                data = f.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                raise AudioError(f"not decodable audio: {short(exc, 200)}") from None
            if data.shape[0] == 0:
                break
            if not np.isfinite(data).all():
                raise AudioError("audio holds NaN or infinite samples")
            got += data.shape[0]
            out = rs.push(to_mono(data))
            if len(out):
                yield out
        if got == 0:
            raise AudioError("no audio samples (0 frames)")
        if got < expected:
            raise AudioError(f"truncated: header promises {expected} frames, only {got} decode")
        out = rs.flush()
        if len(out):
            yield out
