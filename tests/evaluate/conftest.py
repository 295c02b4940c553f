"""Fixtures of the evaluation tests: synthetic run directories laid out as ``emonet train`` leaves them."""

from __future__ import annotations

import pytest

from emonet_testkit import write_run


@pytest.fixture
def make_run(tmp_path):
    """``make_run(name, corpora, **kw)`` -> run directory under ``tmp_path / "runs"``."""
    return lambda name, corpora, **kw: write_run(tmp_path / "runs", name, corpora, **kw)
