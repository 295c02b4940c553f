"""docs/results/learning_curves.py, the command docs/results.md documents, on a real MLflow store: per-epoch dev UAR
of a grid's finished single-corpus runs, averaged per (method, corpus); pretraining and unfinished runs left out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "docs" / "results" / "learning_curves.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_learning_curves_average_a_grids_single_corpus_runs_per_epoch(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("grid", artifact_location=str(tmp_path / "art"))
    runs = [("scratch", {"dev_uar/emovo": [0.2, 0.4]}, "FINISHED", "g"),
            ("scratch", {"dev_uar/emovo": [0.4, 0.6, 0.8]}, "FINISHED", "g"),
            ("scratch", {"dev_uar/emovo": [0.9]}, "RUNNING", "g"),  # unfinished: left out
            ("all", {"dev_uar/emovo": [0.1], "dev_uar/urdu": [0.5]}, "FINISHED", "g"),  # pretraining: left out
            ("scratch", {"dev_uar/emovo": [0.9]}, "FINISHED", "other")]  # another job
    for method, metrics, status, job in runs:
        run = client.create_run(exp, tags={"emonet_job": job, "job_step": "grid", "grid_method": method})
        for key, values in metrics.items():
            for step, v in enumerate(values):
                client.log_metric(run.info.run_id, key, v, step=10 * (step + 1))
        client.set_terminated(run.info.run_id, status)
    mod = _module()
    data = mod.curves(db, "g")
    assert list(data) == [("scratch", "emovo")]
    assert sorted(data[("scratch", "emovo")]) == [[0.2, 0.4], [0.4, 0.6, 0.8]]
    out = tmp_path / "curves.png"
    mod.main([str(db), "--job", "g", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| emovo | scratch | 2 | 30.0 | 50.0 | 80.0 | 2/2 |" in printed
    assert out.stat().st_size > 1000


def test_learning_curves_refuse_a_missing_database_and_a_job_name_that_is_not_a_name(tmp_path):
    mod = _module()
    missing = tmp_path / "nope.db"
    with pytest.raises(SystemExit, match="no MLflow database at"):
        mod.main([str(missing), "--job", "g"])
    assert not missing.exists()  # nothing created in its place
    db = tmp_path / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    with pytest.raises(SystemExit, match="--job"):
        mod.main([str(db), "--job", "g' or tags.x = 'y"])
