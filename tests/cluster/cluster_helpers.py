"""Helpers of the cluster tests (imported by their conftest and test modules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def emonet(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", *args], capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f"emonet {' '.join(args)}: {res.stderr[-2000:]}"
    return res


def tiny_config(shards: str, out: Path, name: str = "tiny") -> dict:
    """The end-to-end tests' tiny run (tests/train/test_ray_training.py's ``tiny_cfg``) as a config tree."""
    return {"name": name, "output_dir": str(out),
            "data": {"shards": str(shards), "corpora": [{"name": "synth2"}, {"name": "synth4"}], "batch_size": 8,
                     "max_seconds": 1.5, "num_workers": 0},
            "model": {"stem_width": 4, "base_width": 8, "pooling": {"units": 16}, "head": {"hidden": 16}},
            "optim": {"stages": 2},
            "train": {"steps_per_stage": 6, "eval_every": 4, "checkpoint_every": 2, "log_every": 1},
            "ray": {"num_workers": 2}, "tracking": {"experiment": "cluster-tests"}}
