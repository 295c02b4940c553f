"""The typed config tree: YAML, overrides, strictness, round trip."""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys

import pytest

from emonet_dist import config as config_module
from emonet_dist.config import Config, CorpusConfig, DataConfig, load_config
from emonet_dist.errors import ConfigError
from emonet_dist.typed import flatten, from_dict, to_dict


def test_defaults_round_trip():
    cfg = Config()
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict(to_dict(cfg)).to_yaml() == cfg.to_yaml()


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: exp\ndata:\n  batch_size: 16\n  corpora:\n    - {name: a}\n    - {name: b, task: arousal}\n"
                    "model:\n  pooling: {lam: 0.5}\n")
    cfg = load_config(path, ["model.pooling.lam=1e-3", "data.corpora.1.name=c", "prepare.allow_speaker_overlap=true"])
    assert cfg.name == "exp" and cfg.data.batch_size == 16
    assert cfg.model.pooling.lam == pytest.approx(1e-3)  # YAML 1.1 would read 1e-3 as a string
    assert [c.name for c in cfg.data.corpora] == ["a", "c"] and cfg.data.corpora[1].domain == "c:arousal"
    assert cfg.prepare.allow_speaker_overlap is True
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("data, needle", [
    ({"data": {"batchsize": 3}}, "unknown config key 'data.batchsize' (did you mean 'data.batch_size'?)"),
    ({"model": {"pooling": {"lam": "high"}}}, "model.pooling.lam: expected float, got str 'high'"),
    ({"data": {"batch_size": 2.5}}, "data.batch_size: expected int"),
    ({"data": {"batch_size": True}}, "data.batch_size: expected int"),
    ({"model": {"specaugment": "wild"}}, "model.specaugment: 'wild' is not one of"),
    ({"model": {"frontend": {"normalize": "speaker"}}}, "model.frontend.normalize: 'speaker' is not one of"),
    ({"data": {"corpora": [{"name": "a", "tsk": "x"}]}}, "unknown config key 'data.corpora.0.tsk'"),
    ({"data": {"corpora": "a"}}, "data.corpora: expected a list"),
    ({"bogus": 1}, "unknown config key 'bogus'"),
])
def test_strict_from_dict_names_the_key(data, needle):
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(data)
    assert needle in str(exc.value)


def test_post_init_checks_are_located():
    with pytest.raises(ConfigError, match=r"data\.batch_size must be >= 1, got 0"):
        Config.from_dict({"data": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="more than once"):
        DataConfig(corpora=(CorpusConfig("a"), CorpusConfig("a")))


def test_bad_overrides():
    with pytest.raises(ConfigError, match="section.key=value"):
        Config().override("data.batch_size")
    with pytest.raises(ConfigError, match="indexes a list of 0 items"):
        Config().override("data.corpora.3.name=x")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/config.yaml")


def test_flatten_for_mlflow_params():
    cfg = Config().override("data.corpora=[{name: a}, {name: b}]")
    flat = cfg.flat()
    assert flat["data.corpora.1.name"] == "b" and flat["model.pooling.lam"] == 0.3
    assert flatten({"a": {"b": [1, 2]}}) == {"a.b": [1, 2]}


def test_from_dict_generic_types():
    assert from_dict(CorpusConfig, {"name": "x", "train": ["fold1", "fold2"]}).train == ("fold1", "fold2")


# ---------------------------------------------------------------------------------------------------------------
# hardening (issue 14): alias bombs, numeric limits, short quotes
# ---------------------------------------------------------------------------------------------------------------
def alias_bomb(key: str = "name") -> str:
    """The classic billion laughs: 9 levels of 9 aliases, 9**9 = 387,420,489 strings once expanded."""
    levels = "abcdefghi"
    rows = [f"{key}: [&a [lol,lol,lol,lol,lol,lol,lol,lol,lol],"]
    rows += [f"&{c} [{','.join([f'*{p}'] * 9)}]," for p, c in zip(levels, levels[1:])]
    return "\n".join(rows)[:-1] + "]\n"


def test_the_alias_bomb_is_small_and_real():
    text = alias_bomb()
    assert len(text) < 340
    import yaml  # plain PyYAML shares one object per anchor: the bomb only goes off when walked or formatted

    value = yaml.safe_load(text)["name"][-1]
    size = 1
    while isinstance(value, list):
        size, value = size * len(value), value[0]
    assert size == 9**9


def _limit_memory(limit_bytes: int):
    def apply() -> None:  # runs in the child: a regression dies with MemoryError instead of taking the machine
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return apply


def test_alias_bomb_config_is_refused_by_the_cli_in_one_short_line(tmp_path):
    """``emonet config show`` takes ~30 MB of address space; the bomb, formatted, would take gigabytes. Under a
    256 MB cap the CLI must still answer with exit 2 and one short line (no MemoryError, no traceback)."""
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "config", "show", "--config",
                          str(tmp_path / "bomb.yaml")], capture_output=True, text=True, timeout=60,
                         preexec_fn=_limit_memory(256 * 2**20))
    assert res.returncode == 2, res.stderr[-500:]
    err = res.stderr.strip()
    assert "Traceback" not in err and "\n" not in err and len(err) < 300, err[:500]
    assert err.startswith("error: ") and "bomb.yaml" in err and "alias" in err


