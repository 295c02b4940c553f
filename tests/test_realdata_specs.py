"""The real-corpus experiment specs (jobs/realdata*.job.yaml) and the spec features they use: extends, groups,
profiles, prepare/baseline steps and merged report columns. Loading only; tests/test_realdata_smoke.py runs one."""

from __future__ import annotations

from pathlib import Path

import pytest

from emonet_dist.errors import ConfigError, CorpusError
from emonet_dist.pipeline.checks import check_shared_paths, raw_spec
from emonet_dist.pipeline.spec import load_spec

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_the_experiment_and_its_parts_load():
    full = load_spec(JOBS / "realdata.job.yaml")
    groups = {s.id: s.group for s in full.steps}
    assert sorted(set(groups.values())) == ["all", "egemaps", "loco", "prepare", "report", "scratch"]
    assert [c.name for c in full.config.data.corpora] == ["ravdess", "emovo", "urdu"]
    for part in ("scratch", "all", "loco"):
        spec = load_spec(JOBS / f"realdata_{part}.job.yaml")
        assert spec.name == f"realdata_{part}" and spec.config == full.config
        assert {s.group for s in spec.steps} == {"prepare", part}
    loco = [s for s in full.steps if s.group == "loco" and s.run == "transfer"]
    assert sorted(s.corpus for s in loco) == ["emovo", "ravdess", "urdu"]


def test_the_paper_profile_is_the_papers_config_and_submittable():
    cpu = load_spec(JOBS / "realdata.job.yaml")
    paper = load_spec(JOBS / "realdata.job.yaml", profile="paper")
    assert (paper.config.model.base_width, paper.config.model.stem_width) == (64, 32)
    train = paper.config.train
    assert (paper.config.data.batch_size, train.steps_per_stage, train.patience) == (64, 2500, 50)
    assert paper.config.ray.gpus_per_worker == 1 and cpu.config.ray.gpus_per_worker == 0
    check_shared_paths(paper.config)  # absolute shared-storage paths
    with pytest.raises(ConfigError, match="relative|absolute"):
        check_shared_paths(cpu.config)  # the CPU config is for `emonet jobs run` on one machine
    with pytest.raises(ConfigError, match="no profile 'gpu'.*paper"):
        load_spec(JOBS / "realdata.job.yaml", profile="gpu")


def test_group_selection_and_bad_references_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no step has group nope"):
        load_spec(JOBS / "realdata.job.yaml", groups=["nope"])
    # the report without the runs it compares: named in the error
    with pytest.raises(ConfigError, match="not found: scratch-ravdess"):
        load_spec(JOBS / "realdata.job.yaml", groups=["prepare", "report"])
    spec = tmp_path / "x.job.yaml"
    spec.write_text("extends: " + str(JOBS / "realdata.job.yaml") + "\nsteps:\n"
                    "  - {id: p, run: prepare, recipe: nosuch, raw: /tmp}\n")
    with pytest.raises(CorpusError, match="unknown recipe .nosuch."):
        load_spec(spec)
    spec.write_text("extends: x.job.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_spec(spec)


def test_smoke_spec_is_one_corpus_pair():
    spec = load_spec(JOBS / "realdata_smoke.job.yaml")
    kinds = [s.run for s in spec.steps]
    assert kinds == ["prepare", "prepare", "baseline", "train", "train", "transfer", "report"]
    assert spec.config.model.base_width == 8 and spec.config.train.steps_per_stage == 3


def test_a_spec_that_extends_another_adds_profiles_and_keeps_its_parents(tmp_path):
    """jobs/realdata_grid.job.yaml adds ``longer`` to realdata.job.yaml's ``paper``; a child's profile of the same
    name replaces the parent's."""
    parent = raw_spec(JOBS / "realdata.job.yaml", set())["profiles"]
    profiles = raw_spec(JOBS / "realdata_grid.job.yaml", set())["profiles"]
    assert profiles == {**parent, "longer": ["train.max_epochs=18"]}
    grid = load_spec(JOBS / "realdata_grid.job.yaml")
    assert load_spec(JOBS / "realdata_grid.job.yaml", profile="longer").config == grid.config.replace(
        {"train.max_epochs": 18})
    assert load_spec(JOBS / "realdata_grid.job.yaml", profile="paper").config.model.base_width == 64
    child = tmp_path / "child.job.yaml"
    child.write_text(f"extends: {JOBS / 'realdata_grid.job.yaml'}\nprofiles:\n  longer: [train.max_epochs=9]\n")
    assert raw_spec(child, set())["profiles"] == {**parent, "longer": ["train.max_epochs=9"]}
    assert load_spec(child, profile="longer").config.train.max_epochs == 9
