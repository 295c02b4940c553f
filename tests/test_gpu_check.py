"""bench/gpu_check.py: its one-line refusal where there is no CUDA (this machine, CI), and its GPU parts' code paths
at toy size on the CPU, so none of them is dead code here: the step-throughput part runs the loop's ``train_step``
in fp32 and bf16, the loader part reads the loop's own training loader, and the end-to-end part's config loads (its
``run_training`` is what the Ray tests run; its equivalence part runs tests/train/test_distributed.py itself)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from emonet_testkit import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")


@no_cuda
def test_without_cuda_it_says_so_in_one_line_and_fails(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device on ")
    assert lines[0].endswith("nothing was checked")
    assert f"torch {torch.__version__}" in lines[0]
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_throughput_part_runs_the_loops_train_step(precision):
    tiny = {"model.stem_width": 4, "model.base_width": 8, "model.pooling.units": 8, "model.head.hidden": 8}
    r = gpu_check.step_throughput(torch.device("cpu"), precision, tiny, batch=2, seconds=0.5, steps=2, warmup=1)
    assert r["precision"] == precision and r["utt_per_s"] > 0 and r["loss_finite"]


def test_the_end_to_end_part_trains_the_papers_model_with_both_batchnorm_modes(tmp_path):
    cfgs = [gpu_check.end_to_end_config(tmp_path / "shards", tmp_path / "runs", 300, s, 0.5) for s in (True, False)]
    assert [c.ray.sync_batchnorm for c in cfgs] == [True, False]
    for c in cfgs:
        assert (c.model.stem_width, c.model.stack_widths, c.data.batch_size) == (32, (64, 128, 256), 64)
        assert (c.optim.stages, c.train.steps_per_stage, c.train.checkpoint_every) == (1, 300, 150)
        assert (c.train.precision, c.train.device, c.ray.num_workers, c.ray.backend) == ("auto", "auto", 2, "gloo")


def test_the_loader_part_runs_the_loops_training_loader(synth_shards):
    r = gpu_check.loader_feed(synth_shards, "synth2", 0, torch.device("cpu"), consumption=50.0, batches=2,
                              batch_size=4)
    assert r["ok"] and r["utt_per_s"] > 0 and not r["pinned"]
    assert r["loader_over_steps"] == pytest.approx(r["utt_per_s"] / 50.0)
    assert gpu_check.fastest_steps({"fp32": {"utt_per_s": 3.0}, "bf16": {"utt_per_s": 5.0}}) == 5.0
    assert gpu_check.fastest_steps(None) is None
