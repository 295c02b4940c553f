"""Scale benchmark: partition and index a VoxCeleb-sized manifest (1,000,000 utterances, 7,000 speakers).

Targets (issue 2): peak RSS <= 2 GB and wall time <= 60 s for partitioning plus indexing. The manifest is
synthetic metadata (no audio); it is written first, in this process, and each measured phase then runs in a
fresh child process so that its peak RSS is its own.

    python bench/bench_scale_manifest.py [--rows 1000000] [--speakers 7000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LABELS = ["angry", "happy", "sad", "neutral", "fear", "disgust", "surprise"]


def write_manifest(path: Path, rows: int, speakers: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    spk = rng.integers(0, speakers, rows)
    lab = rng.integers(0, len(LABELS), rows)
    dur = np.round(rng.uniform(4.0, 20.0, rows), 3)
    with open(path, "w") as f:
        for i in range(rows):
            s = f"id{10000 + int(spk[i]):05d}"
            f.write(json.dumps({"id": f"vox/{s}/v{i % 97:03d}/{i:07d}", "corpus": "vox",
                                "path": f"/data/voxceleb/wav/{s}/v{i % 97:03d}/{i:07d}.wav", "label": LABELS[lab[i]],
                                "speaker": s, "duration": float(dur[i]), "partition": "",
                                "extra": {"sample_rate": 16000, "channels": 1}}) + "\n")


PHASES = {
    "partition": """
from emonet_dist.corpora.repartition import partition_manifest
from emonet_dist.config import PrepareConfig
r = partition_manifest(SRC, OUT, PrepareConfig())
print(json.dumps({"utterances": r["utterances"], "speakers": r["speakers"], "per_partition": r["per_partition"]}))
""",
    "index": """
from emonet_dist.corpora.manifest import iter_manifest, summarize
from emonet_dist.data.shards import plan_shards
from emonet_dist.config import ShardConfig
rows = list(iter_manifest(OUT + "/manifest.jsonl"))
plan = plan_shards(rows, ShardConfig(samples_per_shard=1000))
s = summarize(rows)
print(json.dumps({"shards": {p: len(v) for p, v in plan.items()}, "classes": len(s["classes"]),
                  "speakers": s["speakers"]}))
""",
}


def run_phase(name: str, src: Path, out: Path) -> dict:
    code = (f"import json, resource, time\nt0 = time.time()\nSRC, OUT = {str(src)!r}, {str(out)!r}\n"
            + PHASES[name]
            + "print(json.dumps({'seconds': time.time() - t0, "
              "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    return {**lines[0], **lines[1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--speakers", type=int, default=7000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "manifest.jsonl", Path(tmp) / "out"
        t = time.time()
        write_manifest(src, args.rows, args.speakers)
        print(f"wrote {args.rows} rows / {args.speakers} speakers ({src.stat().st_size / 1e6:.0f} MB) in "
              f"{time.time() - t:.1f}s (not measured)")
        total_s, peak = 0.0, 0.0
        for phase in ("partition", "index"):
            r = run_phase(phase, src, out)
            total_s += r["seconds"]
            peak = max(peak, r["peak_rss_mb"])
            print(f"{phase:>9}: {r['seconds']:6.1f} s, peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"{ {k: v for k, v in r.items() if k not in ('seconds', 'peak_rss_mb')} }")
        print(f"total: {total_s:.1f} s (target <= 60 s, ratio {total_s / 60:.2f}); peak RSS {peak:.0f} MB "
              f"(target <= 2048 MB, ratio {peak / 2048:.2f})")


if __name__ == "__main__":
    main()
