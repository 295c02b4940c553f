"""Sharding: layout, resampling, checksums, kill-and-resume, per-corpus independence, URLs."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emonet_dist.cli import main
from emonet_dist.config import PrepareConfig, ShardConfig
from emonet_dist.corpora.manifest import read_manifest
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_dist.data.loader import eval_batches
from emonet_dist.data.shards import shard_corpus, shard_url, verify
from emonet_dist.data.stream import CorpusStream, shard_list
from emonet_testkit import write_tone


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_layout_index_and_samples(tiny_corpus, tiny_shards):
    index = json.loads((tiny_shards / "tiny" / "index.json").read_text())
    rows = read_manifest(tiny_corpus)
    assert index["utterances"] == len(rows) and index["classes"] == ["angry", "happy", "neutral", "sad"]
    for part, info in index["partitions"].items():
        assert info["utterances"] == sum(r.partition == part for r in rows)
        for sh in info["shards"]:
            path = tiny_shards / "tiny" / sh["path"]
            assert path.parent.name == part and path.name.startswith("shard-") and path.suffix == ".tar"
            members = _members(path)
            assert len(members) == 2 * sh["samples"] and len(sh["labels"]) == sh["samples"]
            for name, data in members.items():
                if name.endswith(".json"):
                    meta = json.loads(data)
                    assert {"id", "corpus", "label", "speaker", "partition", "duration", "num_samples"} <= set(meta)
                    assert meta["partition"] == part


def test_stereo_and_other_rates_become_16k_mono(tmp_path):
    raw = tmp_path / "raw"
    lines = ["path,label,speaker"]
    for i, (sr, ch) in enumerate([(44100, 2), (8000, 1), (16000, 1), (22050, 2)] * 2):
        write_tone(raw / f"f{i}.wav", seconds=1.0, sr=sr, channels=ch)
        lines.append(f"f{i}.wav,a,s{i % 4}")
    (raw / "list.csv").write_text("\n".join(lines) + "\n")
    prepare_corpus("csv", raw / "list.csv", tmp_path / "c", PrepareConfig(jobs=1, split="folds"), name="c")
    index = shard_corpus(tmp_path / "c", tmp_path / "s", ShardConfig(jobs=1))
    for part in index["partitions"].values():
        for sh in part["shards"]:
            for name, data in _members(tmp_path / "s" / "c" / sh["path"]).items():
                if name.endswith(".flac"):
                    info = sf.info(io.BytesIO(data))
                    assert info.samplerate == 16000 and info.channels == 1
                    assert abs(info.frames - 16000) <= 2


def test_flipped_byte_is_caught(tiny_shards, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_shards, copy)
    assert verify(copy)[1] == []
    victim = sorted((copy / "tiny" / "train").glob("*.tar"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0x01
    victim.write_bytes(bytes(data))
    checked, problems = verify(copy)
    assert len(problems) == 1 and str(victim) in problems[0] and "sha256" in problems[0]
    assert main(["shard", "verify", str(copy)]) == 1
    assert "1 problem(s)" in capsys.readouterr().out


# `emonet shard` in a subprocess whose process group is SIGKILLed at a point the test controls: right before the
# fourth shard is started (after three shards and their progress records were written), as a node failure would.
KILL_AFTER_THREE = r"""
import os, signal, sys
import emonet_dist.data.shards as shards
from emonet_dist.cli import main
real, calls = shards._write_one, []
def write_one(task):
    calls.append(task["rel"])
    if len(calls) == 4:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return real(task)
shards._write_one = write_one
sys.exit(main(sys.argv[1:]))
"""


def test_sharding_survives_a_kill(tmp_path):
    raw = tmp_path / "raw"
    lines = ["path,label,speaker"]
    for i in range(12):
        write_tone(raw / f"f{i:02d}.wav", seconds=1.0, sr=44100, channels=2, seed=i)
        lines.append(f"f{i:02d}.wav,{'ab'[i % 2]},s{i % 6}")
    (raw / "list.csv").write_text("\n".join(lines) + "\n")
    prepare_corpus("csv", raw / "list.csv", tmp_path / "big", PrepareConfig(jobs=1), name="big")
    out = tmp_path / "shards"
    args = ["shard", str(tmp_path / "big"), "--out", str(out), "--samples-per-shard", "1", "--jobs", "1"]
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_THREE, *args], capture_output=True, text=True,
                          timeout=300, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "big" / "index.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("big/*/shard-*.tar")}
    assert len(finished) == 3
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "3 reused" in res.stderr
    for p, mtime in finished.items():  # finished shards were not redone
        assert p.stat().st_mtime_ns == mtime
    checked, problems = verify(out)
    assert checked == 12 and problems == []
    assert not list(out.glob("**/*.tmp"))


def test_adding_a_corpus_writes_only_that_corpus(tiny_corpus, tmp_path):
    out = tmp_path / "s"
    shard_corpus(tiny_corpus, out, ShardConfig(samples_per_shard=10, jobs=1))
    before = {p: p.stat().st_mtime_ns for p in (out / "tiny").rglob("*") if p.is_file()}
    raw = json.loads((tiny_corpus / "report.json").read_text())["raw"]
    prepare_corpus("csv", raw, tmp_path / "other", PrepareConfig(jobs=1), name="other")
    assert main(["shard", str(tiny_corpus), str(tmp_path / "other"), "--out", str(out),
                 "--samples-per-shard", "10", "--jobs", "1"]) == 0
    after = {p: p.stat().st_mtime_ns for p in (out / "tiny").rglob("*") if p.is_file()}
    assert after == before
    assert (out / "other" / "index.json").is_file()
    # a different shard setting on an existing corpus is refused rather than mixed in
    from emonet_dist.errors import ShardError

    (out / "tiny" / "index.json").unlink()
    with pytest.raises(ShardError, match="--force"):
        shard_corpus(tiny_corpus, out, ShardConfig(samples_per_shard=7, jobs=1))


def test_rerun_gives_identical_bytes(tiny_corpus, tiny_shards, tmp_path):
    index = shard_corpus(tiny_corpus, tmp_path / "again", ShardConfig(samples_per_shard=5, jobs=2))
    ref = json.loads((tiny_shards / "tiny" / "index.json").read_text())
    assert [s["sha256"] for p in index["partitions"].values() for s in p["shards"]] == \
           [s["sha256"] for p in ref["partitions"].values() for s in p["shards"]]


@pytest.mark.parametrize("scheme", ["file", "pipe"])
def test_shards_stream_from_urls(tiny_shards, scheme):
    root = f"file://{tiny_shards}" if scheme == "file" else f"pipe:cat {tiny_shards}/{{path}}"
    assert shard_url(root, "tiny/index.json").endswith(f"{tiny_shards}/tiny/index.json")
    local = shard_list(str(tiny_shards), "tiny", ["test"])
    remote = shard_list(root, "tiny", ["test"])
    targets = {c: i for i, c in enumerate(sorted(set(local.labels)))}
    a = [b for b in eval_batches(CorpusStream(local, targets, train=False, batch_size=4))]
    b = [b for b in eval_batches(CorpusStream(remote, targets, train=False, batch_size=4))]
    assert [x["ids"] for x in a] == [x["ids"] for x in b]
    assert all(np.array_equal(x["waves"], y["waves"]) for x, y in zip(a, b))
