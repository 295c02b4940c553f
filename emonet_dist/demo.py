"""``emonet demo``: the whole method on the built-in synthetic corpora, in one command.

The pipeline is the shipped job spec ``emonet_dist/specs/demo_job.yaml``, run by the same runner as every other
spec (:func:`emonet_dist.pipeline.runner.run_spec`). What is the demo's own: its output folder (corpora, shards,
runs and reports under one directory), the machine's GPUs when there are any, and the summary it ends with.

Every run gets a new name, so running the demo twice neither fails nor mixes the runs up; the second run
reuses the corpora and shards. On a machine with GPUs the workers get them (NCCL with 2+ GPUs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import EmonetError
from .pipeline.runner import run_spec
from .pipeline.spec import JobSpec, load_spec

TARGET = "synth_target"
"""The held-out corpus both transfer arms train on."""
SMOKE = "smoke"
"""The demo spec's profile of ``emonet demo --smoke``."""


def _shipped(name: str) -> Path:
    path = Path(__file__).resolve().parent / "specs" / name
    if not path.is_file():
        raise EmonetError(f"{path} is missing from the installed package; reinstall emonet-dist")
    return path


def demo_spec_path() -> Path:
    """The demo's job spec, shipped inside the package, so ``emonet demo`` works from any install and directory."""
    return _shipped("demo_job.yaml")


def demo_config_path() -> Path:
    """The demo's pretraining config alone (``jobs/demo.yaml`` in a checkout links to it), for ``emonet train``."""
    return _shipped("demo.yaml")


def gpu_values() -> dict[str, Any]:
    """Use the machine's GPUs when there are any (the same command runs on CPU-only machines)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n >= 2:
        return {"ray.gpus_per_worker": 1.0, "ray.backend": "nccl"}
    if n == 1:  # two workers share one GPU; NCCL needs one GPU per rank, gloo does not
        return {"ray.gpus_per_worker": 0.5, "ray.backend": "gloo"}
    return {}


def demo_spec(out: Path, overrides: list[str] | tuple[str, ...] = (), smoke: bool = False) -> JobSpec:
    """The shipped spec with everything under ``out`` (``runs/``, ``shards/``, ``corpora/``, ``reports/``)."""
    out = Path(out).resolve()
    values = {"output_dir": str(out / "runs"), "data.shards": str(out / "shards"), **gpu_values()}
    return load_spec(demo_spec_path(), overrides, profile=SMOKE if smoke else None, runs_here=True, values=values)


def run_demo(out: Path, overrides: list[str] | tuple[str, ...] = (), smoke: bool = False) -> dict:
    """Run the demo into ``out``; ``overrides`` apply to every run (transfers included)."""
    outcome = run_spec(demo_spec(out, overrides, smoke))
    (report,) = outcome.reports.values()
    runs = outcome.runs
    return {"pretrain": runs["pretrain"], "arms": {m: runs[m] for m in ("adapters", "scratch")},
            "report": report["report"], "report_dir": report["dir"], "report_run": report["run_id"],
            "outcome": outcome}


def summary(result: dict) -> list[str]:
    """The lines the demo ends with (tests/test_demo.py parses the arms' dev UAR lines)."""
    pre, arms, report_dir = result["pretrain"], result["arms"], result["report_dir"]
    lines = [f"pretraining run {pre.name}: test UAR " + ", ".join(
        f"{k.split('/')[1]} {v:.2f}" for k, v in pre.metrics.items() if k.startswith("test_uar_final/"))]
    for mode, run in arms.items():
        m = run.metrics
        lines.append(f"       {mode:9s}: dev UAR {m[f'dev_uar_best/{TARGET}']:.3f}, test UAR at best dev "
                     f"{m[f'test_uar_best/{TARGET}']:.3f}")
    lines += [f"\nreport: {report_dir / 'report.html'}", f"heatmap: {report_dir / 'uar_delta.png'}",
              f"confusion matrices: emonet evaluate --run {arms['adapters'].dir} --checkpoint best"]
    if pre.tracking_uri:
        lines.append(f"browse the runs: mlflow ui --backend-store-uri {pre.tracking_uri} --host 127.0.0.1 --port 5000")
    lines.append(f"demo finished in {result['outcome'].seconds:.0f} s")
    return lines
