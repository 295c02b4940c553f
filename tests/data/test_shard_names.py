"""`emonet shard` writes and deletes only inside --out, and a killed run leaves no worker processes behind.

Issue 14, rows 2 (a manifest's corpus name chose the directory that ``--force`` deleted) and 12 (SIGKILL of
``emonet shard --jobs 2`` orphaned both pool workers, blocked forever).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emonet_dist.config import ShardConfig
from emonet_dist.corpora.manifest import Utterance, write_manifest
from emonet_dist.data.shards import shard_corpus
from emonet_dist.errors import EmonetError
from emonet_testkit import write_tone

ONE = ShardConfig(jobs=1, samples_per_shard=4)


def _manifest(root: Path, corpus: str = "tiny", partition=lambda i: "train", n: int = 6, seconds: float = 0.3,
              sr: int = 16000) -> Path:
    """A prepared-corpus directory written by hand, so its names can be anything a file could hold."""
    rows = []
    for i in range(n):
        wav = write_tone(root / "raw" / f"u{i}.wav", seconds, sr=sr, seed=i)
        rows.append(Utterance(f"{corpus}/u{i}", corpus, str(wav), "angry" if i % 2 else "sad", f"s{i}", seconds,
                              partition(i)))
    out = root / "prepared"
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(rows, out / "manifest.jsonl")
    return out


def _victim(root: Path) -> Path:
    victim = root / "victim"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    return victim


# [1] names ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_force_never_deletes_outside_out(tmp_path, how):
    victim = _victim(tmp_path)
    corpus = str(victim) if how == "absolute" else "../victim"
    prepared = _manifest(tmp_path, corpus=corpus)
    out = tmp_path / "shards"
    with pytest.raises(EmonetError, match="not a valid name"):
        shard_corpus(prepared, out, ONE, force=True)
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]  # not deleted, nothing written there
    assert not out.exists() or not any(out.iterdir())


def test_partition_names_cannot_leave_the_corpus_directory(tmp_path):
    victim = _victim(tmp_path)
    prepared = _manifest(tmp_path, partition=lambda i: "train" if i else str(victim))
    with pytest.raises(EmonetError, match=r"manifest.jsonl:1: partition name '/.*' is not a valid name"):
        shard_corpus(prepared, tmp_path / "shards", ONE)
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


def test_empty_partition_is_refused_before_writing(tmp_path):
    prepared = _manifest(tmp_path, partition=lambda i: "train" if i else "")
    with pytest.raises(EmonetError, match="not a valid name"):
        shard_corpus(prepared, tmp_path / "shards", ONE)
    assert not (tmp_path / "shards").exists()


def test_force_does_not_follow_a_symlinked_corpus_directory(tmp_path):
    victim = _victim(tmp_path)
    prepared = _manifest(tmp_path)
    out = tmp_path / "shards"
    out.mkdir()
    (out / "tiny").symlink_to(victim)
    with pytest.raises(EmonetError, match="does not stay inside"):
        shard_corpus(prepared, out, ONE, force=True)
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]


def test_good_names_still_shard(tmp_path):
    prepared = _manifest(tmp_path, corpus="crema-d", partition=lambda i: ("train", "dev.v2", "test")[i % 3])
    index = shard_corpus(prepared, tmp_path / "shards", ONE, force=True)
    assert index["corpus"] == "crema-d" and sorted(index["partitions"]) == ["dev.v2", "test", "train"]
    assert (tmp_path / "shards" / "crema-d" / "dev.v2" / "shard-000000.tar").is_file()


# [2] process hygiene --------------------------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    out = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            out.add(int(proc.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie holds no memory; its reaper (PID 1) may be slow to collect it


def _busy_corpus(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` hard links to one 3 s 44.1 kHz FLAC (decoding and resampling keep workers busy for seconds, at no
    disk cost): returns the CSV list for ``corpus prepare csv`` and a prepared directory for ``shard``."""
    src = write_tone(root / "src.flac", 3.0, sr=44100)
    lines, rows = ["path,label,speaker"], []
    for i in range(n):
        os.link(src, root / f"u{i}.flac")
        lines.append(f"u{i}.flac,{'angry' if i % 2 else 'sad'},s{i}")
        rows.append(Utterance(f"busy/u{i}", "busy", str(root / f"u{i}.flac"), "angry", f"s{i}", 3.0, "train"))
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    (root / "prepared").mkdir()
    write_manifest(rows, root / "prepared" / "manifest.jsonl")
    return root / "list.csv", root / "prepared"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
@pytest.mark.parametrize("command", ["shard", "corpus prepare"])
def test_sigkill_of_the_parent_leaves_no_pool_workers(tmp_path, command):
    listing, prepared = _busy_corpus(tmp_path, 1024)
    args = ["shard", str(prepared), "--out", str(tmp_path / "shards"), "--samples-per-shard", "2"] \
        if command == "shard" else ["corpus", "prepare", "csv", str(listing), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen([sys.executable, "-m", "emonet_dist.cli", *args, "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: set[int] = set()
    try:
        deadline = time.time() + 60
        while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
            workers |= _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) >= 2, f"no pool workers appeared (exit status {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, as the OOM killer would
        proc.wait(10)
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        left = sorted(w for w in workers if _alive(w))
        assert not left, f"worker(s) {left} outlived their SIGKILLed parent"
    finally:
        for w in workers:  # only the processes this test started
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
