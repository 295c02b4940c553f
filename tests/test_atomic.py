"""Atomic replacement: a reader sees the old content or the new one; a failed write leaves the old one and no
temporary file."""

from __future__ import annotations

import pytest

from emonet_dist import atomic


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.json"
    atomic.write_text(path, "old")
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_a_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic.replacing(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("the writer crashed")
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]
