"""Fuzzing the shard boundary (issue 14, acceptance 2): mutated real shards give the correct samples or the one
shard error, never another exception, never a hang; ``shard verify`` returns problems and never raises.

A real shard of the ``tiny`` corpus (5 samples) is mutated in memory: member renames, deletions, duplicates and
reorderings, JSON edits, then byte flips, header-field overwrites (octal garbage, base-256) and truncations.
Each mutated shard is read twice: against the original index (the sha256 must catch every change, so the
outcome is exactly the original samples or a ``ShardError``) and re-indexed to the mutated bytes (a hostile
writer who also writes the index: the per-sample checks must hold, every batch is well formed). Every read runs
in a thread with a 10 s limit. 500 examples, derandomized, about a minute on one core.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emonet_dist.data.loader import eval_batches
from emonet_dist.data.shards import load_index, verify
from emonet_dist.data.stream import CorpusStream, ShardList
from emonet_dist.errors import ShardError
from emonet_testkit import tar_bytes

REL = "test/shard-000000.tar"
LIMIT_S = 10.0

_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                     max_leaves=6)


class _World(dict):
    def __repr__(self) -> str:  # hypothesis prints fixtures of a failing example; the shard bytes are noise
        return "<the tiny test shard and its index>"


@pytest.fixture(scope="module")
def world(tiny_shards, tmp_path_factory):
    """A shard root holding one real shard (its bytes and members kept for mutation) and the reference batches."""
    root = tmp_path_factory.mktemp("fuzz") / "shards"
    (root / "tiny" / "test").mkdir(parents=True)
    index = json.loads((tiny_shards / "tiny" / "index.json").read_text())
    sh = dict(index["partitions"]["test"]["shards"][0])
    index["partitions"] = {"test": {"utterances": sh["samples"], "shards": [sh]}}
    original = (tiny_shards / "tiny" / REL).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(original)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    targets = {c: i for i, c in enumerate(index["classes"])}
    w = _World(root=root, index=index, original=original, members=members, targets=targets)
    _write(w, original, sh["sha256"])
    w["reference"] = _outcome(_stream(w, root / "tiny" / REL, sh["sha256"], "fail"))
    assert isinstance(w["reference"], list) and sum(len(b["ids"]) for b in w["reference"]) == 5
    return w


def _write(w, data: bytes, sha: str) -> None:
    """Put ``data`` as the shard and an index whose entry has hash ``sha`` (and the data's size)."""
    index = json.loads(json.dumps(w["index"]))
    index["partitions"]["test"]["shards"][0].update(sha256=sha, bytes=len(data))
    (w["root"] / "tiny" / REL).write_bytes(data)
    (w["root"] / "tiny" / "index.json").write_text(json.dumps(index))


def _stream(w, path, sha: str, policy: str) -> CorpusStream:
    sh = w["index"]["partitions"]["test"]["shards"][0]
    sl = ShardList("tiny", (str(path),), (sh["samples"],), tuple(sh["labels"]), (sha,))
    return CorpusStream(sl, w["targets"], train=False, batch_size=2, bad_samples=policy)


def _bounded(fn):
    """``fn()``'s result or exception, from a thread with a time limit (a hang fails the test)."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came out
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(LIMIT_S)
    assert not t.is_alive(), f"a read took longer than {LIMIT_S} s"
    if "error" in out:
        return out["error"]
    return out["value"]


def _outcome(stream: CorpusStream):
    """The batches of one pass (as plain data), or the ShardError; any other exception fails the test."""
    got = _bounded(lambda: [{"ids": b["ids"], "labels": b["labels"], "waves": b["waves"].numpy(),
                             "lengths": b["lengths"].numpy(), "skipped": b["skipped"]}
                            for b in eval_batches(stream)])
    if isinstance(got, BaseException):
        assert isinstance(got, ShardError), f"{type(got).__name__}: {got}"
    return got


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x["ids"] == y["ids"] and np.array_equal(x["waves"], y["waves"])
                                    for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------------------------

def _edit_json(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["drop", "set", "bytes", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "deep":
        return b"[" * 100000 + b"]" * 100000
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):  # an earlier mutation of this example already replaced the member
        meta = None
    if not isinstance(meta, dict):
        return draw(st.binary(max_size=40))
    key = draw(st.sampled_from(sorted(meta) + ["other"]))
    if kind == "drop":
        meta.pop(key, None)
    else:
        meta[key] = draw(_json)
    return json.dumps(meta).encode()


def _mutate_members(members, draw):
    members = list(members)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["json", "rename", "delete", "duplicate", "swap"]))
        jsons = [k for k, (n, _) in enumerate(members) if n.endswith(".json")]
        i = draw(st.sampled_from(jsons)) if op == "json" and jsons else draw(st.integers(0, len(members) - 1))
        name, data = members[i]
        if op == "rename":
            members[i] = (draw(st.sampled_from([name.replace(".json", ".flac"), name.replace(".flac", ".txt"),
                                                "x/" + name, name.split(".")[0], "a.b.c", "é.flac"])), data)
        elif op == "delete" and len(members) > 1:
            del members[i]
        elif op == "duplicate":
            members.insert(i, (name, data))
        elif op == "swap":
            j = draw(st.integers(0, len(members) - 1))
            members[i], members[j] = members[j], members[i]
        elif op == "json" and name.endswith(".json"):
            members[i] = (name, _edit_json(data, draw))
    return members


def _mutate_bytes(data: bytes, draw) -> bytes:
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "field", "truncate"]))
        if not data:
            break
        if op == "flip":
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif op == "field":  # a header's size, mode or checksum field (first headers are at 0, 1024, 2048 ...)
            at = draw(st.sampled_from([0, 512, 1024, 2048, 3072])) + draw(st.sampled_from([100, 124, 148]))
            value = draw(st.sampled_from([b"\x80" + b"\xff" * 11, b"\xff" * 12, b"99999999999\0", b"-1\0",
                                          b"77777777777\0", b"\0" * 12]))
            data[at:at + 12] = value[:12]
        else:
            data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


# ---------------------------------------------------------------------------------------------------------------
# the property
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_shards_give_the_right_samples_or_a_shard_error(world, data):
    draw = data.draw
    members = world["members"] if draw(st.integers(0, 3)) == 0 else _mutate_members(world["members"], draw)
    shard = tar_bytes(members) if members is not world["members"] else world["original"]
    shard = _mutate_bytes(shard, draw) if draw(st.booleans()) else shard
    path = world["root"] / "tiny" / REL
    sha0 = world["index"]["partitions"]["test"]["shards"][0]["sha256"]

    # against the original index: exactly the original samples, or the shard error
    _write(world, shard, sha0)
    for policy in ("fail", "skip"):  # skip: a shard that fails its hash is skipped whole, so its batches fail
        got = _outcome(_stream(world, path, sha0, policy))
        assert isinstance(got, ShardError) or _same(got, world["reference"])
        assert isinstance(got, ShardError) != (shard == world["original"])
    checked, problems = _bounded(lambda: verify(world["root"]))
    assert checked == 1 and all(isinstance(p, str) for p in problems)
    assert (problems == []) == (shard == world["original"])
    assert (_bounded(lambda: verify(world["root"], quick=True))[1] == []) == (shard == world["original"])

    # re-indexed to the mutated bytes (a writer who also writes the index): well-formed batches or the error
    _write(world, shard, hashlib.sha256(shard).hexdigest())
    for policy in ("fail", "skip"):
        got = _outcome(_stream(world, path, hashlib.sha256(shard).hexdigest(), policy))
        if not isinstance(got, ShardError):
            for b in got:
                assert b["waves"].dtype == np.float32 and np.isfinite(b["waves"]).all()
                assert len(b["ids"]) == len(b["labels"]) == len(b["lengths"]) >= 1
                assert set(b["labels"]) <= set(world["targets"]) and all(isinstance(i, str) for i in b["ids"])
                assert all(isinstance(r["reason"], str) and r["shard"] == str(path) for r in b["skipped"])
    checked, problems = _bounded(lambda: verify(world["root"]))
    assert checked == 1 and all(isinstance(p, str) for p in problems)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_indexes_are_a_shard_error_or_loadable(world, data):
    index = json.loads(json.dumps(world["index"]))
    node, parent, key = index, None, None
    for _ in range(data.draw(st.integers(1, 5))):  # walk down to a random field
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            break
        parent, key = node, data.draw(st.sampled_from(keys))
        if not isinstance(node[key], (dict, list)) or data.draw(st.booleans()):
            break
        node = node[key]
    if parent is not None:
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[key]
        else:
            parent[key] = data.draw(_json | st.sampled_from(["../x", "test/shard-000000.tar; id", "$(id)"]))
    _write(world, world["original"], world["index"]["partitions"]["test"]["shards"][0]["sha256"])
    (world["root"] / "tiny" / "index.json").write_text(json.dumps(index))
    got = _bounded(lambda: load_index(str(world["root"]), "tiny"))
    assert isinstance(got, (dict, ShardError)), f"{type(got).__name__}: {got}"
    checked, problems = _bounded(lambda: verify(world["root"]))
    assert all(isinstance(p, str) for p in problems)
    if isinstance(got, ShardError):
        assert problems
