"""Loader benchmark: streaming throughput against raw soundfile decoding of the same audio.

Both sides decode the same utterances of one corpus's train partition in one process (one core):

* raw: ``soundfile.read`` of every source file (16 kHz FLAC);
* loader: one exact epoch of :class:`CorpusStream` over the WebDataset shards of the same corpus (tar reading,
  FLAC decoding, JSON metadata, crop, zero-padded batching), with ``max_seconds`` long enough that nothing is
  cropped, so both do the same decoding work.

Target (issue 2): ratio loader/raw >= 0.8. The runs alternate and the best of ``--repeats`` is kept for each side,
so background load affects both alike. Also printed: throughput with 2 loader workers (utterances/s per core).

Then what one training rank's loader gives against what its training steps consume (issue 15):

* loader: the training loader of one rank exactly as the loop builds it (``train_loader``: the paper's batch of
  64 and 5 s crops, ``data.max_seconds=5``, ``--workers`` loader processes prefetching ``data.prefetch_factor``
  batches, pinned memory when a GPU is present), in utterances per second;
* steps: the loop's ``train_step`` at the paper's widths on 64 x 5 s batches on this machine's device (the GPU if
  there is one, else the CPU with ``--step-threads`` threads), in utterances per second;
* their ratio: above 1, the loader keeps up with the steps it must feed.

    python bench/bench_loader.py [--corpus ravdess] [--repeats 3] [--workers 1] [--step-threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

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


def rank_loader_rate(shards: Path, corpus: str, workers: int, device: torch.device, batches: int = 30,
                     batch_size: int = 64, max_seconds: float = 5.0) -> float:
    """One rank's training loader as the loop builds it (``train_loader`` with the paper's batch and crops, pinned
    for ``device``): utterances per second over ``batches`` batches after the first (worker start-up)."""
    from emonet_dist.config import CorpusConfig, DataConfig
    from emonet_dist.train.streams import corpus_data, train_loader

    data = DataConfig(shards=str(shards), corpora=(CorpusConfig(name=corpus),), batch_size=batch_size,
                      max_seconds=max_seconds, num_workers=workers)
    loader = train_loader(corpus_data(data.shards, data.corpora[0], data.seed), data, 0, 1, device=device)
    try:
        next(loader)
        t = time.perf_counter()
        n = sum(len(next(loader)["ids"]) for _ in range(batches))
        return n / (time.perf_counter() - t)
    finally:
        loader.close()


def step_rate(device: torch.device, threads: int, steps: int = 3) -> float:
    """Utterances per second of the loop's ``train_step`` at the paper's widths on 64 x 5 s batches."""
    from gpu_check import step_throughput

    torch.set_num_threads(threads)
    precision = "auto" if device.type == "cuda" else "fp32"
    return step_throughput(device, precision, batch=64, seconds=5.0, steps=steps, warmup=1)["utt_per_s"]


def feed(shards: Path, corpus: str, workers: int, threads: int) -> None:
    """Print one rank's loader rate at 5 s crops next to the step rate it must feed, and their ratio."""
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    loader = rank_loader_rate(shards, corpus, workers, device)
    steps = step_rate(device, threads)
    print(f"one rank, batch 64 x 5 s crops (data.max_seconds=5), {workers} loader worker(s), on {device}:")
    how = "auto precision" if device.type == "cuda" else f"fp32, {threads} thread(s)"
    print(f"  loader         : {loader:8.1f} utt/s")
    print(f"  train steps    : {steps:8.1f} utt/s (the loop's train_step at the paper's widths, {how})")
    print(f"  loader / steps : {loader / steps:8.2f} (>= 1: the loader keeps up)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="ravdess")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="loader processes of the rank (data.num_workers)")
    ap.add_argument("--step-threads", type=int, default=1, help="torch threads of the CPU training steps")
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
        print_decode(args, paths, raw_rates, loader_rates, two)
        feed(tmp / "shards", args.corpus, args.workers, args.step_threads)


def print_decode(args, paths: list[str], raw_rates: list[float], loader_rates: list[float], two: float) -> None:
    best_raw, best_loader = max(raw_rates), max(loader_rates)
    print(f"corpus {args.corpus}: {len(paths)} train utterances, {args.repeats} alternating runs")
    print(f"raw soundfile decode : {best_raw:8.1f} utt/s (runs: {', '.join(f'{r:.0f}' for r in raw_rates)})")
    runs = ", ".join(f"{r:.0f}" for r in loader_rates)
    print(f"loader, 1 process    : {best_loader:8.1f} utt/s per core (runs: {runs})")
    print(f"loader, 2 workers    : {two:8.1f} utt/s total, {two / 2:.1f} per core (3 epochs, persistent workers)")
    print(f"ratio loader/raw     : {best_loader / best_raw:.3f} (target >= 0.8)")


if __name__ == "__main__":
    main()