@pytest.mark.parametrize("text, needle", [
    ("a: &a [*a]\n", "recursive"),
    ("name: " + "[" * 600 + "]" * 600 + "\n", "nested too deeply"),
    ("name: " + "[" * 150 + "]" * 150 + "\n", "nested too deeply"),
    ("seed: " + "1" * 5000 + "\n", "cannot be read"),
    ("name: x\n" + "# padding\n" * 110_000, "at most 1000000"),
])
def test_other_yaml_that_would_crash_the_loader_is_one_config_error(tmp_path, text, needle):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=needle) as exc:
        load_config(tmp_path / "c.yaml")
    assert len(str(exc.value)) < 300


def test_every_shipped_config_loads():
    from pathlib import Path

    jobs = Path(__file__).resolve().parents[1] / "jobs"
    configs = [p for p in jobs.glob("*.yaml") if not p.name.endswith(".job.yaml")]
    assert configs
    for path in configs:
        load_config(path)


def test_every_numeric_field_has_a_limit():
    from emonet_dist.limits import LIMITS, numeric_fields

    classes = [c for c in vars(config_module).values()
               if dataclasses.is_dataclass(c) and c.__module__ == config_module.__name__]
    for cls in classes:
        assert set(numeric_fields(cls)) == set(LIMITS.get(cls.__name__, {})), cls.__name__


@pytest.mark.parametrize("key, bad, needle", [
    ("seed", "-1", "seed must be in [0, "),
    ("prepare.seed", "-3", "prepare.seed must be in [0, "),
    ("prepare.dev_fraction", "1.0", "prepare.dev_fraction must be a finite number in [0, 1), got 1.0"),
    ("prepare.test_fraction", ".nan", "prepare.test_fraction must be a finite number in [0, 1), got nan"),
    ("prepare.num_folds", "1", "prepare.num_folds must be 0 (one per group) or at least 2, got 1"),
    ("prepare.jobs", "-1", "prepare.jobs must be >= 0, got -1"),
    ("shard.sample_rate", "0", "shard.sample_rate must be in [1000, 384000] (Hz), got 0"),
    ("shard.max_shard_mb", ".inf", "shard.max_shard_mb must be a finite number > 0, got inf"),
    ("data.batch_size", "0", "data.batch_size must be >= 1, got 0"),
    ("data.max_seconds", "0", "data.max_seconds must be a finite number > 0, got 0.0"),
    ("data.max_seconds", ".inf", "data.max_seconds must be a finite number > 0, got inf"),
    ("data.max_seconds", ".nan", "data.max_seconds must be a finite number > 0, got nan"),
    ("data.eval_max_seconds", ".inf", "data.eval_max_seconds must be a finite number >= 0"),
    ("data.num_workers", "-1", "data.num_workers must be >= 0, got -1"),
    ("data.seed", "-1", "data.seed must be in [0, "),
    ("model.stem_width", "0", "model.stem_width must be >= 1, got 0"),
    ("model.base_width", "0", "model.base_width must be >= 1, got 0"),
    ("model.widen_factor", ".nan", "model.widen_factor must be a finite number > 0, got nan"),
    ("model.num_stacks", "2000", "model.num_stacks must be in [1, 10], got 2000"),
    ("model.frontend.sample_rate", "0", "model.frontend.sample_rate must be in [1000, 384000] (Hz), got 0"),
    ("model.frontend.f_max", ".inf", "model.frontend.f_max must be a finite number >= 0"),
    ("model.frontend.log_floor", "0", "model.frontend.log_floor must be a finite number > 0, got 0.0"),
    ("model.pooling.lam", "-0.5", "model.pooling.lam must be a finite number >= 0, got -0.5"),
    ("model.pooling.units", "0", "model.pooling.units must be >= 1, got 0"),
    ("model.head.hidden", "0", "model.head.hidden must be >= 1, got 0"),
    ("model.head.dropout", "1", "model.head.dropout must be a finite number in [0, 1), got 1.0"),
    ("model.head.aam_scale", ".inf", "model.head.aam_scale must be a finite number > 0, got inf"),
    ("optim.lr", "0", "optim.lr must be a finite number > 0, got 0.0"),
    ("optim.lr", ".inf", "optim.lr must be a finite number > 0, got inf"),
    ("optim.lr", ".nan", "optim.lr must be a finite number > 0, got nan"),
    ("optim.lr_decay", "0", "optim.lr_decay must be a finite number in (0, 1], got 0.0"),
    ("optim.finetune_scale", "-1", "optim.finetune_scale must be a finite number > 0, got -1.0"),
    ("optim.momentum", "1", "optim.momentum must be a finite number in [0, 1), got 1.0"),
    ("optim.weight_decay", ".inf", "optim.weight_decay must be a finite number >= 0, got inf"),
    ("train.steps_per_stage", "0", "train.steps_per_stage must be >= 1, got 0"),
    ("train.threads", "-2", "train.threads must be >= 0, got -2"),
    ("ray.num_workers", "0", "ray.num_workers must be >= 1, got 0"),
    ("ray.cpus_per_worker", ".inf", "ray.cpus_per_worker must be a finite number > 0, got inf"),
    ("ray.gpus_per_worker", ".nan", "ray.gpus_per_worker must be a finite number >= 0, got nan"),
    ("tune.reduction_factor", "1", "tune.reduction_factor must be >= 2, got 1"),
    ("tune.driver_cpus", "0", "tune.driver_cpus must be a finite number > 0, got 0.0"),
])
def test_numeric_limits_name_the_dotted_key(tmp_path, key, bad, needle):
    with pytest.raises(ConfigError) as exc:
        Config().override(f"{key}={bad}")
    assert needle in str(exc.value)
    section, _, leaf = key.rpartition(".")  # the same from a YAML file
    (tmp_path / "c.yaml").write_text("".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(section.split(".")) if p)
                                     + "  " * (section.count(".") + bool(section)) + f"{leaf}: {bad}\n")
    with pytest.raises(ConfigError, match="must be"):
        load_config(tmp_path / "c.yaml")


