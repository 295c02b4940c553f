"""CLI behaviour a user sees: one-line errors with a way out, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emonet_dist.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emonet_dist.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, needle", [
    (["corpus", "prepare", "ravdes", "x", "--out", "y"], "unknown recipe 'ravdes'"),
    (["corpus", "prepare", "ravdess", "/nonexistent", "--out", "y"], "does not exist"),
    (["corpus", "prepare", "ravdess", "x", "--out", "y", "prepare.sed=3"], "did you mean 'prepare.seed'"),
    (["corpus", "prepare", "ravdess", "x", "--out", "y", "prepare.seed=abc"], "prepare.seed: expected int"),
    (["corpus", "prepare"], "the following arguments are required"),
    (["corpus", "prepare", "ravdess", "x", "--out", "y", "--split", "random"], "invalid choice"),
    (["shard", "verify", "/nonexistent"], "no corpus index found"),
    (["shard", "some_dir"], "needs --out"),
    (["frobnicate"], "invalid choice"),
])
def test_errors_are_one_line(args, needle):
    res = run_cli(*args)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_recipes_and_config_show(capsys):
    assert main(["corpus", "recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("ravdess", "emovo", "urdu", "emodb", "casia", "iemocap", "crema-d", "tess", "savee", "csv"):
        assert name in out
    assert main(["config", "show", "data.batch_size=7"]) == 0
    assert "batch_size: 7" in capsys.readouterr().out
