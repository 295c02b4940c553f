"""``worker_pool`` workers end with their parent: by the Linux death signal, or by the watchdog elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The parent starts two workers that would sleep for a minute, then waits; the test SIGKILLs it.
PARENT = """
import sys, time
from emonet_dist import pool
if sys.argv[1] == "watchdog":
    pool._set_death_signal = lambda: False  # as on a platform without prctl (workers are forked: they see this)
with pool.worker_pool(2) as p:
    list(p.map(time.sleep, [60, 60]))
"""


def _children(pid: int) -> set[int]:
    out = set()
    for proc in Path("/proc").iterdir():
        try:
            state, ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            out.add(int(proc.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
@pytest.mark.parametrize("mode", ["death-signal", "watchdog"])
def test_workers_exit_when_the_parent_is_killed(mode):
    proc = subprocess.Popen([sys.executable, "-c", PARENT, mode], start_new_session=True)
    workers: set[int] = set()
    try:
        deadline = time.time() + 30
        while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
            workers |= _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) == 2, f"expected 2 workers (exit status {proc.poll()})"
        time.sleep(0.3)  # let the initializers run (a worker killed before would prove nothing)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 5
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "workers outlived their parent"
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
