"""The pipeline layer without running it: typed job specs, how job-wide overrides reach the steps, the shipped demo
spec, what ``emonet submit`` ships, and the CLI flags that set config keys (one table, typed by the config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emonet_dist.config import Config, load_config
from emonet_dist.demo import demo_config_path, demo_spec, demo_spec_path
from emonet_dist.errors import ConfigError
from emonet_dist.pipeline.runner import RUNNERS
from emonet_dist.pipeline.spec import KINDS, TrainStep, TransferStep, load_spec, step_keys
from emonet_dist.pipeline.steps import used_corpora

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, steps: list, **extra) -> Path:
    path = tmp_path / "t.job.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "config": {"output_dir": "/tmp/x", "data": {
        "shards": "/tmp/s", "corpora": [{"name": "a"}]}}, "steps": steps, **extra}))
    return path


def test_every_step_kind_has_a_runner():
    assert set(KINDS) == set(RUNNERS)
    assert step_keys("transfer") == ["corpus", "from", "mode", "overrides", "task"]  # YAML's `from`, not `source`


@pytest.mark.parametrize("step, where", [
    ({"run": "synth", "samples_per_shard": "64"}, "steps.0.samples_per_shard: expected int"),
    ({"run": "synth", "verify": 1}, "steps.0.verify: expected bool"),
    ({"run": "train", "overrides": "seed=1"}, "steps.0.overrides: expected a list"),
    ({"run": "tune", "space": {"optim.lr": 0.1}}, "steps.0.space.optim.lr: expected str"),
    ({"id": "p", "run": "train"}, None),
])
def test_step_values_are_strictly_typed_with_the_dotted_key(tmp_path, step, where):
    path = _write(tmp_path, [step])
    if where is None:
        assert isinstance(load_spec(path).steps[0], TrainStep)
        return
    with pytest.raises(ConfigError, match=f"^{path}: {where}"):
        load_spec(path)


def test_spec_scalars_are_typed_by_the_config_loader(tmp_path):
    with pytest.raises(ConfigError, match="groups: expected a list"):
        load_spec(_write(tmp_path, [{"run": "train"}], groups="all"))
    with pytest.raises(ConfigError, match=r"config\.data\.batch_size: expected int"):
        load_spec(_write(tmp_path, [{"run": "train"}], config={"data": {"batch_size": "8"}}))
    with pytest.raises(ConfigError, match="entrypoint_num_cpus must be a number >= 0"):
        load_spec(_write(tmp_path, [{"run": "train"}], entrypoint_num_cpus=-1))


def test_job_wide_overrides_reach_every_run_step_but_not_what_a_transfer_sets(tmp_path):
    path = _write(tmp_path, [{"id": "pre", "run": "train", "overrides": ["seed=2"]},
                             {"id": "tr", "run": "transfer", "corpus": "b", "mode": "adapters",
                              "overrides": ["train.max_epochs=40"]}],
                  profiles={"small": ["train.max_epochs=2", "data.corpora=[{name: c}]"]})
    spec = load_spec(path, ["name=mine"], profile="small")
    pre, tr = spec.steps
    assert pre.overrides == ("seed=2", "train.max_epochs=2", "data.corpora=[{name: c}]", "name=mine")
    assert isinstance(tr, TransferStep) and tr.source == "pre"  # `from` defaults to the last run step
    assert tr.overrides == ("train.max_epochs=40", "train.max_epochs=2")  # the transfer keeps its corpus and name
    assert [c.name for c in spec.config.data.corpora] == ["c"] and spec.config.name == "mine"
    # what `emonet submit` writes as job.yaml loads back to the same spec, without the profile or the overrides
    shipped = tmp_path / "job.yaml"
    shipped.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    again = load_spec(shipped)
    assert again.steps == spec.steps and again.config == spec.config


def test_the_shipped_demo_spec_is_the_demo_config_with_a_smoke_profile(tmp_path):
    assert demo_spec_path().parent == ROOT / "emonet_dist" / "specs"  # inside the package (tests/test_packaging)
    full = load_spec(demo_spec_path())
    assert full.config == load_config(demo_config_path())  # `emonet train jobs/demo.yaml` trains the same thing
    assert [s.run for s in full.steps] == ["synth", "train", "transfer", "transfer", "report"]
    assert used_corpora(full) == ["synth7", "synth5", "synth4", "synth2", "synth_target"]

    smoke = demo_spec(tmp_path / "d", ["seed=3"], smoke=True)
    assert smoke.config.output_dir == str((tmp_path / "d" / "runs").resolve())
    assert smoke.config.data.shards == str((tmp_path / "d" / "shards").resolve())
    assert smoke.config.seed == 3 and smoke.config.model.base_width < full.config.model.base_width
    assert used_corpora(smoke) == ["synth2", "synth_target"]  # tiny corpora: only what the smoke runs use
    arms = [s for s in smoke.steps if isinstance(s, TransferStep)]
    assert all(s.overrides[-1] == "seed=3" and "train.max_epochs=2" in s.overrides for s in arms)
    # `emonet jobs run` of the shipped spec with the same profile and paths is the same spec
    out = (tmp_path / "d").resolve()
    same = load_spec(demo_spec_path(), [f"output_dir={out}/runs", f"data.shards={out}/shards", "seed=3"],
                     profile="smoke")
    assert same.config == smoke.config
    assert [(s.id, s.run) for s in same.steps] == [(s.id, s.run) for s in smoke.steps]


def test_config_flags_come_from_one_table_typed_by_the_config():
    from emonet_dist.cli import CONFIG_FLAGS, build_parser, config_type
    from emonet_dist.cli_commands import config_from_args

    for flags in CONFIG_FLAGS.values():
        for entry in flags.values():
            config_type(entry if isinstance(entry, str) else entry[0])  # every key exists in the config tree
    parser = build_parser()
    args = parser.parse_args(["corpus", "prepare", "csv", "x", "--out", "y", "--seed", "3", "--split", "folds",
                              "--allow-speaker-overlap"])
    args.overrides = ["prepare.num_folds=4"]
    prep = config_from_args(args).prepare
    assert (prep.seed, prep.split, prep.num_folds, prep.allow_speaker_overlap) == (3, "folds", 4, True)
    args.overrides = ["prepare.seed=5"]  # a KEY=VALUE override wins over the flag
    assert config_from_args(args).prepare.seed == 5
    args = parser.parse_args(["tune", "--space", "s.yaml", "--max-concurrent", "1", "--scheduler", "none"])
    args.overrides = []
    tune = config_from_args(args).tune
    assert (tune.max_concurrent, tune.scheduler) == (1, "none") and Config().tune.scheduler == "asha"
    with pytest.raises(SystemExit):  # typed by the config: prepare.seed is an int
        parser.parse_args(["corpus", "synth", "--out", "o", "--seed", "x"])


def test_independent_runs_form_a_wave_and_every_other_step_stands_alone():
    from emonet_dist.pipeline.runner import waves

    spec = demo_spec(Path("/tmp/unused"))
    assert [[s.id for s in w] for w in waves(spec.steps)] == [["data"], ["pretrain"], ["adapters", "scratch"],
                                                               ["report"]]
    steps = (TrainStep(id="a", run="train"), TransferStep(id="b", run="transfer", source="a"),
             TransferStep(id="c", run="transfer", source="b"), TrainStep(id="d", run="train"))
    assert [[s.id for s in w] for w in waves(steps)] == [["a"], ["b"], ["c", "d"]]  # c builds on b
