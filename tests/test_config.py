"""The typed config tree: YAML, overrides, strictness, round trip."""

from __future__ import annotations

import pytest

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
    with pytest.raises(Exception):
        Config().name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("data, needle", [
    ({"data": {"batchsize": 3}}, "unknown config key 'data.batchsize' (did you mean 'data.batch_size'?)"),
    ({"model": {"pooling": {"lam": "high"}}}, "model.pooling.lam: expected float, got str 'high'"),
    ({"data": {"batch_size": 2.5}}, "data.batch_size: expected int"),
    ({"data": {"batch_size": True}}, "data.batch_size: expected int"),
    ({"model": {"specaugment": "wild"}}, "model.specaugment: 'wild' is not one of"),
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
