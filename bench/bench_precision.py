"""bf16 against fp32 on the demo's pretraining: dev UAR and training throughput of the same run in both precisions.

The demo's multi-corpus pretraining config (``emonet_dist/specs/demo.yaml``: synth7, synth5, synth4, synth2, 2 Ray
workers, a quarter of the paper's widths) with the same seed, once with ``train.precision=fp32`` and once with
``train.precision=bf16`` (autocast around the model; loss, gradient sum, BatchNorm statistics and evaluation in
fp32). Target (issue 15): the bf16 run's final dev UAR within 0.03 of fp32's, per corpus and on the mean.

    python bench/bench_precision.py [--steps-per-stage 50] [--shards DIR]

On a CPU without native bf16 (AVX2) bf16 is slower than fp32; the throughput ratio means something on GPUs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from emonet_dist.config import ShardConfig, load_config
from emonet_dist.corpora.synth import build_synthetic
from emonet_dist.data.shards import shard_corpus
from emonet_dist.train.launch import run_training

DEMO = Path(__file__).resolve().parents[1] / "emonet_dist" / "specs" / "demo.yaml"
CORPORA = ("synth7", "synth5", "synth4", "synth2")


def demo_shards(given: str | None, tmp: Path) -> Path:
    if given:
        return Path(given)
    build_synthetic(tmp / "corpora", names=list(CORPORA))
    for c in CORPORA:
        shard_corpus(tmp / "corpora" / c, tmp / "shards", ShardConfig(samples_per_shard=64))
    return tmp / "shards"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-per-stage", type=int, default=50)
    ap.add_argument("--shards", help="existing shard directory with the demo's corpora (default: build them)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shards = demo_shards(args.shards, tmp)
        res = {}
        for precision in ("fp32", "bf16"):
            cfg = load_config(DEMO, [f"data.shards={shards}", f"output_dir={tmp / 'runs'}", f"name={precision}",
                                     f"train.steps_per_stage={args.steps_per_stage}", "tracking.enabled=false",
                                     f"train.precision={precision}"])
            res[precision] = run_training(cfg).metrics
    keys = [f"dev_uar/{c}" for c in CORPORA] + ["dev_uar_mean", "train_utt_per_s"]
    print(f"\ndemo pretraining, {3 * args.steps_per_stage} steps, seed 0, 2 workers")
    print(f"  {'':22s} {'fp32':>8s} {'bf16':>8s} {'bf16 - fp32':>12s}")
    for k in keys:
        a, b = res["fp32"].get(k, float("nan")), res["bf16"].get(k, float("nan"))
        print(f"  {k:22s} {a:8.3f} {b:8.3f} {b - a:+12.3f}")
    worst = max(abs(res["bf16"][k] - res["fp32"][k]) for k in keys[:-1])
    print(f"  largest dev-UAR difference {worst:.3f} (target <= 0.03)")


if __name__ == "__main__":
    main()
