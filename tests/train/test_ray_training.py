"""End-to-end training on a real local Ray runtime: determinism, a killed worker, --resume, transfer, MLflow.

Tiny model and few steps, but every part is real: shards of the synthetic corpora, 2 Ray Train workers with
gloo, checkpoints in Ray storage, a sqlite MLflow store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emonet_dist.train.launch import run_training
from emonet_testkit import (
    assert_equal_nonempty,
    final_tensors,
    kill_new_sessions,
    ray_sessions,
    run_scores,
    same_tensors,
    tiny_train_config,
)

pytestmark = pytest.mark.slow


tiny_cfg = tiny_train_config  # synth2 + synth4, 2 stages of 6 steps, checkpoints every 2 steps, 2 workers
SCORES = {"dev_uar/synth2", "dev_uar/synth4", "dev_uar_mean", "test_uar_final/synth2", "test_uar_final/synth4",
          "test_uar_best/synth2", "test_uar_best/synth4"}


def _same_scores(got: dict, ref: dict) -> None:
    """The runs' dev and test UARs are equal, and they are the ones this test expects to compare."""
    assert SCORES <= run_scores(ref).keys(), sorted(run_scores(ref))
    assert_equal_nonempty(run_scores(got), run_scores(ref), "dev/test UARs")


@pytest.fixture(scope="module")
def reference(synth_shards, tmp_path_factory, ray_local):
    """An uninterrupted run; the other tests compare against it."""
    out = tmp_path_factory.mktemp("runs")
    return run_training(tiny_cfg(synth_shards, out)), out


def test_same_seed_gives_identical_parameters(reference, synth_shards):
    ref, out = reference
    again = run_training(tiny_cfg(synth_shards, out))
    assert again.name != ref.name  # a new run, not a silent resume of the old one
    assert same_tensors(final_tensors(ref.dir), final_tensors(again.dir))
    _same_scores(again.metrics, ref.metrics)


def _kill_rank_after_first_checkpoint(storage: Path, run_name_prefix: str, out: Path, rank: int, killed: list):
    """SIGKILL a rank once a checkpoint is certainly registered with Ray: the second complete checkpoint directory
    is only written after the first report returned, so the first is on record whatever the timing."""
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpts = [c for c in storage.glob(f"{run_name_prefix}*/checkpoint_*") if (c / "state.json").is_file()]
        pids = list(out.glob(f"{run_name_prefix}*/workers/rank{rank}.pid"))
        if len(ckpts) >= 2 and pids:
            pid = int(pids[0].read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


def test_killed_worker_restores_from_checkpoint_and_matches(reference, synth_shards, tmp_path):
    ref, _ = reference
    cfg = tiny_cfg(synth_shards, tmp_path, "ray.max_failures=1", "name=killed")
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_rank_after_first_checkpoint,
                               args=(tmp_path / "ray", "killed-", tmp_path, 1, killed), daemon=True)
    watcher.start()
    result = run_training(cfg)
    watcher.join(timeout=5)
    assert killed, "the worker was never killed"
    # the restarted worker group wrote new pid files: rank 1 is a different process now
    assert int((result.dir / "workers" / "rank1.pid").read_text()) != killed[0]
    # the restarted group began at a checkpoint's step (one at least as late as the checkpoint the kill waited
    # for; checkpoints every 2 steps), not at 0: the run was restored, not rerun from the start
    start = result.metrics["start_step"]
    assert start >= 2 and start % 2 == 0, start
    assert ref.metrics["start_step"] == 0
    # restoring from the checkpoint (data position, optimiser, BN statistics, RNG by step) is exact
    _same_scores(result.metrics, ref.metrics)
    assert same_tensors(final_tensors(ref.dir), final_tensors(result.dir))


def _checkpoints(storage):
    """Complete checkpoint directories (Ray Train also keeps checkpoint_manager_snapshot.json next to them)."""
    return [c for c in storage.glob("stopped-*/checkpoint_*") if (c / "state.json").is_file()]


