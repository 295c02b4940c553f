"""Speaker-independent partitions, folds and the leakage check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emonet_dist.config import PrepareConfig
from emonet_dist.corpora.manifest import Utterance, check_speaker_disjoint, read_manifest, write_manifest
from emonet_dist.corpora.partitions import fold_split, speaker_split
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_dist.data.shards import shard_corpus
from emonet_dist.errors import CorpusError, SpeakerLeakageError


def _counts(n_spk=40, n_cls=5, seed=0):
    rng = np.random.default_rng(seed)
    return [f"s{i}" for i in range(n_spk)], rng.integers(1, 30, size=(n_spk, n_cls))


def test_speaker_split_is_disjoint_deterministic_and_close_to_targets():
    spk, counts = _counts()
    a = speaker_split(spk, counts, PrepareConfig(seed=1))
    assert a == speaker_split(spk, counts, PrepareConfig(seed=1))
    assert a != speaker_split(spk, counts, PrepareConfig(seed=2))
    # input order does not matter
    perm = np.random.default_rng(5).permutation(len(spk))
    assert speaker_split([spk[i] for i in perm], counts[perm], PrepareConfig(seed=1)) == a
    total = counts.sum()
    for part, target in (("train", 0.7), ("dev", 0.15), ("test", 0.15)):
        share = sum(counts[i].sum() for i, s in enumerate(spk) if a[s] == part) / total
        assert abs(share - target) < 0.05, (part, share)


def test_too_few_speakers_is_a_clear_error():
    with pytest.raises(CorpusError, match="2 speaker"):
        speaker_split(["a", "b"], np.ones((2, 2), int), PrepareConfig())


def test_folds():
    assert fold_split({"Session1": 10, "Session2": 12}, 0, 0) == {"Session1": "session1", "Session2": "session2"}
    folds = fold_split({f"s{i}": 10 + i for i in range(10)}, 3, 0)
    assert set(folds.values()) == {"fold1", "fold2", "fold3"}
    with pytest.raises(CorpusError, match="need at least 4"):
        fold_split({"a": 1, "b": 1, "c": 1}, 4, 0)


def test_prepare_folds_are_speaker_groups(tiny_corpus, tmp_path):
    listing = json.loads((tiny_corpus / "report.json").read_text())["raw"]
    report = prepare_corpus("csv", listing, tmp_path / "f", PrepareConfig(split="folds", num_folds=3, jobs=1), name="t")
    assert set(report["per_partition"]) == {"fold1", "fold2", "fold3"}
    check_speaker_disjoint(read_manifest(tmp_path / "f"))


def _leaky_rows():
    return [Utterance(f"c/{i}", "c", f"/x/{i}.wav", "a", "spk1", 1.0, p) for i, p in enumerate(["train", "test"])]


def test_leaking_manifest_is_refused(tmp_path):
    with pytest.raises(SpeakerLeakageError, match="speaker 'c/spk1' is in test and train"):
        check_speaker_disjoint(_leaky_rows())
    assert check_speaker_disjoint(_leaky_rows(), allow_overlap=True) == {"c/spk1": ["test", "train"]}
    # sharding re-checks the manifest it is given
    (tmp_path / "c").mkdir()
    write_manifest(_leaky_rows(), tmp_path / "c" / "manifest.jsonl")
    with pytest.raises(SpeakerLeakageError, match="--allow-speaker-overlap"):
        shard_corpus(tmp_path / "c", tmp_path / "shards")


def test_official_partitions_that_leak_are_refused_unless_overridden(tmp_path, tiny_corpus):
    raw = json.loads((tiny_corpus / "report.json").read_text())["raw"]
    lines = open(raw).read().splitlines()
    lines[0] += ",partition"
    lines[1:] = [ln + ("," + ("train" if i % 2 else "test")) for i, ln in enumerate(lines[1:])]
    leaky = Path(raw).parent / "leaky.csv"  # next to the audio: paths in the list are relative
    leaky.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpeakerLeakageError):
        prepare_corpus("csv", leaky, tmp_path / "out", PrepareConfig(jobs=1))
    report = prepare_corpus("csv", leaky, tmp_path / "out", PrepareConfig(jobs=1, allow_speaker_overlap=True))
    assert report["split"] == "official" and set(report["per_partition"]) == {"train", "test"}


def test_repartition_streams_and_keeps_speakers_whole(tiny_corpus, tmp_path):
    from emonet_dist.cli import main

    assert main(["corpus", "partition", str(tiny_corpus), "--out", str(tmp_path / "re"), "--seed", "5"]) == 0
    rows = read_manifest(tmp_path / "re")
    assert len(rows) == len(read_manifest(tiny_corpus))
    check_speaker_disjoint(rows)
    assert {r.partition for r in rows} == {"train", "dev", "test"}
