"""Fixtures of the cluster tests: two synthetic corpora built and sharded with the `emonet` CLI, as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from emonet_testkit import run_cli


@pytest.fixture(scope="session")
def cli_synth_shards(tmp_path_factory) -> Path:
    """synth2 + synth4 (544 utterances) from `emonet corpus synth`, sharded by `emonet shard` (64 per shard)."""
    root = tmp_path_factory.mktemp("cli_synth")
    run_cli("corpus", "synth", "--out", str(root / "corpora"), "--names", "synth2", "synth4", "--jobs", "1")
    run_cli("shard", str(root / "corpora" / "synth2"), str(root / "corpora" / "synth4"), "--out", str(root / "shards"),
            "--samples-per-shard", "64", "--jobs", "1")
    return root / "shards"
