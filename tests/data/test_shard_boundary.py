"""The shard boundary: what a bucket writer controls (index.json, tar bytes, the server) cannot reach a shell,
crash the reader with a raw exception, or hang it.

* no shell: index paths are checked on load, and a ``pipe:`` template runs without a shell (issue 14, row 1);
* one error type: every malformed sample is a ``ShardReadError`` naming shard and member, or is skipped and
  counted under ``data.bad_samples=skip``; ``emonet shard verify`` reports it (row 5);
* timeouts: a server that accepts and never answers is a clear ``ShardError`` within the timeout (row 7).

Each mutated shard is re-indexed (sha256 and size) so that the per-sample checks, not only the hash, are what
catches it. New names are imported inside the tests so that each test fails on its own on the old code.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from emonet_dist.cli import main
from emonet_dist.data.loader import eval_batches
from emonet_dist.data.shards import load_index, verify
from emonet_dist.data.stream import CorpusStream, shard_list
from emonet_dist.errors import ShardError
from emonet_testkit import tar_bytes, tar_members

SHARD = "test/shard-000000.tar"


# ---------------------------------------------------------------------------------------------------------------
# helpers: a private copy of the tiny shards, rewritten members, a re-indexed shard
# ---------------------------------------------------------------------------------------------------------------
def _copy(tiny_shards: Path, tmp_path: Path) -> Path:
    root = tmp_path / "shards"
    shutil.copytree(tiny_shards, root)
    return root




def _put(root: Path, data: bytes, rel: str = SHARD, **index_fields) -> Path:
    """Write ``data`` as shard ``rel`` of corpus tiny and make index.json agree with it (hash, size, ...)."""
    path = root / "tiny" / rel
    path.write_bytes(data)
    ipath = root / "tiny" / "index.json"
    index = json.loads(ipath.read_text())
    for sh in index["partitions"][rel.split("/")[0]]["shards"]:
        if sh["path"] == rel:
            sh.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), **index_fields)
    ipath.write_text(json.dumps(index))
    return path


def _stream(root, batch_size: int = 4, **kw) -> CorpusStream:
    sl = shard_list(str(root), "tiny", ["test"])
    targets = {c: i for i, c in enumerate(sorted(set(sl.labels)))}
    return CorpusStream(sl, targets, train=False, batch_size=batch_size, **kw)


def _read_all(root, **kw) -> list[dict]:
    return list(eval_batches(_stream(root, **kw)))


def _edit_json(members, i: int, edit) -> list[tuple[str, bytes]]:
    jsons = [k for k, (n, _) in enumerate(members) if n.endswith(".json")]
    name, data = members[jsons[i]]
    meta = json.loads(data)
    edit(meta)
    out = list(members)
    out[jsons[i]] = (name, json.dumps(meta).encode())
    return out


# ---------------------------------------------------------------------------------------------------------------
# row 1: nothing from an index or a template reaches a shell
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("evil", ["test/shard-000000.tar; touch {flag}", "test/$(touch {flag})",
                                  "../../../../{flag}", "/abs/shard-000000.tar", "test/../test/shard-000000.tar"])
def test_index_paths_outside_the_naming_scheme_are_refused_and_never_reach_a_shell(tiny_shards, tmp_path, evil):
    root = _copy(tiny_shards, tmp_path)
    flag = tmp_path / "flag"
    ipath = root / "tiny" / "index.json"
    index = json.loads(ipath.read_text())
    index["partitions"]["test"]["shards"][0]["path"] = evil.format(flag=flag)
    ipath.write_text(json.dumps(index))
    template = f"pipe:cat {root}/{{path}}"
    with pytest.raises(ShardError, match=r"shard path .* is not <partition>/shard-NNNNNN.tar"):
        list(eval_batches(_stream(template)))
    assert not flag.exists()


def test_a_pipe_template_with_shell_syntax_is_refused(tiny_shards, tmp_path):
    flag = tmp_path / "flag"
    for template in (f"pipe:cat {tiny_shards}/{{path}}; touch {flag}", f"pipe:cat {tiny_shards}/{{path}} | cat",
                     f"pipe:cat $(touch {flag}) {tiny_shards}/{{path}}"):
        with pytest.raises(ShardError, match="shell syntax .* without a shell"):
            shard_list(template, "tiny", ["test"])
    assert not flag.exists()


def test_a_pipe_template_gets_the_path_as_one_argument_and_its_exit_status_is_checked(tiny_shards, tmp_path):
    from emonet_dist.data.shards import shard_url

    # {path} inside a quoted argument with a space stays one argv element: `cat` sees one (missing) file name
    template = f"pipe:cat '{tiny_shards}/x {{path}}'"
    assert shard_url(template, "tiny/index.json") == f"pipe:cat '{tiny_shards}/x tiny/index.json'"
    with pytest.raises(ShardError, match="exited with status 1 .*No such file"):
        load_index(template, "tiny")
    with pytest.raises(ShardError, match="exited with status 1"):
        load_index("pipe:false {path}", "tiny")


# ---------------------------------------------------------------------------------------------------------------
# row 5: one error type for every malformed sample; skip-and-count on request; verify sees it
# ---------------------------------------------------------------------------------------------------------------
def _drop_json(members):
    return [m for m in members if m[0] != members[1][0]]  # the first sample's .json (members are flac, json, ...)


def _bad_label_type(members):
    return _edit_json(members, 0, lambda m: m.update(label=["neutral"]))


def _no_speaker(members):
    return _edit_json(members, 0, lambda m: m.pop("speaker"))


def _not_json(members):
    return [(n, b"{not json" if i == 1 else d) for i, (n, d) in enumerate(members)]


def _bad_audio(members):
    return [(n, d[:40] + b"\0" * 64 if i == 0 else d) for i, (n, d) in enumerate(members)]


def _extra_member(members):
    return members[:2] + [(members[0][0].replace(".flac", ".txt"), b"hi")] + members[2:]


@pytest.mark.parametrize("mutate, reason", [
    (_drop_json, "missing member .json"), (_bad_label_type, "'label' is list, expected str"),
    (_no_speaker, "'speaker' is missing"), (_not_json, "not JSON"), (_bad_audio, "audio does not decode"),
    (_extra_member, "unexpected member .txt")])
def test_a_malformed_sample_is_one_clear_error_or_is_skipped_and_counted(tiny_shards, tmp_path, mutate, reason):
    root = _copy(tiny_shards, tmp_path)
    members = tar_members(root / "tiny" / SHARD)
    key = members[0][0].split(".")[0]
    path = _put(root, tar_bytes(mutate(members)))
    with pytest.raises(ShardError, match=reason) as err:
        _read_all(root)
    assert type(err.value).__name__ == "ShardReadError"
    assert err.value.shard == str(path) and err.value.member.startswith(key) and reason in err.value.reason

    stream = _stream(root, bad_samples="skip")
    batches = list(eval_batches(stream))
    good = {i for b in _read_all(tiny_shards) for i in b["ids"]}
    got = [i for b in batches for i in b["ids"]]
    assert len(got) == len(good) - 1 and set(got) < good  # only the bad sample is missing
    assert stream.skipped.count == 1 and stream.skipped.reasons == {stream.skipped.records[0]["reason"]: 1}
    assert stream.skipped.records[0]["shard"] == str(path) and stream.skipped.records[0]["member"].startswith(key)

    checked, problems = verify(root)
    assert len(problems) == 1 and str(path) in problems[0] and key in problems[0] and reason in problems[0]
    assert verify(root, quick=True)[1] == []  # the index agrees with the bytes: --quick checks hashes only


def test_a_base256_size_field_is_a_clear_error_for_reader_and_verify(tiny_shards, tmp_path, capsys):
    root = _copy(tiny_shards, tmp_path)
    data = bytearray((root / "tiny" / SHARD).read_bytes())
    data[124:136] = b"\x80" + (1 << 80).to_bytes(11, "big")  # GNU base-256: a member of 2**80 bytes
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    _put(root, bytes(data))
    with pytest.raises(ShardError, match="base-256"):
        _read_all(root)
    checked, problems = verify(root)
    assert len(problems) == 1 and "base-256" in problems[0]
    assert main(["shard", "verify", str(root)]) == 1
    assert "1 problem(s)" in capsys.readouterr().out
    assert main(["shard", "verify", str(root), "--quick"]) == 0  # re-indexed: sizes and hashes agree
    assert main(["shard", "verify", str(root / "nowhere")]) == 2  # a clear error, no traceback


def test_a_truncated_or_short_shard_is_a_clear_error(tiny_shards, tmp_path):
    root = _copy(tiny_shards, tmp_path)
    full = (root / "tiny" / SHARD).read_bytes()
    _put(root, full[: len(full) // 2])
    with pytest.raises(ShardError, match="truncated"):
        _read_all(root)
    members = tar_members(tiny_shards / "tiny" / SHARD)
    _put(root, tar_bytes(members[:-2]))  # one sample fewer than the index lists
    with pytest.raises(ShardError, match="holds 4 samples, index.json says 5"):
        _read_all(root)
    assert len(verify(root)[1]) == 1


def test_a_shard_that_fails_its_hash_is_never_partly_used(tiny_shards, tmp_path):
    root = _copy(tiny_shards, tmp_path)
    path = root / "tiny" / SHARD
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="sha256 .* does not match index.json"):
        _read_all(root)
    stream = _stream(root, bad_samples="skip", batch_size=6)  # batch 0: the shard's 5 samples and 1 of the next
    got = [i for b in eval_batches(stream) for i in b["ids"]]
    assert len(got) == 12 - 5 and stream.skipped.count == 5
    with pytest.raises(ShardError, match="all 4 samples of batch 0 are bad"):  # dropping a batch would desync ranks
        list(eval_batches(_stream(root, bad_samples="skip", batch_size=4)))


def test_skipped_samples_reach_the_main_process_through_loader_workers(tiny_shards, tmp_path):
    from emonet_dist.data.loader import CorpusLoader

    root = _copy(tiny_shards, tmp_path)
    rel = "train/shard-000000.tar"
    _put(root, tar_bytes(_drop_json(tar_members(root / "tiny" / rel))), rel)
    sl = shard_list(str(root), "tiny", ["train"])
    targets = {c: i for i, c in enumerate(sorted(set(sl.labels)))}
    loader = CorpusLoader(CorpusStream(sl, targets, batch_size=8, max_seconds=0.2, bad_samples="skip"),
                          num_workers=1)
    try:
        n = sum(len(next(loader)["ids"]) for _ in range(6))  # one exact epoch: 48 samples in 6 batches
    finally:
        loader.close()
    assert n == 47 and loader.skipped.count == 1 and loader.skipped.records[0]["member"].endswith(".json")


@pytest.mark.parametrize("edit, where", [
    (lambda ix: ix["partitions"]["test"]["shards"][0].pop("sha256"), "sha256"),
    (lambda ix: ix["partitions"]["test"]["shards"][0].update(samples="5"), "samples"),
    (lambda ix: ix["partitions"]["test"]["shards"][0]["labels"].append("x"), "labels"),
    (lambda ix: ix.update(partitions=[]), "partitions"),
    (lambda ix: ix.update(corpus="other"), "corpus")])
def test_an_index_of_wrong_shape_is_a_clear_error_on_load_and_in_verify(tiny_shards, tmp_path, edit, where):
    root = _copy(tiny_shards, tmp_path)
    ipath = root / "tiny" / "index.json"
    index = json.loads(ipath.read_text())
    edit(index)
    ipath.write_text(json.dumps(index))
    with pytest.raises(ShardError, match=where):
        load_index(str(root), "tiny")
    checked, problems = verify(root)
    assert len(problems) == 1 and where in problems[0]


def test_the_policies_are_data_config_settings():
    from emonet_dist.config import load_config
    from emonet_dist.data.remote import UrlPolicy
    from emonet_dist.errors import ConfigError

    data = load_config(overrides=["data.bad_samples=skip", "data.url_timeout_s=2.5", "data.url_retries=0"]).data
    assert data.bad_samples == "skip" and UrlPolicy.from_config(data) == UrlPolicy(timeout_s=2.5, retries=0)
    assert load_config().data.bad_samples == "fail" and UrlPolicy.from_config(load_config().data) == UrlPolicy()
    for bad in ("data.bad_samples=drop", "data.url_timeout_s=0", "data.url_retries=-1"):
        with pytest.raises(ConfigError):
            load_config(overrides=[bad])


# ---------------------------------------------------------------------------------------------------------------
# row 7: timeouts and bounded retries on http(s)
# ---------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _silent_server(hold_s: float = 8.0):
    """A server on 127.0.0.1 that accepts connections and never answers; it stops by itself after ``hold_s``."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.1)
    stop, conns = threading.Event(), []

    def run():
        end = time.monotonic() + hold_s
        while not stop.is_set() and time.monotonic() < end:
            with contextlib.suppress(socket.timeout):
                conns.append(srv.accept()[0])
        for c in conns:
            c.close()
        srv.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)


