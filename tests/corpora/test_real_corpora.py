"""Recipes on the real corpora in ../shared/data, compared row by row with each reference manifest."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from emonet_dist.config import PrepareConfig
from emonet_dist.corpora.manifest import read_manifest
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_testkit import shared_corpus

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("name, n_utts, n_spk, n_cls", [("ravdess", 1440, 24, 8), ("emovo", 588, 6, 7),
                                                         ("urdu", 400, 29, 4)])
def test_recipe_matches_reference(name, n_utts, n_spk, n_cls, tmp_path):
    root = shared_corpus(name)
    report = prepare_corpus(name, root / "audio", tmp_path / name, PrepareConfig())
    assert report["utterances"] == n_utts and report["speakers"] == n_spk and len(report["classes"]) == n_cls
    assert report["skipped_count"] == 0
    rows = {Path(r.path).resolve(): r for r in read_manifest(tmp_path / name)}
    with open(root / "reference_manifest.csv", newline="") as f:
        ref = list(csv.DictReader(f))
    assert len(ref) == len(rows)
    for line in ref:  # row by row: same file, same label, same harmonised label, same speaker
        row = rows[(root / line["path"]).resolve()]
        assert row.label == line["label"], line["path"]
        assert row.extra["label_std"] == line["label_std"], line["path"]
        assert row.speaker == line["speaker"], line["path"]
        assert row.extra["gender"] == line["gender"], line["path"]
    # speaker-independent partitions covering every class
    parts = {}
    for r in rows.values():
        parts.setdefault(r.speaker, set()).add(r.partition)
    assert all(len(p) == 1 for p in parts.values())
    assert set(report["per_partition"]) == {"train", "dev", "test"}
    for part, counts in report["per_partition_class"].items():
        assert set(counts) == set(report["classes"]), f"{name}/{part} lacks a class"
