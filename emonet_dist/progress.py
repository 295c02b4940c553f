"""Progress output for long work, on stderr so stdout stays parseable.

On a terminal the line is redrawn in place; in logs (CI, Ray job logs) a line is printed at most every
``interval`` seconds, so logs stay short but a stalled job is still visible.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    def __init__(self, label: str, total: int | None = None, unit: str = "items", interval: float | None = None,
                 stream=None, enabled: bool = True):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self.enabled = enabled
        self.n = 0
        self.start = time.monotonic()
        self._last = self.start

    def update(self, k: int = 1, note: str = "") -> None:
        self.n += k
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._draw(note)

    def _draw(self, note: str = "", final: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        if self.total:
            pct = 100.0 * self.n / self.total
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta_s = "" if final or eta == float("inf") else f", eta {eta:.0f}s"
            msg = f"[{self.label}] {self.n}/{self.total} {self.unit} ({pct:.0f}%, {rate:.1f}/s{eta_s})"
        else:
            msg = f"[{self.label}] {self.n} {self.unit} ({rate:.1f}/s)"
        if final:
            msg += f" done in {elapsed:.1f}s"
        if note:
            msg += f" {note}"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r\x1b[K" if self.tty else "") + msg + end)
        self.stream.flush()

    def close(self, note: str = "") -> None:
        if self.enabled:
            self._draw(note, final=True)


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
