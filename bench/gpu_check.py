"""One GPU check (issue 15): what must hold on a machine with NVIDIA GPUs, in one command and one JSON report.

    python bench/gpu_check.py [--out gpu_check.json] [--steps 300] [--skip equivalence,throughput,end_to_end]

On a machine without CUDA it prints one line saying so and exits 2 (tests/test_gpu_check.py checks that line).
With CUDA it runs, in about 8 minutes on one modern GPU:

1. ``equivalence``: the DDP-equivalence tests (``tests/train/test_distributed.py``, fp32, fp64 and bf16 autocast,
   the negative controls) with ``EMONET_TEST_DEVICE=cuda``: 2 ranks, NCCL with a GPU each, or gloo sharing one
   GPU. The same test functions as on the CPU, run by pytest.
2. ``throughput``: training steps per second in fp32 and bf16 at the paper's widths and batch (64 utterances of
   5 s), through the loop's own ``train_step``, and their ratio (:func:`step_throughput`; the fast test runs it at
   toy size on the CPU).
3. ``loader``: one rank's training loader (the loop's ``train_loader``: batch 64, 5 s crops, ``--loader-workers``
   processes, pinned memory) in utterances/s on the synthetic corpora, against the fastest step rate of
   ``throughput`` (what the GPU consumes), and their ratio (:func:`loader_feed`; above 1 the loader keeps up).
4. ``end_to_end``: the paper's model trained for ``--steps`` multi-corpus steps on the built-in synthetic corpora
   with 2 Ray Train workers (``train.precision=auto``, ``train.device=auto``), once with global BatchNorm and once
   with ``ray.sync_batchnorm=false``: final predictions, bundles and the final checkpoint must all be written
   (:func:`end_to_end_config`, the config the Ray tests' ``run_training`` runs; the test loads it).

docs/benchmarks.md says what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("equivalence", "throughput", "loader", "end_to_end")
CORPORA = ("synth7", "synth5")


def no_cuda_line() -> str | None:
    """The one line printed where there is nothing to check (None when CUDA is usable)."""
    if torch.cuda.is_available():
        return None
    return (f"gpu-check: no CUDA device on {platform.node() or 'this machine'} (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}); nothing was checked")


def equivalence(timeout: float = 300) -> dict:
    """[1] The DDP-equivalence tests on CUDA: pytest's outcome and the tail of its output."""
    env = {**os.environ, "EMONET_TEST_DEVICE": "cuda", "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "train" / "test_distributed.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    return {"ok": res.returncode == 0, "seconds": round(time.time() - t0, 1),
            "gpus": torch.cuda.device_count(), "summary": res.stdout.strip().splitlines()[-1:],
            "tail": (res.stdout + res.stderr)[-3000:] if res.returncode else ""}


def step_throughput(device: torch.device, precision: str, model_overrides: dict | None = None, batch: int = 64,
                    seconds: float = 5.0, steps: int = 20, warmup: int = 3) -> dict:
    """[2] Training steps of the loop's ``train_step`` on random 16 kHz batches: utterances per second.

    Args:
        model_overrides: dotted ``model.*`` keys on top of the default config (the paper's widths).
        batch, seconds: utterances per step and their length (the paper: 64 x 5 s).
    """
    from emonet_dist.config import Config
    from emonet_dist.model.build import build_model
    from emonet_dist.model.modes import set_mode
    from emonet_dist.train.loop import train_step
    from emonet_dist.train.precision import make_precision

    cfg = Config().replace(model_overrides or {})
    torch.manual_seed(0)
    model = build_model(cfg.model, {"synth": 4}).to(device).train()
    groups = set_mode(model, "scratch")
    amp = make_precision(precision, device)
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9, fused=amp.fused_optimizer or None)
    trainable = [p for g in groups for p in g["params"]]
    n = int(seconds * cfg.model.frontend.sample_rate)
    batch_ = {"waves": torch.randn(batch, n) * 0.1, "lengths": torch.full((batch,), n),
              "targets": torch.arange(batch) % 4}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        train_step(model, opt, trainable, batch_, "synth", None, device, amp)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, opt, trainable, batch_, "synth", None, device, amp)
    sync()
    elapsed = time.perf_counter() - t0
    return {"precision": amp.name, "utt_per_s": batch * steps / elapsed, "step_ms": 1000 * elapsed / steps,
            "loss_finite": bool(torch.isfinite(loss).item())}


def throughput(device: torch.device) -> dict:
    out: dict = {p: step_throughput(device, p) for p in ("fp32", "bf16")}
    out["bf16_over_fp32"] = out["bf16"]["utt_per_s"] / out["fp32"]["utt_per_s"]
    out["ok"] = out["fp32"]["loss_finite"] and out["bf16"]["loss_finite"]
    return out


