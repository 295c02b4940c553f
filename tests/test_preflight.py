"""A job's preflight (issue 14, row 10): what it lacks is named within seconds, before anything is created or
started. Missing shared storage, shards, raw corpora; and nothing refused that an earlier step of the job makes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from emonet_dist.errors import ConfigError, EmonetError
from emonet_dist.pipeline.preflight import preflight
from emonet_dist.pipeline.runner import run_spec
from emonet_dist.pipeline.spec import load_spec


def _spec(tmp_path: Path, steps: list, storage: str = "", **config) -> Path:
    cfg = {"output_dir": str(tmp_path / "runs"), "data": {"shards": str(tmp_path / "shards"),
                                                          "corpora": [{"name": "synth2"}]},
           "tracking": {"enabled": False}, **config}
    doc = {"name": "t", "config": cfg, "steps": steps, **({"storage": storage} if storage else {})}
    path = tmp_path / "t.job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_job_under_unmounted_storage_fails_before_creating_anything(tmp_path):
    mount = tmp_path / "mnt" / "emonet"
    path = _spec(tmp_path, [{"id": "data", "run": "synth"}, {"id": "pre", "run": "train"}], storage=str(mount),
                 output_dir=str(mount / "demo" / "runs"), data={"shards": str(mount / "demo" / "shards"),
                                                              "corpora": [{"name": "synth2"}]})
    t0 = time.monotonic()
    with pytest.raises(EmonetError, match=rf"shared storage '{mount}' not found on this node \(output_dir, "
                                          r"data.shards are under it\): mount it"):
        run_spec(load_spec(path, runs_here=True))
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / "mnt").exists()  # the synth step would have created the mount point and written there
    # the same job with its paths elsewhere (what a header's local-cluster command does) passes the check
    elsewhere = load_spec(path, [f"output_dir={tmp_path}/runs", f"data.shards={tmp_path}/shards"])
    preflight(elsewhere, elsewhere.config)
    mount.mkdir(parents=True)  # mounted: the job may create its directories below it
    spec = load_spec(path)
    preflight(spec, spec.config)


def test_missing_shards_are_named_with_their_step_before_the_first_step_runs(tmp_path):
    path = _spec(tmp_path, [{"id": "pre", "run": "train"},
                            {"id": "tgt", "run": "transfer", "corpus": "synth_target", "mode": "adapters"}])
    with pytest.raises(EmonetError) as err:
        run_spec(load_spec(path, runs_here=True))
    msg = str(err.value)
    assert msg.startswith(f"no shards for corpus 'synth2' at '{tmp_path}/shards/synth2/index.json' (step pre)")
    assert f"also no shards for corpus 'synth_target' at '{tmp_path}/shards/synth_target/index.json' (step tgt)" \
        in msg and "Nothing ran" in msg
    assert not (tmp_path / "runs").exists()


def test_inputs_that_an_earlier_step_makes_are_not_required(tmp_path, tiny_shards):
    synth_first = _spec(tmp_path, [{"id": "data", "run": "synth"}, {"id": "pre", "run": "train"},
                                   {"id": "tgt", "run": "transfer", "corpus": "synth_target", "mode": "adapters"}])
    spec = load_spec(synth_first)
    preflight(spec, spec.config)
    shards_there = _spec(tmp_path, [{"id": "pre", "run": "train"}], data={"shards": str(tiny_shards),
                                                                         "corpora": [{"name": "tiny"}]})
    spec = load_spec(shards_there)
    preflight(spec, spec.config)


def test_a_raw_corpus_that_is_not_there_is_named(tmp_path):
    path = _spec(tmp_path, [{"id": "prep", "run": "prepare", "recipe": "urdu", "raw": str(tmp_path / "raw")},
                            {"id": "pre", "run": "train", "overrides": ["data.corpora=[{name: urdu}]"]},
                            {"id": "svm", "run": "baseline", "corpora": ["emovo"]}])
    spec = load_spec(path)
    with pytest.raises(EmonetError) as err:
        preflight(spec, spec.config)
    msg = str(err.value)
    assert msg.startswith(f"not found: raw corpus '{tmp_path}/raw' (step prep)")
    assert f"also prepared corpus '{tmp_path}/corpora/emovo' (step svm)" in msg and "urdu'" not in msg


@pytest.mark.parametrize("storage", ["mnt/emonet", "/", "/mnt/../etc", "s3://bucket"])
def test_storage_must_be_an_absolute_mount_point(tmp_path, storage):
    with pytest.raises(ConfigError, match="storage must be an absolute directory"):
        load_spec(_spec(tmp_path, [{"id": "pre", "run": "train"}], storage=storage))


def test_a_grids_method_steps_are_checked_too(tmp_path):
    grid = {"id": "grid", "run": "grid", "folds": 3, "methods": {
        "scratch": [{"id": "s", "run": "train"}], "svm": [{"id": "svm", "run": "baseline", "corpora": ["synth5"]}]}}
    spec = load_spec(_spec(tmp_path, [grid]))
    with pytest.raises(EmonetError, match=r"no shards for corpus 'synth2' .*\(step s\).*corpus .*\(step svm\)"):
        preflight(spec, spec.config)
