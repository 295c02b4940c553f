"""Issue 14, row 9 (fast tier): an MLflow server that is down or silent never holds up a run.

- an unreachable server at start fails within seconds, before Ray or anything else starts;
- every MLflow call we make is bounded in time (the old client waited about 250 s per call on a dead server);
- rank 0's logger writes the journal and returns at once, its calls going through a background sender with retries,
  backoff and a flush deadline;
- a run whose tracking failed finishes with ``tracking: "incomplete"`` and a warning, not an error;
- ``track sync`` sends only the points the MLflow run lacks, so it is idempotent on any store (MLflow's file store
  keeps exact duplicates, which the old replay added on every sync).

The real-server outage in the middle of a 2-worker run is ``tests/test_mlflow_outage.py`` (slow tier).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from emonet_dist import tracking
from emonet_dist.config import Config
from emonet_dist.errors import EmonetError
from emonet_dist.runs import Run, absolute_paths, sync_run
from emonet_dist.tracking_http import HTTP_LIMITS, http_limits
from emonet_dist.tracking_sender import Retry, Sender
from emonet_testkit import free_port

RUN_ID = "0" * 32


def dead_uri() -> str:
    """A tracking URI on a closed port of 127.0.0.1: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def silent_uri():
    """A tracking URI whose server accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"http://127.0.0.1:{silent.getsockname()[1]}"


def _timed(fn):
    t0 = time.monotonic()
    try:
        return fn(), time.monotonic() - t0
    except Exception as exc:  # noqa: BLE001 - handed to the test
        return exc, time.monotonic() - t0


@pytest.fixture()
def cfg(tiny_shards, tmp_path):
    return absolute_paths(Config().replace(
        {"data.corpora": [{"name": "tiny"}], "data.shards": str(tiny_shards), "tracking.experiment": "faults"},
        output_dir=str(tmp_path / "runs")))


# [1] at start ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("server", ["refused", "silent"])
def test_an_unreachable_server_fails_a_run_within_seconds_before_ray_starts(cfg, server):
    import ray

    from emonet_dist.train.launch import run_training

    assert not ray.is_initialized()
    with (silent_uri() if server == "silent" else _nullcontext(dead_uri())) as uri:
        exc, took = _timed(lambda: run_training(cfg.replace({"tracking.uri": uri})))
    assert isinstance(exc, EmonetError) and "does not answer within 5 s" in str(exc), exc
    assert uri.rsplit(":", 1)[-1] in str(exc) and "tracking.enabled=false" in str(exc)
    assert took < 15, took  # the probe's 5 s; the old client tried for minutes after Ray had started
    assert not ray.is_initialized() and not os.path.exists(cfg.output_dir)  # nothing started, nothing written


@contextmanager
def _nullcontext(value):
    yield value


def test_every_client_call_is_bounded_and_leaves_the_environment_as_it_was(monkeypatch):
    for k in HTTP_LIMITS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")  # what the user set wins
    c = tracking.client(dead_uri())
    exc, took = _timed(lambda: c.get_run(RUN_ID))
    assert isinstance(exc, Exception) and took < 10, (exc, took)  # MLflow's defaults: about 250 s
    with http_limits(), http_limits():  # nested and concurrent users share one setting
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"


# [2] mid-run: the journal first, MLflow off the caller's path ---------------------------------------------------------
def test_a_background_logger_never_waits_for_a_dead_server(tmp_path, caplog):
    logger = tracking.RunLogger(dead_uri(), RUN_ID, tmp_path / "metrics.jsonl", background=True,
                                retry=Retry(attempts=2, backoff_s=0.05))
    t0 = time.monotonic()
    for step in range(50):
        logger.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
    logger.log_artifact(tmp_path / "metrics.jsonl")
    assert time.monotonic() - t0 < 2.0 and logger.max_wait_s < 0.5, logger.max_wait_s
    with caplog.at_level(logging.WARNING, "emonet_dist"):
        error, took = _timed(lambda: logger.close(10))
    assert took < 10 and error and "failed while logging metrics (2 tries)" in error, (error, took)
    assert "track sync" in caplog.text
    entries = tracking.read_journal(tmp_path / "metrics.jsonl")  # the journal has every point, exact times
    assert [e["step"] for e in entries] == list(range(50)) and entries[3]["metrics"] == {"loss": 0.25, "lr": 0.1}


def test_the_flush_at_run_end_has_a_deadline(tmp_path, monkeypatch):
    for k in HTTP_LIMITS:
        monkeypatch.delenv(k, raising=False)
    with silent_uri() as uri:  # every call would wait for MLflow's read timeout, twice, per try
        logger = tracking.RunLogger(uri, RUN_ID, tmp_path / "metrics.jsonl", background=True)
        logger.log_metrics({"loss": 1.0}, 1)
        logger.log_metrics({"loss": 0.5}, 2)
        error, took = _timed(lambda: logger.close(2.0))
    assert took < 5, took
    assert "still not sent after 2 s at the end of the run" in error, error
    assert len(tracking.read_journal(tmp_path / "metrics.jsonl")) == 2
    # the server is gone (its pending connections reset): the call still in flight on the sender's daemon thread
    # fails now, and the environment it bounded is restored
    deadline = time.monotonic() + 30
    while any(k in os.environ for k in HTTP_LIMITS) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(k in os.environ for k in HTTP_LIMITS)


def test_the_sender_retries_with_backoff_keeps_order_and_bounds_its_queue():
    calls, seen = [], []

    def flaky():  # fails twice, then works
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("not yet")
        seen.append("flaky")

    s = Sender("test", retry=Retry(attempts=3, backoff_s=0.1, max_backoff_s=0.15))
    s.submit("a", flaky)
    s.submit("b", lambda: seen.append("b"))
    assert s.close(5) is None and seen == ["flaky", "b"] and s.dropped == 0
    assert calls[1] - calls[0] >= 0.09 and calls[2] - calls[1] >= 0.14  # 0.1 s, then 0.2 s capped at 0.15 s

    def down():
        raise ConnectionError("down")

    s = Sender("test", retry=Retry(attempts=2, backoff_s=0.01))
    s.submit("metrics", down)
    s.submit("later", lambda: seen.append("later"))
    assert "test failed while logging metrics (2 tries): down" in s.close(5)
    assert "later" not in seen and s.dropped == 2  # given up: the rest stays in the journal for track sync

    gate = threading.Event()
    s = Sender("test", max_queued=2)
    for i in range(5):  # the first call holds the thread; two wait; the rest do not fit
        s.submit(f"m{i}", gate.wait)
    assert s.error and "more than 2 tracking calls waiting" in s.error
    gate.set()
    assert s.close(5) and s.dropped >= 2


# [3] the run ends with a warning and tracking: incomplete -------------------------------------------------------------
def test_a_run_whose_tracking_failed_finishes_as_tracking_incomplete(cfg, caplog):
    run = Run.create(cfg, "late")
    run.tracking_uri = dead_uri()  # the server went away after the run started
    with caplog.at_level(logging.WARNING, "emonet_dist"):
        error, took = _timed(lambda: run.finish(True, tracking_error="MLflow at x failed while logging metrics: gone",
                                                metrics={"step": 3}))
    assert took < 10 and error.startswith("MLflow at x failed"), (error, took)
    info = json.loads((run.dir / "run.json").read_text())
    assert info["status"] == "FINISHED" and info["tracking"] == "incomplete" and info["metrics"] == {"step": 3}
    assert f"emonet track sync {run.dir}" in caplog.text and "tracking incomplete" in caplog.text
    assert run.result({}).tracking_error == error

    fine = Run.create(cfg, "fine")
    assert fine.finish(True, metrics={}) is None
    assert json.loads((fine.dir / "run.json").read_text())["tracking"] == "complete"
    offline = Run.create(cfg.replace({"tracking.enabled": False}), "offline")
    offline.finish(True)
    assert "tracking" not in json.loads((offline.dir / "run.json").read_text())


# [4] track sync is idempotent --------------------------------------------------------------------------------------
def test_track_sync_sends_only_missing_points_even_on_a_store_that_keeps_duplicates(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store appends every point it is sent
    cfg = cfg.replace({"tracking.uri": (tmp_path / "mlruns").as_uri()})
    run = Run.create(cfg, "partial")
    logger = run.logger()
    for step in range(3):  # sent while the server was up
        logger.log_metrics({"loss": 1.0 / (step + 1), "nan": float("nan")}, step)
    assert logger.close() is None
    offline = tracking.RunLogger(None, None, run.dir / tracking.JOURNAL)  # then only the journal
    for step in range(3, 6):
        offline.log_metrics({"loss": 1.0 / (step + 1), "nan": float("nan")}, step)
    run.finish(True, tracking_error="MLflow at x failed while logging metrics: gone", metrics={})
    info = json.loads((run.dir / "run.json").read_text())

    assert sync_run(run.dir, info) == (6, 6)  # 3 missing steps x 2 keys
    assert sync_run(run.dir, json.loads((run.dir / "run.json").read_text())) == (6, 0)
    c = tracking.client(run.tracking_uri)
    journal = tracking.read_journal(run.dir / tracking.JOURNAL)
    for key in ("loss", "nan"):
        history = c.get_metric_history(run.mlflow_run_id, key)
        assert sorted((m.step, m.timestamp) for m in history) == [(e["step"], e["time"]) for e in journal]
    assert c.get_run(run.mlflow_run_id).info.status == "FINISHED"
    after = json.loads((run.dir / "run.json").read_text())
    assert after["tracking"] == "complete" and not (run.dir / "tracking_error.txt").exists()


def test_track_sync_against_a_server_that_is_still_down_fails_in_seconds(cfg):
    run = Run.create(cfg, "still-down")
    run.finish(True, metrics={})
    info = {**json.loads((run.dir / "run.json").read_text()), "tracking_uri": dead_uri()}
    exc, took = _timed(lambda: sync_run(run.dir, info))
    assert isinstance(exc, EmonetError) and "does not answer" in str(exc) and "nothing was lost" in str(exc)
    assert took < 10