@pytest.mark.timeout(1200)  # up to 300 s to the first checkpoint, then up to 600 s to resume
def test_resume_continues_at_the_step_where_it_stopped(reference, synth_shards, tmp_path):
    ref, _ = reference
    cfg = tiny_cfg(synth_shards, tmp_path, "name=stopped")
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    cmd = [sys.executable, "-m", "emonet_dist.cli", "train", str(tmp_path / "cfg.yaml")]
    before = ray_sessions()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not _checkpoints(tmp_path / "ray"):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, as a lost job would
    proc.wait()
    kill_new_sessions(before)  # the local Ray it started outlives it in its own session
    run_dir = next(tmp_path.glob("stopped-*"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "RUNNING"
    ckpt_steps = [json.loads((c / "state.json").read_text())["step"] for c in _checkpoints(tmp_path / "ray")]
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "train", "--resume", str(run_dir)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    resumed_at = [int(line.split("resumed at step ")[1].split()[0]) for line in (res.stdout + res.stderr).splitlines()
                  if "resumed at step " in line]
    assert resumed_at and resumed_at[0] == max(ckpt_steps) and resumed_at[0] < 12
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["metrics"]["step"] == 12
    assert info["metrics"]["start_step"] == resumed_at[0]
    _same_scores(info["metrics"], ref.metrics)
    assert same_tensors(final_tensors(ref.dir), final_tensors(run_dir))  # the resumed run ends where the reference does


def test_adapter_transfer_leaves_shared_weights_bit_identical(reference, tmp_path):
    from emonet_dist.train.transfer import transfer_config

    ref, out = reference
    cfg = transfer_config(str(ref.dir), "synth_target", "adapters",
                          ["train.patience=1", "train.max_epochs=2", f"output_dir={tmp_path}"])
    result = run_training(cfg)
    before, after = final_tensors(ref.dir), final_tensors(result.dir)
    new = [k for k in after if k not in before]
    assert new and all("synth_target" in k for k in new)  # only the new corpus was added
    for k, v in before.items():  # shared weights and the pretrained corpora: bit-identical
        assert bool((after[k] == v).all()), k
    assert json.loads((result.dir / "backbone" / "backbone.json").read_text())["backbone_sha256"] == \
        json.loads((ref.dir / "backbone" / "backbone.json").read_text())["backbone_sha256"]


FRESH = r"""
import json, sys
import numpy as np
from emonet_dist.bundles import load_bundle
from emonet_dist.data.stream import CorpusStream, shard_list
from emonet_dist.metrics import scores
from emonet_dist.train.evaluation import predict
art, shards, corpus, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model, name, meta = load_bundle(f"{art}/bundles/{corpus}", f"{art}/backbone")
targets = {c: i for i, c in enumerate(meta["classes"])}
stream = CorpusStream(shard_list(shards, corpus, ["test"]), targets, train=False, batch_size=batch)
pred = predict(model, stream, name, "cpu")
print(json.dumps({"uar": scores(pred["targets"], pred["probs"].argmax(1), len(targets))["uar"],
                  "ids": pred["ids"], "probs": pred["probs"].tolist()}))
"""


def test_mlflow_holds_the_run_and_a_bundle_reproduces_its_test_uar(reference, synth_shards, tmp_path):
    import csv

    import mlflow

    ref, _ = reference
    client = mlflow.MlflowClient(ref.tracking_uri)
    run = client.get_run(ref.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == ref.name
    params, tags = run.data.params, run.data.tags
    assert params["model.base_width"] == "8" and params["data.corpora.1.name"] == "synth4"
    assert params["optim.lr"] == "0.1" and len(params) > 60  # the whole flattened config
    assert tags["world_size"] == "2" and len(tags["git_sha"]) >= 7 and tags["version.torch"].startswith("2.9")
    assert len(client.get_metric_history(run.info.run_id, "loss/synth2")) == 12  # every step
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_uar/synth4")] == [4, 8, 12]
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 12
    dst = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, tracking_uri=ref.tracking_uri,
                                                   dst_path=str(tmp_path / "art")))
    for rel in ("config.yaml", "backbone/backbone.safetensors", "backbone/backbone.json",
                "bundles/synth2/corpus.safetensors", "bundles/synth2/bundle.json", "bundles/synth4/corpus.json",
                "predictions/final/synth2.csv", "predictions/best/synth4.csv"):
        assert (dst / rel).is_file(), rel
    # the run's log files: the driver's, and each worker's with rank 0's progress lines
    assert "[train] step 12" in (dst / "logs/rank0.log").read_text() and (dst / "logs/rank1.log").is_file()
    assert "emonet_dist.train.launch" in (dst / "logs/driver.log").read_text()
    parts = json.loads((dst / "partitions.json").read_text())  # the split the run used, speaker-independent
    for corpus in ("synth2", "synth4"):
        spk = {p: set(v["speakers"]) for p, v in parts[corpus]["partitions"].items()}
        assert spk["train"] and spk["dev"] and spk["test"] and not (spk["train"] & (spk["dev"] | spk["test"]))
    bundle = json.loads((dst / "bundles/synth4/bundle.json").read_text())
    assert bundle["classes"] == ["angry", "excited", "neutral", "sad"] and sum(bundle["class_counts"]) > 0
    # a fresh process loads backbone + bundle from the downloaded artifacts and reproduces the logged test UAR
    res = subprocess.run([sys.executable, "-c", FRESH, str(dst), str(synth_shards), "synth4", "8"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["uar"] == run.data.metrics["test_uar_final/synth4"]
    with open(dst / "predictions/final/synth4.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == got["ids"]
    for r, p in zip(rows, got["probs"]):
        # probabilities (magnitude <= 1) from the same model and batches in a fresh process, through the CSV's digits
        assert max(abs(float(r[f"prob_{c}"]) - q) for c, q in zip(bundle["classes"], p)) < 1e-6


def test_bundle_export_register_predict_reproduces_logged_probabilities(reference, synth_set, tmp_path, capsys):
    import csv

    from emonet_dist.cli import main

    ref, _ = reference
    corpora_dir, _, _ = synth_set
    out = tmp_path / "bundle"
    assert main(["bundle", "export", "--run", str(ref.dir), "--corpus", "synth2", "--out", str(out)]) == 0
    assert main(["bundle", "export", "--run", str(ref.dir), "--corpus", "synth2", "--out", str(tmp_path / "best"),
                 "--checkpoint", "best"]) == 0
    capsys.readouterr()
    assert main(["bundle", "register", str(out), "--name", "emonet-synth2"]) == 0
    reg = json.loads(capsys.readouterr().out)
    assert reg["uri"] == "models:/emonet-synth2/1"
    import mlflow

    version = mlflow.MlflowClient(ref.tracking_uri).get_model_version("emonet-synth2", "1")
    assert version.tags["corpus"] == "synth2" and version.tags["labels"] == "angry,neutral"
    with open(ref.dir / "predictions" / "final" / "synth2.csv") as f:
        logged = {r["id"]: r for r in csv.DictReader(f)}
    files = [corpora_dir / "raw" / (uid + ".flac") for uid in list(logged)[:12]]
    assert main(["predict", "--bundle", reg["uri"], "--tracking-uri", ref.tracking_uri, "--format", "json",
                 *map(str, files)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == len(files)
    for uid, row in zip(list(logged)[:12], got):
        assert row["label"] == logged[uid]["prediction"]
        for c, p in row["probs"].items():  # same model, batch of one instead of a padded batch
            assert abs(p - float(logged[uid][f"prob_{c}"])) < 1e-5  # probabilities: FP32_REORDERED of 1


def test_local_batchnorm_bf16_run_ends_with_its_final_checkpoint(synth_shards, tmp_path, ray_local):
    """ray.sync_batchnorm=false with 2 workers, in bf16: the end of the run (BN statistics averaged over the ranks,
    final test predictions, bundles, then the final checkpoint's all-reduce) completes. On GPUs this is where the
    old write_final_outputs left rank 0's model on the CPU and the final all-reduce failed; its device invariant is
    tested in test_outputs.py, this runs the same end to end."""
    cfg = tiny_cfg(synth_shards, tmp_path, "ray.sync_batchnorm=false", "train.precision=bf16", "name=localbn",
                   "tracking.enabled=false")
    result = run_training(cfg)
    assert result.metrics["step"] == 12 and result.metrics["start_step"] == 0
    final = [c for c in (tmp_path / "ray").glob("localbn-*/checkpoint_*") if (c / "state.json").is_file()
             and json.loads((c / "state.json").read_text())["step"] == 12]
    assert final, "no final checkpoint at step 12"
    assert json.loads((final[-1] / "state.json").read_text())["config"]["train"]["precision"] == "bf16"
    for rel in ("final/model.safetensors", "backbone/backbone.safetensors", "bundles/synth2/bundle.json",
                "predictions/final/synth4.csv"):
        assert (result.dir / rel).is_file(), rel
    assert all(bool(v.isfinite().all()) for v in final_tensors(result.dir).values())
