"""Worker processes that die with their parent.

A ``ProcessPoolExecutor`` worker blocks on its task queue forever once its parent is SIGKILLed (an OOM kill, a
cluster pre-emption, ``kill -9``): nothing closes the queue, so every worker stays behind holding its memory
(about 500 MB each with torch imported). :func:`worker_pool` gives each worker a parent-death signal (Linux
``prctl(PR_SET_PDEATHSIG)``) and, where that is unavailable, a watchdog thread that exits when the parent is gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_WATCH_S = 0.5


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """A process pool of ``jobs`` workers that exit when this process dies; use it as a context manager.

    Workers are started by the calling thread; on Linux the death signal fires when that thread ends, so create
    and use the pool from one thread (as ``with worker_pool(n) as pool:`` does).
    """
    return ProcessPoolExecutor(jobs, initializer=_die_with_parent, initargs=(os.getpid(),))


def _die_with_parent(parent: int) -> None:
    """Pool initializer: arrange for this worker to end as soon as ``parent`` (the pool's owner) does.

    With the ``fork`` start method the worker's parent is ``parent``; with ``forkserver``/``spawn`` it is a
    helper process that itself exits when ``parent`` does, so the signal still follows the chain.
    """
    ppid = os.getppid()
    armed = _set_death_signal()
    if _gone(parent, ppid):  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch, args=(parent, ppid), name="parent-watchdog", daemon=True).start()


def _gone(parent: int, ppid: int) -> bool:
    if os.getppid() != ppid:  # re-parented: whoever started this worker has exited
        return True
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else (cannot happen for our own parent, but harmless)
        pass
    return False


def _set_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError) as exc:  # no libc symbol (unusual builds): fall back to the watchdog
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
        return False


def _watch(parent: int, ppid: int) -> None:
    while not _gone(parent, ppid):
        time.sleep(_WATCH_S)
    os._exit(1)