def test_a_server_that_never_answers_is_a_clear_error_within_the_timeout(tiny_shards):
    from emonet_dist.data.remote import UrlPolicy

    policy = UrlPolicy(timeout_s=0.5, retries=1, backoff_s=0.1)
    with _silent_server() as url:
        t0 = time.monotonic()
        with pytest.raises(ShardError, match=r"after 2 attempt\(s\) with a 0.5 s timeout"):
            load_index(url, "tiny", policy)
        assert time.monotonic() - t0 < 10.0  # 2 x 0.5 s + 0.1 s nominal; the old reader never returned
        sl = shard_list(str(tiny_shards), "tiny", ["test"])
        stalled = type(sl)(sl.corpus, tuple(f"{url}/tiny/{Path(u).parent.name}/{Path(u).name}" for u in sl.urls),
                           sl.counts, sl.labels, sl.sha256)
        t0 = time.monotonic()
        with pytest.raises(ShardError, match="timeout"):
            list(eval_batches(CorpusStream(stalled, {"neutral": 0}, train=False, policy=policy)))
        assert time.monotonic() - t0 < 10.0  # 2 x 0.5 s + 0.1 s nominal; the old reader never returned


def test_http_reads_retry_a_failing_server_a_bounded_number_of_times(tiny_shards):
    from emonet_dist.data.remote import UrlPolicy

    hits = []

    class Flaky(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self):
            hits.append(self.path)
            if self.path.endswith("tiny/index.json") and len(hits) == 1 or "nope" in self.path:
                self.send_error(503)
            else:
                super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Flaky(*a, directory=str(tiny_shards)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        policy = UrlPolicy(timeout_s=2, retries=2, backoff_s=0.05)
        assert load_index(url, "tiny", policy) == load_index(str(tiny_shards), "tiny")  # the 503 was retried
        hits.clear()
        with pytest.raises(ShardError, match="after 3 attempt"):
            load_index(url, "nope", policy)
        assert len(hits) == 3
    finally:
        srv.shutdown()
        srv.server_close()
