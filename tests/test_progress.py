"""Progress of long work: log records at intervals and at the end where no terminal redraws a bar (CI, Ray job
logs, run log files), a tqdm bar on an interactive console."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from emonet_dist import log, progress
from emonet_dist.progress import Progress, track


@pytest.fixture(autouse=True)
def _console(monkeypatch):
    monkeypatch.setenv(log.LEVEL_ENV, "")
    root = logging.getLogger(log.ROOT)
    saved = (list(root.handlers), root.level, root.propagate)
    log.setup_console(0)
    yield
    root.handlers[:], root.level, root.propagate = saved


def test_logs_show_a_line_per_interval_and_a_summary(capsys, monkeypatch):
    times = iter(float(t) for t in range(100))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(times))  # a clock that advances 1 s per call
    p = Progress("shard x", total=40, unit="utterances", interval=10.0)
    for _ in range(40):
        p.update()
    p.close("(3 shards written)")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[shard x] 10/40 utterances (25%, ") and "eta" in lines[0]
    assert len(lines) == 5  # 40 updates at 1 s each, a line every 10 s, and the summary
    assert re.fullmatch(r"\[shard x\] 40/40 utterances \(100%, [0-9.]+/s\) done in [0-9.]+s \(3 shards written\)",
                        lines[-1]), lines[-1]


def test_quiet_hides_progress_and_a_run_log_keeps_it(tmp_path, capsys):
    log.setup_console(-1)
    with log.run_log(tmp_path / "run.log") as path:
        list(track(range(3), "verify", unit="shards"))
    assert capsys.readouterr().err == ""
    assert "INFO emonet_dist.progress: [verify] 3/3 shards (100%" in path.read_text()


def test_an_interactive_console_gets_a_tqdm_bar(monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert log.console_is_interactive()
    p = Progress("predict", total=5, unit="files")
    assert p._bar is not None
    for _ in range(5):
        p.update()
    p.close()
    out = tty.getvalue()
    assert "[predict]" in out and "5/5" in out and "\r" in out  # tqdm's redrawn bar
    assert out.rstrip().endswith("done in 0.0s") or "done in" in out.splitlines()[-1]


def test_disabled_progress_says_nothing(capsys):
    p = Progress("predict", total=1, enabled=False)
    p.update()
    p.close()
    assert capsys.readouterr().err == ""
