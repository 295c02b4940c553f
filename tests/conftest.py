"""Shared fixtures: a tiny real corpus (tones written as audio files), prepared and sharded once per session."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from emonet_dist.config import PrepareConfig, ShardConfig
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_dist.data.shards import shard_corpus
from emonet_testkit import write_tone

LABELS = ("angry", "happy", "neutral", "sad")


def make_tiny_raw(root: Path, speakers: int = 6, per_label: int = 3, sr: int = 16000) -> Path:
    """Write ``speakers x 4 labels x per_label`` short files and a CSV listing them; returns the CSV path."""
    rows = []
    for s in range(speakers):
        for li, lab in enumerate(LABELS):
            for k in range(per_label):
                rel = f"spk{s}/{lab}_{k}.wav"
                seconds = 0.3 + 0.1 * ((s + li + k) % 7)
                write_tone(root / rel, seconds=seconds, sr=sr, freq=150 + 60 * li + 7 * s, seed=s * 100 + li * 10 + k)
                rows.append({"path": rel, "label": lab, "speaker": f"spk{s}"})
    out = root / "list.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "label", "speaker"])
        w.writeheader()
        w.writerows(rows)
    return out


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A prepared corpus directory (manifest.jsonl + report.json) named ``tiny``: 6 speakers, 4 classes, 72 files."""
    root = tmp_path_factory.mktemp("tiny_raw")
    listing = make_tiny_raw(root)
    out = tmp_path_factory.mktemp("tiny_prepared") / "tiny"
    prepare_corpus("csv", listing, out, PrepareConfig(jobs=1, dev_fraction=0.17, test_fraction=0.17), name="tiny")
    return out


@pytest.fixture(scope="session")
def tiny_shards(tiny_corpus, tmp_path_factory) -> Path:
    """``tiny`` sharded with 5 samples per shard (many shards, some partial)."""
    out = tmp_path_factory.mktemp("tiny_shards")
    shard_corpus(tiny_corpus, out, ShardConfig(samples_per_shard=5, jobs=1))
    return out


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory):
    """The default built-in synthetic corpora, built once per session: ``(dir, reports, build seconds)``."""
    import time

    from emonet_dist.corpora.synth import build_synthetic

    out = tmp_path_factory.mktemp("synth")
    t0 = time.monotonic()
    reports = build_synthetic(out, seed=0)
    return out, reports, time.monotonic() - t0


@pytest.fixture(scope="session")
def synth_shards(synth_set, tmp_path_factory) -> Path:
    """The synthetic corpora as WebDataset shards (64 utterances per shard)."""
    out_dir, reports, _ = synth_set
    shards = tmp_path_factory.mktemp("synth_shards")
    for name in reports:
        shard_corpus(out_dir / name, shards, ShardConfig(samples_per_shard=64))
    return shards


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance per test module (started like `emonet train` starts it). Per module, not per session:
    in one long-lived instance, a run in one module was once left waiting for CPUs that an earlier module's runs
    still held, and a fresh instance costs only seconds."""
    import ray

    from emonet_dist.config import Config
    from emonet_dist.train.launch import init_ray

    init_ray(Config())
    yield
    ray.shutdown()


# Environment variables that choose where results go or how much is logged. A test that changes one and leaves it
# set changes what every later test (and every subprocess it starts) does, so the suite's result would depend on
# its order: MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI, and a job run later in the same process (or
# `emonet demo` started from it) then logged into an earlier test's store.
_GUARDED_ENV = ("MLFLOW_", "EMONET_")


@pytest.fixture(autouse=True)
def _no_leaked_environment():
    """Fail a test that leaves a guarded environment variable changed (use ``monkeypatch.setenv``), and restore it
    so that the tests after it still run in a clean environment."""
    import os

    before = {k: v for k, v in os.environ.items() if k.startswith(_GUARDED_ENV)}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith(_GUARDED_ENV)}
    if after == before:
        return
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for k in changed:
        if k in before:
            os.environ[k] = before[k]
        else:
            os.environ.pop(k, None)
    pytest.fail(f"the test left environment variables changed: {', '.join(changed)} (use monkeypatch.setenv)")


@pytest.fixture(autouse=True)
def _no_leaked_log_handlers():
    """Detach and close the log handlers a test left on the package's logger (a run created and never finished
    keeps copying lines into its ``logs/driver.log``), so later tests' lines do not land in an old run's file."""
    import logging

    root = logging.getLogger("emonet_dist")
    before = list(root.handlers)
    yield
    for h in [h for h in root.handlers if h not in before]:
        root.removeHandler(h)
        h.close()
