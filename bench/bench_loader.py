"""Loader benchmark: streaming throughput against raw soundfile decoding of the same audio.

Both sides decode the same utterances of one corpus's train partition in one process (one core):

* raw: ``soundfile.read`` of every source file (16 kHz FLAC);
* loader: one exact epoch of :class:`CorpusStream` over the WebDataset shards of the same corpus (tar reading,
  FLAC decoding, JSON metadata, crop, zero-padded batching), with ``max_seconds`` long enough that nothing is
  cropped, so both do the same decoding work.

Target (issue 2): ratio loader/raw >= 0.8. The runs alternate and the best of ``--repeats`` is kept for each side,
so background load affects both alike. Also printed: throughput with 2 loader workers (utterances/s per core).

    python bench/bench_loader.py [--corpus ravdess] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from emonet_dist.config import PrepareConfig, ShardConfig
from emonet_dist.corpora.manifest import read_manifest
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_dist.data.loader import CorpusLoader
from emonet_dist.data.shards import shard_corpus
from emonet_dist.data.stream import CorpusStream, shard_list

SHARED = Path(os.environ.get("EMONET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def raw_epoch(paths: list[str]) -> float:
    t = time.perf_counter()
    for p in paths:
        sf.read(p, dtype="float32")
    return len(paths) / (time.perf_counter() - t)


def loader_epoch(shards: Path, corpus: str, workers: int, epochs: int = 1) -> float:
    sl = shard_list(str(shards), corpus, ["train"])
    targets = {c: i for i, c in enumerate(sorted(set(sl.labels)))}
    st = CorpusStream(sl, targets, batch_size=32, max_seconds=3600.0, window=256)
    loader = CorpusLoader(st, num_workers=workers)
    n_batches = st.batches_per_epoch() * epochs
    if workers:
        next(loader)  # worker start-up (fork) is a one-off cost, not throughput
        n_batches -= 1
    t = time.perf_counter()
    n = sum(len(next(loader)["ids"]) for _ in range(n_batches))
    rate = n / (time.perf_counter() - t)
    loader.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="ravdess")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = SHARED / args.corpus / "audio"
        if not raw.is_dir():
            sys.exit(f"{raw} not found: this benchmark uses the real corpora in ../shared/data")
        prepare_corpus(args.corpus, raw, tmp / args.corpus, PrepareConfig())
        shard_corpus(tmp / args.corpus, tmp / "shards", ShardConfig(samples_per_shard=256))
        paths = [r.path for r in read_manifest(tmp / args.corpus) if r.partition == "train"]
        raw_rates, loader_rates = [], []
        for _ in range(args.repeats):
            raw_rates.append(raw_epoch(paths))
            loader_rates.append(loader_epoch(tmp / "shards", args.corpus, workers=0))
        two = max(loader_epoch(tmp / "shards", args.corpus, workers=2, epochs=3) for _ in range(2))
    best_raw, best_loader = max(raw_rates), max(loader_rates)
    print(f"corpus {args.corpus}: {len(paths)} train utterances, {args.repeats} alternating runs")
    print(f"raw soundfile decode : {best_raw:8.1f} utt/s (runs: {', '.join(f'{r:.0f}' for r in raw_rates)})")
    runs = ", ".join(f"{r:.0f}" for r in loader_rates)
    print(f"loader, 1 process    : {best_loader:8.1f} utt/s per core (runs: {runs})")
    print(f"loader, 2 workers    : {two:8.1f} utt/s total, {two / 2:.1f} per core (3 epochs, persistent workers)")
    print(f"ratio loader/raw     : {best_loader / best_raw:.3f} (target >= 0.8)")


if __name__ == "__main__":
    main()
