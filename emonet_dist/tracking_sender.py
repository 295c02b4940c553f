"""A background sender: tracking calls run on their own thread, in order, with retries, never on the caller's path.

Rank 0 of a training run logs metrics every few steps; with MLflow's defaults one call to a server that has gone
away blocks for minutes (120 s timeout, 7 retries). :class:`Sender` takes each call as a closure, queues it (a
bounded queue: ``submit`` never waits) and runs it on a daemon thread, retrying a failing call with exponential
backoff up to a cap. A call that still fails after its last attempt marks the sender as given up: the MLflow copy
is then incomplete whatever comes next, so the calls after it are dropped (the caller's journal keeps them, and
``emonet track sync`` replays it) rather than spending minutes on a server that is down. ``close`` waits for the
queue to drain, up to a deadline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import short

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retry:
    """How a failing call is retried: ``attempts`` tries in all, waiting ``backoff_s * 2**k`` (at most
    ``max_backoff_s``) before try ``k + 2``."""

    attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 4.0

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


_STOP = object()


class Sender:
    """Runs submitted calls in order on a daemon thread (see the module docstring).

    Args:
        where: what the calls talk to, for messages (e.g. ``MLflow at http://host:5000``).
        max_queued: calls that may wait at once; a call submitted beyond that is dropped (and counted).
        retry: the retry policy of one call.
    """

    def __init__(self, where: str, max_queued: int = 1000, retry: Retry = Retry()):
        self.where, self.retry = where, retry
        self.error: str | None = None
        """Why the calls did not all reach their target (the first failure), or None."""
        self.dropped = 0
        """Calls not sent: submitted after the sender gave up, beyond the queue's bound, or left at ``close``."""
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emonet-tracking-sender", daemon=True)
        self._thread.start()

    def submit(self, what: str, fn: Callable[[], object]) -> None:
        """Queue ``fn()`` (described by ``what`` in messages); returns at once."""
        if self.error is not None or self._closing.is_set():
            self.dropped += 1
            return
        try:
            self._queue.put_nowait((what, fn))
        except queue.Full:
            self._give_up(f"{self.where}: more than {self._queue.maxsize} tracking calls waiting (the server is too "
                          f"slow or down); {what} and later calls were not sent")
            self.dropped += 1

    def close(self, timeout_s: float) -> str | None:
        """Wait up to ``timeout_s`` seconds for the queued calls, then stop; returns :attr:`error`.

        Calls still waiting at the deadline are dropped and make the error (a call in flight cannot be interrupted;
        its thread is a daemon and does not keep the process alive)."""
        deadline = time.monotonic() + timeout_s
        self._put_stop(deadline)
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        self._closing.set()  # a retry waiting for its backoff stops waiting
        if self._thread.is_alive():
            left = self._drain()
            self.dropped += left
            self._give_up(f"{self.where}: tracking calls still not sent after {timeout_s:g} s at the end of the run "
                          f"({left} queued)")
        return self.error

    def _put_stop(self, deadline: float) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=max(min(deadline - time.monotonic(), 0.5), 0.01))
                return
            except queue.Full:
                if time.monotonic() >= deadline:
                    return

    def _drain(self) -> int:
        n = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return n
            n += item is not _STOP

    def _give_up(self, message: str) -> None:
        if self.error is None:
            self.error = message
            log.warning("%s; metrics go on in the journal only (`emonet track sync RUN` replays them later)", message)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            what, fn = item
            if self.error is not None:
                self.dropped += 1
                continue
            self._send(what, fn)

    def _send(self, what: str, fn: Callable[[], object]) -> None:
        for attempt in range(1, self.retry.attempts + 1):
            try:
                fn()
                return
            except Exception as exc:  # noqa: BLE001 - any failure of the tracking store
                if attempt == self.retry.attempts or self._closing.is_set():
                    self.dropped += 1
                    self._give_up(f"{self.where} failed while logging {what} ({attempt} tries): {short(exc, 300)}")
                    return
                log.debug("%s: logging %s failed (try %d): %s", self.where, what, attempt, short(exc, 200))
                self._closing.wait(self.retry.wait(attempt))
