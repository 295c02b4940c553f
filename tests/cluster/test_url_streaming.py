"""Shards streamed from URLs give exactly what local paths give.

A static HTTP server on 127.0.0.1 (a thread of the test, stopped at the end) stands in for object storage. The
shard root is then ``http://127.0.0.1:PORT`` (WebDataset opens it with curl) or a ``pipe:`` command template,
the form used for S3/GCS (``pipe:aws s3 cp --quiet s3://bucket/shards/{path} -``); here the command is curl.
Fast tier: batches of exact and resampled epochs are identical to those from the local directory. Slow tier: a
tiny 2-worker Ray run from the URL ends with the same parameters and metrics as the same run from the path.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from emonet_dist.data.shards import load_index
from emonet_dist.data.stream import CorpusStream, shard_list
from emonet_dist.errors import ShardError


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # every request would otherwise print a line
        pass

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def serve():
    """``serve(directory) -> (base URL, list of requested paths)``; every server is shut down afterwards."""
    servers = []

    def start(directory: Path):
        handler = type("Handler", (_Quiet,), {"requests": []})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", handler.requests

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _batches(root: str, corpus: str, n: int | None = None, **kw) -> list[dict]:
    sl = shard_list(root, corpus, ["train"])
    targets = {c: i for i, c in enumerate(sorted(set(sl.labels)))}
    stream = CorpusStream(sl, targets, batch_size=4, max_seconds=0.3, window=8, seed=3, **kw)
    out = []
    for b in stream:
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x["ids"] == y["ids"] and torch.equal(x["waves"], y["waves"])
                                    and torch.equal(x["lengths"], y["lengths"]) for x, y in zip(a, b))


@pytest.mark.parametrize("rank", [0, 1])
def test_http_and_pipe_roots_stream_the_same_batches_as_the_directory(tiny_shards, serve, rank):
    url, requests = serve(tiny_shards)
    assert load_index(url, "tiny") == load_index(str(tiny_shards), "tiny")
    local = _batches(str(tiny_shards), "tiny", rank=rank, world=2)
    assert local and _same(_batches(url, "tiny", rank=rank, world=2), local)
    assert any(r.endswith(".tar") for r in requests)  # the shards really came over HTTP
    # How an object-store CLI is plugged in: one plain command, run without a shell. The reader drains every
    # shard to its end (the index's sha256 covers the tar padding too), so the writer never dies of a closed pipe
    # and any nonzero exit status is an error.
    pipe = f"pipe:curl -s -f {url}/{{path}}"
    assert _same(_batches(pipe, "tiny", rank=rank, world=2), local)


def test_resampled_epochs_over_http_match_the_directory(tiny_shards, serve):
    url, _ = serve(tiny_shards)
    local = _batches(str(tiny_shards), "tiny", n=12, epoch_mode="resampled")
    remote = _batches(url, "tiny", n=12, epoch_mode="resampled")
    assert _same(remote, local)
    # resampled: shards are drawn with replacement, so a dozen batches revisit samples rather than cover an epoch
    ids = [i for b in local for i in b["ids"]]
    assert len(ids) == 48 and len(set(ids)) < len(ids)


def test_a_missing_corpus_behind_a_url_is_a_clear_error(tiny_shards, serve):
    url, _ = serve(tiny_shards)
    with pytest.raises(ShardError, match=f"no shards for corpus 'nope' at {url}/nope/index.json"):
        load_index(url, "nope")
    with pytest.raises(ShardError, match=r"cannot read pipe:curl .*nope/index.json: the command exited with "
                                         r"status 22"):  # a missing object is curl's exit 22, a clear error
        load_index(f"pipe:curl -s -f {url}/{{path}}", "nope")
    with pytest.raises(ShardError, match=r"contains shell syntax '\|'.*without a shell"):  # shell syntax is refused
        load_index(f"pipe:curl -s -f {url}/{{path}} || [ $? -eq 23 ]", "tiny")


@pytest.mark.slow
def test_training_from_http_matches_training_from_the_directory(cli_synth_shards, serve, tmp_path, ray_local):
    from safetensors.torch import load_file

    from emonet_dist.train.launch import run_training
    from emonet_testkit import tiny_train_config

    url, requests = serve(cli_synth_shards)
    results = {}
    for where, root in (("local", str(cli_synth_shards)), ("http", url)):
        cfg = tiny_train_config(root, tmp_path / where, name=f"url-{where}").override(
            "tracking.enabled=false", "data.corpora=[{name: synth2, epoch_mode: resampled}, {name: synth4}]")
        results[where] = run_training(cfg)
    local, remote = results["local"], results["http"]
    assert sum(r.endswith(".tar") for r in requests) >= 4  # every rank read its shards over HTTP
    a, b = (load_file(str(r.dir / "final" / "model.safetensors")) for r in (local, remote))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    scores = {k: v for k, v in local.metrics.items() if k.startswith(("dev_uar", "test_uar"))}
    assert scores and {k: remote.metrics[k] for k in scores} == scores
    assert np.isfinite(list(scores.values())).all()
