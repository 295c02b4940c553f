"""``emonet demo``: the whole method on the built-in synthetic corpora, in one command.

1. build the synthetic corpora (reused when already built with the same seed);
2. shard them (finished shards are reused);
3. multi-corpus pretraining with 2 Ray workers (``emonet_dist/specs/demo.yaml``, also ``jobs/demo.yaml``);
4. adapter transfer and a scratch baseline on the held-out ``synth_target`` corpus (same schedule for both);
5. the significance report (McNemar, Table 4 and the Figure-7 heatmap), all in MLflow.

Every run gets a new name, so running the demo twice neither fails nor mixes the runs up; the second run
reuses the corpora and shards. On a machine with GPUs the workers get them (NCCL with 2+ GPUs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import PrepareConfig, ShardConfig, load_config
from .errors import EmonetError

TARGET = "synth_target"
# Both transfer arms use the single-corpus schedule with these settings, so the comparison is fair.
TRANSFER = ("train.patience=5", "train.max_epochs=40", "train.checkpoint_every=100")


def demo_config_path() -> Path:
    """The demo's training config, shipped inside the package (``jobs/demo.yaml`` in a checkout links to it), so
    ``emonet demo`` works from any install and any directory."""
    path = Path(__file__).resolve().parent / "specs" / "demo.yaml"
    if not path.is_file():
        raise EmonetError(f"{path} is missing from the installed package; reinstall emonet-dist")
    return path


def gpu_overrides() -> list[str]:
    """Use the machine's GPUs when there are any (the same command runs on CPU-only machines)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n >= 2:
        return ["ray.gpus_per_worker=1", "ray.backend=nccl"]
    if n == 1:  # two workers share one GPU; NCCL needs one GPU per rank, gloo does not
        return ["ray.gpus_per_worker=0.5", "ray.backend=gloo"]
    return []


def _step(k: int, text: str) -> None:
    print(f"\n[demo {k}/5] {text}", flush=True)


def run_demo(out: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    from .corpora.synth import CORPORA, build_synthetic
    from .data.shards import shard_corpora, verify
    from .evaluate.report import build_report, log_report_run
    from .evaluate.report_format import format_table
    from .train.launch import run_training
    from .train.transfer import transfer_config

    t0 = time.time()
    out = Path(out).resolve()
    cfg = load_config(demo_config_path(), [f"output_dir={out / 'runs'}", f"data.shards={out / 'shards'}",
                                           *gpu_overrides(), *overrides])
    names = list(CORPORA)

    _step(1, f"synthetic corpora in {out / 'corpora'}")
    stamp = out / "corpora" / "demo.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("seed") == cfg.seed and \
            all((out / "corpora" / n / "manifest.jsonl").is_file() for n in names):
        print("       reusing the corpora built by an earlier demo (same seed)", flush=True)
    else:
        build_synthetic(out / "corpora", seed=cfg.seed, cfg=PrepareConfig(jobs=cfg.prepare.jobs))
        stamp.write_text(json.dumps({"seed": cfg.seed}))

    _step(2, f"WebDataset shards in {out / 'shards'}")
    shard_corpora([out / "corpora" / n for n in names], out / "shards", ShardConfig(samples_per_shard=64))
    checked, problems = verify(out / "shards")
    if problems:
        raise EmonetError(f"shard verification failed: {problems[0]}")
    print(f"       {checked} shards verified", flush=True)

    pretrain_names = [c.name for c in cfg.data.corpora]
    _step(3, f"multi-corpus pretraining on {', '.join(pretrain_names)} with {cfg.ray.num_workers} Ray workers")
    pre = run_training(cfg, extra_tags={"demo": "pretrain"})
    print(f"       run {pre.name}: " + ", ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in pre.metrics.items()
                                                 if k.startswith("test_uar_final/")), flush=True)

    _step(4, f"adapter transfer and a scratch baseline on {TARGET}")
    arms = {}
    for mode in ("adapters", "scratch"):
        tcfg = transfer_config(str(pre.dir), TARGET, mode, [*TRANSFER, *overrides])
        arms[mode] = run_training(tcfg, extra_tags={"demo": f"transfer-{mode}", "pretrained_from": pre.name})
        m = arms[mode].metrics
        print(f"       {mode:9s}: dev UAR {m[f'dev_uar_best/{TARGET}']:.3f}, test UAR at best dev "
              f"{m[f'test_uar_best/{TARGET}']:.3f}", flush=True)

    _step(5, "significance report (McNemar): adapter transfer against scratch")
    report_dir = out / "reports" / f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    report = build_report(str(arms["scratch"].dir), [str(arms["adapters"].dir)], report_dir, checkpoint="best",
                          labels={str(arms["scratch"].dir): "scratch", str(arms["adapters"].dir): "adapters"})
    report_run = log_report_run(report, pre.tracking_uri, cfg.tracking.experiment, report_dir) \
        if pre.tracking_uri else None
    print(format_table(report))
    print(f"\nreport: {report_dir / 'report.html'}\nheatmap: {report_dir / 'uar_delta.png'}")
    print(f"confusion matrices: emonet evaluate --run {arms['adapters'].dir} --checkpoint best")
    if pre.tracking_uri:
        print(f"browse the runs: mlflow ui --backend-store-uri {pre.tracking_uri} --host 127.0.0.1 --port 5000")
    print(f"demo finished in {time.time() - t0:.0f} s", flush=True)
    return {"pretrain": pre, "arms": arms, "report": report, "report_dir": report_dir, "report_run": report_run}