LONG = "x" * 10_000


@pytest.mark.parametrize("data", [
    {"name": [LONG]},
    {"model": {"specaugment": LONG}},
    {"data": {"batch_size": LONG}},
    {"data": {"corpora": LONG}},
    {"data": {"corpora": [{"name": "a", LONG: 1}]}},
    {LONG: 1},
    {"model": {"pooling": [LONG] * 1000}},
], ids=["str-in-list", "literal", "int", "list", "nested-key", "top-key", "mapping"])
def test_errors_quote_a_short_prefix_of_a_long_value(data):
    with pytest.raises(ConfigError) as exc:
        Config.from_dict(data)
    assert len(str(exc.value)) < 300 and "..." in str(exc.value), str(exc.value)[:400]


@pytest.mark.parametrize("override", [f"model.specaugment={LONG}", f"data.corpora.0.{LONG}=1", f"{LONG}",
                                      f"data.corpora.{'1' * 5000}.name=x",
                                      f"data.batch_size.{LONG}=1"])
def test_override_errors_quote_a_short_prefix(override):
    with pytest.raises(ConfigError) as exc:
        Config().override("data.corpora=[{name: a}]", override)
    assert len(str(exc.value)) < 300, str(exc.value)[:400]


def test_short_quote_in_a_config_file_through_the_cli(tmp_path):
    (tmp_path / "long.yaml").write_text(f"model:\n  specaugment: {LONG}\n")
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "config", "show", "--config",
                          str(tmp_path / "long.yaml")], capture_output=True, text=True, timeout=60,
                         env={**os.environ})
    assert res.returncode == 2 and len(res.stderr) < 300 and "model.specaugment" in res.stderr, res.stderr[:400]


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 101])
def test_the_run_name_prefix_is_an_identifier(name):
    """``name`` becomes part of every run directory's name: a path in it could write outside output_dir."""
    with pytest.raises(ConfigError, match="is not a valid name"):
        Config().override(f"name={name}")


def test_typed_replace_sets_python_values_and_checks_them_like_a_config():
    base = Config()
    cfg = base.replace({"train.steps_per_stage": 12, "data.corpora": [{"name": "a"}, {"name": "b"}]}, seed=3)
    assert cfg.train.steps_per_stage == 12 and cfg.seed == 3 and [c.name for c in cfg.data.corpora] == ["a", "b"]
    assert base.train.steps_per_stage != 12 or base.seed != 3  # a copy; the original is unchanged
    # a value is a value, not YAML text: the string "0.1" for a float field is refused, not parsed
    with pytest.raises(ConfigError, match="optim.lr"):
        base.replace({"optim.lr": "0.1"})
    with pytest.raises(ConfigError, match="nosuch"):
        base.replace({"train.nosuch": 1})
    with pytest.raises(ConfigError, match="name"):
        base.replace(name="../x")  # the same checks as a user's config
    # dataclass values (a section taken from another config) are accepted as their dicts
    assert base.replace(model=cfg.model).model == cfg.model