def end_to_end_config(shards: Path, out: Path, steps: int, sync_bn: bool, gpus_per_worker: float):
    """[3] The paper's model and batch, ``steps`` multi-corpus steps, 2 workers, evaluation and checkpoints on the
    way and at the end."""
    from emonet_dist.config import Config

    corpora = ", ".join("{name: " + c + "}" for c in CORPORA)
    return Config().override(
        f"name=gpucheck-{'global' if sync_bn else 'local'}-bn", f"output_dir={out}", f"data.shards={shards}",
        f"data.corpora=[{corpora}]", "data.max_seconds=5.0", "optim.stages=1", f"train.steps_per_stage={steps}",
        f"train.eval_every={max(steps // 2, 1)}", f"train.checkpoint_every={max(steps // 2, 1)}",
        "train.precision=auto", "train.device=auto", "ray.num_workers=2", f"ray.gpus_per_worker={gpus_per_worker}",
        "ray.backend=" + ("nccl" if gpus_per_worker >= 1 else "gloo"), f"ray.sync_batchnorm={str(sync_bn).lower()}",
        "tracking.enabled=false")


def synth_shards(tmp: Path) -> Path:
    """The synthetic corpora's shards under ``tmp`` (built once for the parts that need them)."""
    from emonet_dist.config import ShardConfig
    from emonet_dist.corpora.synth import build_synthetic
    from emonet_dist.data.shards import shard_corpus

    if not (tmp / "shards").is_dir():
        build_synthetic(tmp / "corpora", names=list(CORPORA))
        for c in CORPORA:
            shard_corpus(tmp / "corpora" / c, tmp / "shards", ShardConfig(samples_per_shard=64))
    return tmp / "shards"


def loader_feed(shards: Path, corpus: str, workers: int, device: torch.device, consumption: float | None,
                batches: int = 30, batch_size: int = 64) -> dict:
    """[3] One rank's training loader at 5 s crops (``bench_loader.rank_loader_rate``: the loop's own loader) against
    ``consumption``, the utterances/s the training steps take (None: not measured)."""
    from bench_loader import rank_loader_rate

    rate = rank_loader_rate(shards, corpus, workers, device, batches=batches, batch_size=batch_size)
    out = {"utt_per_s": rate, "workers": workers, "pinned": device.type == "cuda", "step_utt_per_s": consumption,
           "loader_over_steps": rate / consumption if consumption else None}
    out["ok"] = rate > 0
    return out


def fastest_steps(throughput_part: dict | None) -> float | None:
    """The highest step rate the throughput part measured (what the loader must feed at best), if it ran."""
    if not throughput_part or "fp32" not in throughput_part:
        return None
    return max(throughput_part[p]["utt_per_s"] for p in ("fp32", "bf16"))


def end_to_end(steps: int, tmp: Path) -> dict:
    from emonet_dist.train.launch import run_training

    synth_shards(tmp)
    gpus = 1.0 if torch.cuda.device_count() >= 2 else 0.5  # one GPU: the two workers share it (gloo)
    out = {}
    for sync_bn in (True, False):
        t0 = time.time()
        cfg = end_to_end_config(tmp / "shards", tmp / "runs", steps, sync_bn, gpus)
        r = run_training(cfg)
        written = {rel: (r.dir / rel).exists() for rel in ("final/model.safetensors", "backbone/backbone.safetensors",
                                                          "bundles", "predictions/final")}
        ckpt = r.checkpoint is not None and json.loads(
            (Path(r.checkpoint) / "state.json").read_text()).get("step") == steps
        out["global_bn" if sync_bn else "local_bn"] = {
            "ok": all(written.values()) and ckpt, "final_checkpoint_at_last_step": ckpt, "written": written,
            "seconds": round(time.time() - t0, 1), "train_utt_per_s": r.metrics.get("train_utt_per_s"),
            "dev_uar_mean": r.metrics.get("dev_uar_mean")}
    out["ok"] = all(v["ok"] for v in out.values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--steps", type=int, default=300, help="multi-corpus steps of each end-to-end run")
    ap.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    ap.add_argument("--loader-workers", type=int, default=2, help="loader processes of the rank (data.num_workers)")
    args = ap.parse_args(argv)
    refusal = no_cuda_line()
    if refusal:
        print(refusal)
        return 2
    skip = {s for s in args.skip.split(",") if s}
    device = torch.device("cuda", 0)
    report: dict = {"torch": torch.__version__, "cuda": torch.version.cuda,
                    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                    "bf16_supported": torch.cuda.is_bf16_supported(), "parts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for part in PARTS:
            if part in skip:
                continue
            t0 = time.time()
            try:
                result = {"equivalence": equivalence, "throughput": lambda: throughput(device),
                          "loader": lambda: loader_feed(synth_shards(Path(tmp)), CORPORA[0], args.loader_workers,
                                                        device, fastest_steps(report["parts"].get("throughput"))),
                          "end_to_end": lambda: end_to_end(args.steps, Path(tmp))}[part]()
            except Exception as exc:  # noqa: BLE001 - one part's failure is reported, the others still run
                result = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            result["seconds"] = round(time.time() - t0, 1)
            report["parts"][part] = result
            print(f"gpu-check: {part} done in {result['seconds']} s", file=sys.stderr)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"gpu-check: report written to {args.out}")
    return 0 if all(part["ok"] for part in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
