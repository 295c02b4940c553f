"""The run layer on a real sqlite MLflow store and real shards: a run's directory, run.json, MLflow run (kind,
source and commit tags, params, dataset inputs with the shard index digest), parent runs, finishing with and
without tracking errors, and finding a run by name, path or MLflow run id."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from emonet_dist import tracking
from emonet_dist.config import Config
from emonet_dist.errors import ConfigError, EmonetError
from emonet_dist.runs import PARENT_ENV, Run, absolute_paths, find_run, parent_run, read_partitions
from emonet_dist.runs.inputs import INDEX_SHA_TAG
from emonet_testkit import ROOT


@pytest.fixture()
def cfg(tiny_shards, tmp_path):
    return absolute_paths(Config().replace(
        {"data.corpora": [{"name": "tiny"}], "data.shards": str(tiny_shards), "tracking.experiment": "runs-test"},
        output_dir=str(tmp_path / "runs")))


def _client(run: Run):
    return tracking.client(run.tracking_uri)


def test_a_run_from_start_to_finish(cfg, tiny_shards):
    parts = read_partitions(cfg)
    run = Run.create(cfg, "first", kind="train", tags={"extra": "x"}, parts=parts)
    assert run.dir.parent.as_posix() == cfg.output_dir and run.dir.name == "first"
    info = json.loads((run.dir / "run.json").read_text())
    assert info["status"] == "RUNNING" and info["name"] == "first" and info["mlflow_run_id"] == run.mlflow_run_id
    assert Config.from_dict(json.loads((run.dir / "config.json").read_text())) == cfg
    assert json.loads((run.dir / "partitions.json").read_text()) == parts

    c = _client(run)
    mr = c.get_run(run.mlflow_run_id)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert mr.data.tags["mlflow.source.git.commit"] == head and len(head) == 40
    assert mr.data.tags["mlflow.source.name"] == "emonet train" and mr.data.tags["mlflow.source.type"] == "LOCAL"
    assert mr.data.tags["emonet.kind"] == "train" and mr.data.tags["extra"] == "x"
    assert "mlflow.parentRunId" not in mr.data.tags
    assert mr.data.params["data.corpora.0.name"] == "tiny" and mr.data.params["output_dir"] == cfg.output_dir
    exp = c.get_experiment(mr.info.experiment_id)
    assert exp.name == "runs-test" and exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"

    # the corpus as a dataset input: digest = sha256 of its shard index file
    sha = hashlib.sha256((tiny_shards / "tiny" / "index.json").read_bytes()).hexdigest()
    assert parts["tiny"]["index_sha256"] == sha
    (inp,) = mr.inputs.dataset_inputs
    assert inp.dataset.name == "tiny" and inp.dataset.digest == sha[:32] and sha.startswith(inp.dataset.digest)
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "train", INDEX_SHA_TAG: sha}
    assert json.loads(inp.dataset.profile)["utterances"] == {p: v["utterances"]
                                                             for p, v in parts["tiny"]["partitions"].items()}

    logging.getLogger("emonet_dist.train.launch").info("a line of this run")
    assert run.finish(True, metrics={"m": 1.0}) is None
    logging.getLogger("emonet_dist.train.launch").info("a line after it")
    info = json.loads((run.dir / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["metrics"] == {"m": 1.0}
    assert c.get_run(run.mlflow_run_id).info.status == "FINISHED"
    assert not list(run.dir.glob("*.tmp"))  # atomic writes leave no temporaries
    # the run's log file, in the run and as an MLflow artifact: the lines of the run, not those after it
    assert [a.path for a in c.list_artifacts(run.mlflow_run_id, "logs")] == ["logs/driver.log"]
    text = (Path(c.download_artifacts(run.mlflow_run_id, "logs/driver.log", str(run.dir.parent))).read_text())
    assert "INFO emonet_dist.train.launch: a line of this run" in text and "after it" not in text
    assert text == (run.dir / "logs" / "driver.log").read_text()


def test_finding_a_run_by_name_path_and_mlflow_id(cfg):
    run = Run.create(cfg, "findme", kind="train")
    for ref in ("findme", str(run.dir), run.mlflow_run_id):
        assert find_run(ref, cfg.output_dir) == run.dir
    opened = Run.open(run.mlflow_run_id, cfg.output_dir)
    assert (opened.name, opened.dir, opened.cfg, opened.mlflow_run_id) == (run.name, run.dir, cfg, run.mlflow_run_id)
    with pytest.raises(EmonetError, match="no run"):
        find_run("0" * 32, cfg.output_dir)
    with pytest.raises(EmonetError, match="already exists"):
        Run.create(cfg, "findme")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "-x", "x" * 101])
def test_run_names_are_identifiers(cfg, name, tmp_path):
    with pytest.raises(ConfigError, match="not a valid name"):
        Run.create(cfg, name)
    assert not (tmp_path / "escape").exists()


def test_tracking_errors_and_failures_reach_run_json_and_mlflow(cfg):
    run = Run.create(cfg, "flaky", kind="baseline", fields={"kind": "baseline"})
    err = run.finish(True, tracking_error="MLflow at x failed while logging metrics: boom", metrics={})
    assert err.startswith("MLflow at x failed") and (run.dir / "tracking_error.txt").is_file()
    info = json.loads((run.dir / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["kind"] == "baseline"
    assert _client(run).get_run(run.mlflow_run_id).info.status == "FAILED"  # the MLflow copy is incomplete

    failed = Run.create(cfg, "broken")
    assert failed.finish(False, error="worker died") is None
    assert json.loads((failed.dir / "run.json").read_text())["error"] == "worker died"
    assert _client(failed).get_run(failed.mlflow_run_id).info.status == "FAILED"


def test_runs_nest_under_a_parent_run(cfg):
    os.environ.pop(PARENT_ENV, None)
    with parent_run(cfg, "job-1", kind="job") as parent:
        assert os.environ[PARENT_ENV] == parent
        child = Run.create(cfg, "step-a")
        with parent_run(cfg, "inner", kind="sweep") as inner:
            grandchild = Run.create(cfg, "step-b")
        assert os.environ[PARENT_ENV] == parent  # restored after the inner block
    assert PARENT_ENV not in os.environ
    c = _client(child)
    assert c.get_run(child.mlflow_run_id).data.tags["mlflow.parentRunId"] == parent
    assert c.get_run(inner).data.tags["mlflow.parentRunId"] == parent
    assert c.get_run(grandchild.mlflow_run_id).data.tags["mlflow.parentRunId"] == inner
    job = c.get_run(parent)
    assert job.info.status == "FINISHED" and job.data.tags["emonet.kind"] == "job"
    assert job.data.tags["mlflow.source.name"] == "emonet job"
    # an explicit parent wins over the environment
    explicit = Run.create(cfg, "step-c", parent_run_id=inner)
    assert c.get_run(explicit.mlflow_run_id).data.tags["mlflow.parentRunId"] == inner

    with pytest.raises(RuntimeError), parent_run(cfg, "job-2") as failing:
        logging.getLogger("emonet_dist.pipeline.runner").warning("step x failed")
        raise RuntimeError("a step failed")
    assert c.get_run(failing).info.status == "FAILED" and PARENT_ENV not in os.environ
    # the job's log is an artifact of its parent run, also when it failed
    log_path = c.download_artifacts(failing, "logs/job.log", str(cfg.output_dir))
    assert "WARNING emonet_dist.pipeline.runner: step x failed" in Path(log_path).read_text()
    with pytest.raises(ConfigError, match="not a valid name"), parent_run(cfg, "../../outside"):
        pass


def test_an_existing_experiment_gets_the_training_kind(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    old = c.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    other = c.create_experiment("genai", artifact_location=(tmp_path / "b").as_uri(),
                                tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    assert tracking.ensure_experiment(uri, "old") == old
    assert tracking.ensure_experiment(uri, "genai") == other
    assert c.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert c.get_experiment(other).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"  # someone else's choice


def test_tracking_off_writes_the_run_without_mlflow(cfg):
    run = Run.create(cfg.replace({"tracking.enabled": False}), "offline")
    assert run.mlflow_run_id is None and run.tracking_uri is None
    assert run.finish(True) is None
    assert json.loads((run.dir / "run.json").read_text())["status"] == "FINISHED"
    assert not (run.dir.parent / "mlflow.db").exists()


def test_track_sync_replays_a_run_after_an_outage(cfg, capsys):
    """A run whose MLflow logging failed (metrics only in its journal) is replayed by `emonet track sync`: the
    metrics reach the MLflow run, its status becomes the run's, and tracking_error.txt goes."""
    from emonet_dist.cli import main

    run = Run.create(cfg, "outage")
    journal_only = tracking.RunLogger(None, None, run.dir / tracking.JOURNAL)  # what rank 0 kept while MLflow was down
    for step, value in enumerate((0.25, 0.5, 0.75)):
        journal_only.log_metrics({"dev_uar_mean": value}, step)
    assert run.finish(True, tracking_error="MLflow at x failed while logging metrics: down", metrics={})
    c = _client(run)
    assert c.get_run(run.mlflow_run_id).info.status == "FAILED" and not c.get_metric_history(run.mlflow_run_id,
                                                                                             "dev_uar_mean")
    assert main(["track", "sync", "outage", "--output-dir", cfg.output_dir]) == 0
    assert "replayed 3 metric entries" in capsys.readouterr().out
    history = sorted(c.get_metric_history(run.mlflow_run_id, "dev_uar_mean"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert c.get_run(run.mlflow_run_id).info.status == "FINISHED" and run.tracking_error() is None

    offline = Run.create(cfg.replace({"tracking.enabled": False}), "offline-sync")
    offline.finish(True)
    assert main(["track", "sync", str(offline.dir)]) == 2
    assert "no MLflow run to sync into" in capsys.readouterr().err


def test_runs_created_side_by_side_log_the_same_corpus_as_one_dataset(cfg):
    """A job's side-by-side steps and a grid create runs from threads of one process: MLflow's get-or-insert of a
    dataset races on its UNIQUE constraint unless they take turns (it failed `emonet demo --smoke` once)."""
    import threading

    parts = read_partitions(cfg)
    Run.create(cfg, "first").finish(True)  # the store and experiment exist, as in a job; the dataset does not yet
    barrier, made, errors = threading.Barrier(6), [], []

    def create(i: int) -> None:
        barrier.wait()
        try:
            made.append(Run.create(cfg, f"side-{i}", parts=parts))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(made) == 6, errors
    for run in made:
        run.finish(True)
        (inp,) = _client(run).get_run(run.mlflow_run_id).inputs.dataset_inputs
        assert inp.dataset.name == "tiny"
