"""Prediction memory benchmark: peak RSS of ``emonet predict`` on a 1-minute and a 1-hour 16 kHz file.

``emonet predict`` streams a file in blocks and runs the model on at most ``BATCH_CHUNKS`` chunks at a time, so
its peak memory should not grow with the file's length (issue 14, row 13: the old code decoded the whole file
and put every chunk through the model in one batch, 2.3 GB for one hour). Each run is ``python -m
emonet_dist.cli predict`` in its own process; its peak RSS is that process's ``ru_maxrss`` (from ``os.wait4``,
so one run's peak never hides another's). The files (tone + noise, 16-bit WAV, the long one written in blocks)
and a tiny bundle (the tests' width: stem 4, base 8; the network's width changes the per-batch activations, not
how they scale with the file) are built in a temporary directory.

Target (acceptance 5): peak RSS(1 h) - peak RSS(1 min) <= 300 MB.

    python bench/bench_predict_memory.py [--short-seconds 60] [--long-seconds 3600] [--chunk-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from emonet_dist.bundles import save_backbone, write_bundle
from emonet_dist.config import HeadConfig, ModelConfig, PoolingConfig
from emonet_dist.model.build import build_model
from emonet_dist.predict import BATCH_CHUNKS

SR = 16000
TARGET_MB = 300.0


def write_audio(path: Path, seconds: float, block_seconds: float = 60.0) -> Path:
    """A 16 kHz mono 16-bit WAV of ``seconds`` (tone + noise), written one block at a time."""
    rng = np.random.default_rng(0)
    total, block = int(seconds * SR), int(block_seconds * SR)
    with sf.SoundFile(str(path), "w", samplerate=SR, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, block):
            t = np.arange(start, min(start + block, total)) / SR
            f.write((0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return path


def build_bundle(root: Path, stem_width: int, base_width: int) -> Path:
    """A tiny emotion bundle with its backbone next to it (``root/backbone``, ``root/bundles/toy``)."""
    torch.manual_seed(0)
    cfg = ModelConfig(stem_width=stem_width, base_width=base_width, pooling=PoolingConfig(units=8),
                      head=HeadConfig(hidden=8))
    model = build_model(cfg)
    classes = ["angry", "happy", "neutral", "sad"]
    model.add_corpus("toy", len(classes), labels=classes)
    sha = save_backbone(model, root / "backbone")
    return write_bundle(model, "toy", root / "bundles" / "toy", {"task": "emotion", "classes": classes,
                                                                  "class_counts": [1] * 4, "backbone_sha256": sha})


def predict_peak_rss(bundle: Path, audio: Path, chunk_seconds: float, log: Path) -> tuple[float, float]:
    """``(peak RSS in MB, wall seconds)`` of one ``emonet predict`` process."""
    cmd = [sys.executable, "-m", "emonet_dist.cli", "predict", "--bundle", str(bundle), str(audio),
           "--chunk-seconds", str(chunk_seconds), "--format", "json"]
    t = time.perf_counter()
    with open(log, "w") as out:
        pid = os.posix_spawn(sys.executable, cmd, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1), (os.POSIX_SPAWN_DUP2, out.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"emonet predict failed on {audio.name}:\n{log.read_text()[-2000:]}")
    return usage.ru_maxrss / 1024, wall  # Linux reports kB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short-seconds", type=float, default=60.0, help="length of the short file (default 60)")
    ap.add_argument("--long-seconds", type=float, default=3600.0, help="length of the long file (default 3600)")
    ap.add_argument("--chunk-seconds", type=float, default=10.0, help="emonet predict --chunk-seconds (default 10)")
    ap.add_argument("--stem-width", type=int, default=4, help="bundle network stem width (default 4)")
    ap.add_argument("--base-width", type=int, default=8, help="bundle network base width (default 8)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        bundle = build_bundle(tmp / "run", args.stem_width, args.base_width)
        short = write_audio(tmp / "short.wav", args.short_seconds)
        long = write_audio(tmp / "long.wav", args.long_seconds)
        rss_short, t_short = predict_peak_rss(bundle, short, args.chunk_seconds, tmp / "short.log")
        rss_long, t_long = predict_peak_rss(bundle, long, args.chunk_seconds, tmp / "long.log")
        long_mb = long.stat().st_size / 1e6
    diff = rss_long - rss_short
    print(f"emonet predict, bundle width stem {args.stem_width} / base {args.base_width}, chunks of "
          f"{args.chunk_seconds:g} s, at most {BATCH_CHUNKS} chunks per forward pass")
    print(f"short file {args.short_seconds:7.0f} s: peak RSS {rss_short:7.1f} MB ({t_short:6.1f} s wall)")
    print(f"long file  {args.long_seconds:7.0f} s: peak RSS {rss_long:7.1f} MB ({t_long:6.1f} s wall; "
          f"{long_mb:.0f} MB of 16-bit WAV, {args.long_seconds * SR * 4 / 1e6:.0f} MB as float32)")
    print(f"difference: {diff:+.1f} MB; ratio long/short {rss_long / rss_short:.3f}; "
          f"length ratio {args.long_seconds / args.short_seconds:.0f}x")
    print(f"target (<= {TARGET_MB:.0f} MB): {'met' if diff <= TARGET_MB else 'NOT met'}")


if __name__ == "__main__":
    main()
