"""Logging: library code logs through ``logging.getLogger(__name__)``; only the CLI decides what reaches the console.

- :func:`setup_console` (called once by the CLI): progress lines as plain text and warnings and errors with a
  prefix, all on stderr, so that stdout carries only a command's results and stays parseable; ``--quiet`` keeps
  warnings only, ``--verbose`` adds debug lines with time and logger name.
- Ray workers run in other processes: the driver passes the level on in ``EMONET_LOG_LEVEL`` (see
  :func:`worker_env`), and :func:`setup_worker` installs one handler on the worker's own stdout, which Ray
  forwards to the driver once (Ray Train patches ``print`` in workers, which used to print every line twice).
- :func:`run_log` copies a run's lines into a file in the run directory for the run's duration; the file becomes
  an MLflow artifact with the run's other outputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = "emonet_dist"
LEVEL_ENV = "EMONET_LOG_LEVEL"
_SAVED_LEVEL = "_emonet_saved_level"
_CONSOLE = "_emonet_console"  # marks the handlers this module installed, so setting up twice replaces them
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (pytest and Ray replace it after set-up)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Console(logging.Formatter):
    """Progress lines as they are; warnings and errors start with ``warning:`` / ``error:``, as the CLI's own
    messages do."""

    def __init__(self, verbose: bool):
        super().__init__("%(asctime)s %(name)s: %(message)s" if verbose else "%(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def console_level() -> int | None:
    """The level of the console :func:`setup_console` installed, or None when there is none."""
    console = [h for h in logging.getLogger(ROOT).handlers if isinstance(h, _Stderr)]
    return console[0].level if console else None


def console_is_interactive() -> bool:
    """True when the CLI's console goes to a terminal and shows progress (info level): progress bars then redraw
    in place (:mod:`emonet_dist.progress`); anywhere else progress is logged as lines."""
    level = console_level()
    return level is not None and level <= logging.INFO and bool(getattr(sys.stderr, "isatty", None)) \
        and sys.stderr.isatty()


def level_for(verbosity: int) -> int:
    """-1 (``--quiet``): warnings only; 0: progress lines; 1 (``--verbose``): debug lines too."""
    return logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO


def setup_console(verbosity: int = 0) -> int:
    """Route the package's log records to the console (the CLI calls this once); returns the level set.

    The level is also exported in ``EMONET_LOG_LEVEL`` for the processes the CLI starts (Ray workers, job
    drivers)."""
    level = level_for(verbosity)
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if getattr(h, _CONSOLE, False)]:
        root.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(_Console(verbosity > 0))
    handler.setLevel(level)
    setattr(handler, _CONSOLE, True)
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))  # a run's log file keeps the progress lines that --quiet hides
    root.propagate = False  # Ray and MLflow configure the root logger; our lines are printed once, here
    os.environ[LEVEL_ENV] = logging.getLevelName(level)
    return level


def worker_env() -> dict[str, str]:
    """Environment that carries the console level to Ray workers (merge into the runtime env's ``env_vars``)."""
    return {LEVEL_ENV: os.environ[LEVEL_ENV]} if os.environ.get(LEVEL_ENV) else {}


def setup_worker() -> None:
    """In a Ray worker: the package's records to this process's own stdout (Ray forwards it to the driver),
    at the level the driver's CLI chose (``EMONET_LOG_LEVEL``; info when unset)."""
    name = os.environ.get(LEVEL_ENV, "INFO")
    level = logging.getLevelName(name) if isinstance(logging.getLevelName(name), int) else logging.INFO
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if getattr(h, _CONSOLE, False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.__stdout__ or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    setattr(handler, _CONSOLE, True)
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))  # the worker's log file keeps info lines
    root.propagate = False


def start_file_log(path: str | Path, thread: int | None = None) -> logging.Handler:
    """Start copying the package's log lines into ``path`` (appended: a resumed run continues its file) at the
    level the console uses (info when nothing set a level, as when the package is used as a library); stop with
    :func:`stop_file_log`. ``thread``: only the lines logged by that thread (runs a grid drives in parallel
    threads each keep their own lines)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    if thread is not None:
        handler.addFilter(lambda record: record.thread == thread)
    root = logging.getLogger(ROOT)
    setattr(handler, _SAVED_LEVEL, root.level)
    if root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


def stop_file_log(handler: logging.Handler | None) -> None:
    """Stop a :func:`start_file_log` copy and close its file (None: nothing to stop)."""
    if handler is None:
        return
    root = logging.getLogger(ROOT)
    root.removeHandler(handler)
    handler.close()
    if not any(hasattr(h, _SAVED_LEVEL) for h in root.handlers):  # the last file copy (others run in threads)
        root.setLevel(getattr(handler, _SAVED_LEVEL, root.level))


@contextlib.contextmanager
def run_log(path: str | Path) -> Iterator[Path]:
    """Copy the package's log lines into ``path`` while the block runs (see :func:`start_file_log`)."""
    handler = start_file_log(path)
    try:
        yield Path(path)
    finally:
        stop_file_log(handler)
