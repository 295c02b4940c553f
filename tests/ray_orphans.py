"""Clean-up after tests that SIGKILL a driver: the local Ray instance it started lives on in its own session.

``ray.init()`` starts the GCS, raylet, dashboard and workers in new sessions, so killing the driver's process
group (as a lost job would be) leaves them running. Tests note the Ray sessions that exist before they start a
driver and, after killing it, kill every process of the sessions that appeared since (matched by the session
name on their command lines), so the suite leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _cmdlines():
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


def ray_sessions() -> set[str]:
    """Names of the Ray sessions whose GCS runs on this machine."""
    out = set()
    for _, cmd in _cmdlines():
        if "gcs_server" in cmd and "--session-name=" in cmd:
            out.add(cmd.split("--session-name=", 1)[1].split()[0])
    return out


def kill_new_sessions(before: set[str]) -> int:
    """SIGKILL every process of the Ray sessions not in ``before``; returns how many were killed."""
    new = ray_sessions() - before
    killed = 0
    for pid, cmd in _cmdlines():
        if pid != os.getpid() and any(s in cmd for s in new):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed
