"""Progress of long work (preparing, sharding, verifying, feature extraction, prediction).

Two outputs, chosen by where the lines go:
- an interactive terminal (the CLI's console is a TTY at info level): a ``tqdm`` bar on stderr, redrawn in place;
- everything else (CI, Ray job logs, a library user's own logging, the run's log file): a log record every
  ``interval`` seconds (10 by default) and one when the work is done, through :mod:`logging`, so that logs stay
  short but a stalled job is still visible.

The summary line at the end is always a log record, so it also reaches a run's log file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from .log import console_is_interactive

T = TypeVar("T")
log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
"""Seconds between progress records when no terminal redraws a bar."""


class Progress:
    def __init__(self, label: str, total: int | None = None, unit: str = "items", interval: float | None = None,
                 enabled: bool = True):
        self.label, self.total, self.unit = label, total, unit
        self.enabled = enabled
        self.interval = LOG_INTERVAL if interval is None else interval
        self.n = 0
        self.start = time.monotonic()
        self._last = self.start
        self._bar = None
        if enabled and console_is_interactive():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"[{label}]", unit=f" {unit}", leave=False, dynamic_ncols=True)

    def update(self, k: int = 1, note: str = "") -> None:
        self.n += k
        if not self.enabled:
            return
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(k)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info("%s", self.line(note))

    def line(self, note: str = "", final: bool = False) -> str:
        """The progress as one line: ``[label] n/total unit (pct, rate, eta)``, or ``... done in Ns``."""
        elapsed = time.monotonic() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta_s = "" if final or eta == float("inf") else f", eta {eta:.0f}s"
            msg = f"[{self.label}] {self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%, " \
                  f"{rate:.1f}/s{eta_s})"
        else:
            msg = f"[{self.label}] {self.n} {self.unit} ({rate:.1f}/s)"
        if final:
            msg += f" done in {elapsed:.1f}s"
        return f"{msg} {note}" if note else msg

    def close(self, note: str = "") -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled:
            log.info("%s", self.line(note, final=True))


def track(items: Iterable[T], label: str, total: int | None = None, unit: str = "items",
          enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` while showing progress."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    p = Progress(label, total, unit, enabled=enabled)
    for item in items:
        yield item
        p.update()
    p.close()
