"""Search spaces are checked before any trial starts; errors name the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emonet_dist.config import Config
from emonet_dist.errors import ConfigError
from emonet_dist.tuning import objective_metric, parse_space

BASE = Config().override("data.corpora=[{name: a}, {name: b}]")


def test_the_shipped_space_parses():
    from emonet_dist.tuning import load_space

    space = parse_space(load_space("jobs/spaces/lr_lambda.yaml"), BASE)
    assert space["optim.lr"] == ("loguniform", [1e-3, 0.3]) and space["model.pooling.lam"] == ("uniform", [0.0, 1.0])


def test_tune_can_search_the_sampling_temperature():
    """T is a config key like any other; the shipped space switches temperature sampling on and searches T, and a
    space searching T for a round-robin config is refused (every trial would train the same thing)."""
    from emonet_dist.tuning import load_space

    space = parse_space(load_space("jobs/spaces/sampling_temperature.yaml"), BASE)
    assert space == {"train.corpus_sampling": ("choice", [["temperature"]]),
                     "train.sampling_temperature": ("loguniform", [1.0, 10.0])}
    trial = BASE.replace({"train.corpus_sampling": "temperature", "train.sampling_temperature": 3.7})
    assert (trial.train.corpus_sampling, trial.train.sampling_temperature) == ("temperature", 3.7)
    with pytest.raises(ConfigError, match="'train.sampling_temperature' has no effect with "
                                          "train.corpus_sampling=round_robin"):
        parse_space({"train.sampling_temperature": "uniform(1, 5)"}, BASE)
    assert parse_space({"train.sampling_temperature": "uniform(1, 5)"},
                       BASE.override("train.corpus_sampling=temperature"))
    with pytest.raises(ConfigError, match="search space key 'train.sampling_temperature': value 0"):
        parse_space({"train.sampling_temperature": "uniform(0, 5)"}, BASE.override("train.corpus_sampling=temperature"))
    with pytest.raises(ConfigError, match="search space key 'train.corpus_sampling': value 'uniform'"):
        parse_space({"train.corpus_sampling": "choice([uniform])"}, BASE)


def test_all_distributions():
    space = parse_space({"optim.lr": "qloguniform(1e-4, 1e-1, 1e-4)", "model.specaugment": "choice([none, aggressive])",
                         "data.batch_size": "randint(8, 33)", "optim.weight_decay": "grid([0.0, 1e-6])"}, BASE)
    assert space == {"optim.lr": ("qloguniform", [1e-4, 1e-1, 1e-4]),
                     "model.specaugment": ("choice", [["none", "aggressive"]]),
                     "data.batch_size": ("randint", [8, 33]), "optim.weight_decay": ("grid", [[0.0, 1e-6]])}


@pytest.mark.parametrize("space, needle", [
    ({"optim.learning_rate": "loguniform(1e-3, 0.3)"}, "search space key 'optim.learning_rate'"),
    ({"optim.lr": "lognormal(1e-3, 0.3)"}, "search space key 'optim.lr': 'lognormal(1e-3, 0.3)' is not a distribution"),
    ({"optim.lr": "loguniform(0.3, 1e-3)"}, "search space key 'optim.lr': loguniform"),
    ({"optim.lr": "loguniform(0, 0.3)"}, "needs low > 0"),
    ({"model.specaugment": "choice([none, wild])"}, "search space key 'model.specaugment': value 'wild'"),
    ({"data.batch_size": "uniform(1.5, 8.5)"}, "search space key 'data.batch_size'"),
    ({"model.pooling.lam": "uniform(-1, 1)"}, "search space key 'model.pooling.lam'"),
    ({"optim.lr": "uniform(1)"}, "takes 2 argument(s)"),
    ({}, "non-empty mapping"),
])
def test_bad_spaces_name_the_key(space, needle):
    with pytest.raises(ConfigError) as exc:
        parse_space(space, BASE)
    assert needle in str(exc.value)


def test_objective():
    assert objective_metric(BASE) == "dev_uar_mean"
    assert objective_metric(BASE.override("tune.objective=b")) == "dev_uar/b"
    with pytest.raises(ConfigError, match="neither 'mean' nor one of the run's corpora"):
        objective_metric(BASE.override("tune.objective=zz"))


def test_bad_space_fails_before_ray_starts(tmp_path):
    """The CLI refuses the space before anything starts: exit 2, the key named, no Ray storage, no trial."""
    (tmp_path / "space.yaml").write_text("optim.lr: loguniform(1e-3, 0.3)\nmodel.pooling.lamda: uniform(0, 1)\n")
    (tmp_path / "cfg.yaml").write_text(BASE.override(f"output_dir={tmp_path}").to_yaml())
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "tune", str(tmp_path / "cfg.yaml"), "--space",
                          str(tmp_path / "space.yaml")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "model.pooling.lamda" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "ray").exists() and not list(tmp_path.glob("sweep-*"))
