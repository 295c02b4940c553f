"""``emonet demo``: the whole method on the built-in synthetic corpora, in one command.

Steps that exist today: build the synthetic corpora, shard them, verify the shards, and stream a few batches
per corpus through the per-rank loader. Multi-corpus pretraining, adapter transfer and the significance
report are added by the training and evaluation issues.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import Config, PrepareConfig, ShardConfig


def run_demo(out: Path, cfg: Config | None = None) -> dict:
    from .corpora.synth import build_synthetic
    from .data.loader import CorpusLoader
    from .data.shards import shard_corpora, verify
    from .data.stream import CorpusStream, shard_list

    cfg = cfg or Config()
    t0 = time.time()
    out = Path(out).resolve()
    print(f"[demo 1/3] building the synthetic corpora in {out / 'corpora'}", flush=True)
    reports = build_synthetic(out / "corpora", seed=cfg.seed, cfg=PrepareConfig(jobs=cfg.prepare.jobs))
    print(f"[demo 2/3] sharding {len(reports)} corpora into {out / 'shards'}", flush=True)
    shard_corpora([out / "corpora" / name for name in reports], out / "shards",
                  ShardConfig(samples_per_shard=64, jobs=cfg.shard.jobs))
    checked, problems = verify(out / "shards")
    print(f"           verified {checked} shards, {len(problems)} problem(s)", flush=True)
    print("[demo 3/3] streaming one exact epoch of each corpus's train partition (1 rank, 1 loader worker)",
          flush=True)
    summary = {}
    for name in reports:
        sl = shard_list(str(out / "shards"), name, ["train"])
        targets = {c: i for i, c in enumerate(sorted(set(sl.labels)))}
        stream = CorpusStream(sl, targets, batch_size=cfg.data.batch_size, max_seconds=cfg.data.max_seconds)
        loader = CorpusLoader(stream, num_workers=1)
        n = sum(len(next(loader)["ids"]) for _ in range(stream.batches_per_epoch()))
        loader.close()
        summary[name] = n
        print(f"           {name}: {n} utterances in {stream.batches_per_epoch()} batches", flush=True)
    print(f"demo finished in {time.time() - t0:.0f}s. Training, transfer and the significance report are not "
          "part of the demo yet (see README: status).", flush=True)
    return summary
