"""Small builders shared by tests: real audio files and paths to the shared corpora."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED_DATA = Path(os.environ.get("EMONET_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


def write_tone(path: str | Path, seconds: float = 0.5, sr: int = 16000, channels: int = 1, freq: float = 220.0,
               seed: int = 0) -> Path:
    """Write a short real audio file (tone + a little noise); the format follows the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    sf.write(str(path), data.astype(np.float32), sr)
    return path


def shared_corpus(name: str) -> Path:
    """Path of a real corpus in ../shared/data; skips the test with a reason when it is absent."""
    root = SHARED_DATA / name
    if not (root / "reference_manifest.csv").is_file():
        pytest.skip(f"real corpus {name} not found at {root} (../shared/data is only present on the project "
                    "machines and in CI; set EMONET_SHARED_DATA to point elsewhere)")
    return root
