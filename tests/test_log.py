"""Logging: library records reach the console only through the CLI's handlers, at the level its flags choose."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from emonet_dist import log


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch):
    monkeypatch.setenv(log.LEVEL_ENV, "")  # recorded, so the value setup_console exports is undone afterwards
    monkeypatch.delenv(log.LEVEL_ENV)
    root = logging.getLogger(log.ROOT)
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved


def _emit():
    lg = logging.getLogger("emonet_dist.data.shards")
    lg.debug("a debug line")
    lg.info("[shard x] up to date")
    lg.warning("3 utterance(s) could not be read")


@pytest.mark.parametrize("verbosity, shown, hidden", [
    (0, ["[shard x] up to date"], ["a debug line"]),
    (-1, [], ["a debug line", "[shard x] up to date"]),
    (1, ["a debug line", "emonet_dist.data.shards: [shard x] up to date"], []),
])
def test_console_levels_follow_quiet_and_verbose(verbosity, shown, hidden, capsys):
    log.setup_console(verbosity)
    _emit()
    out, err = capsys.readouterr()
    assert out == ""  # stdout carries a command's results only
    for text in shown:
        assert text in err
    for text in hidden:
        assert text not in err
    assert "warning: " in err and "3 utterance(s) could not be read" in err  # warnings always, with a prefix
    assert os.environ[log.LEVEL_ENV] == logging.getLevelName(log.level_for(verbosity))


def test_setting_up_twice_prints_each_line_once(capsys):
    log.setup_console(0)
    log.setup_console(0)
    logging.getLogger("emonet_dist.x").info("once")
    assert capsys.readouterr().err == "once\n"


def test_the_cli_flags_set_the_level(capsys):
    from emonet_dist.cli import main

    assert main(["-q", "corpus", "recipes"]) == 0
    assert log.console_level() == logging.WARNING
    assert main(["--verbose", "corpus", "recipes"]) == 0
    assert log.console_level() == logging.DEBUG
    assert "ravdess" in capsys.readouterr().out
    # the exported level is for the processes a command starts; main() leaves the caller's environment as it was
    assert log.LEVEL_ENV not in os.environ


def test_a_run_log_file_gets_the_lines_of_its_block_only(tmp_path):
    log.setup_console(0)
    lg = logging.getLogger("emonet_dist.train.launch")
    lg.info("before")
    with log.run_log(tmp_path / "logs" / "driver.log") as path:
        lg.info("inside")
        lg.warning("careful")
    lg.info("after")
    text = path.read_text()
    assert "INFO emonet_dist.train.launch: inside" in text and "WARNING" in text and "careful" in text
    assert "before" not in text and "after" not in text


def test_a_library_user_gets_a_run_log_without_configuring_logging(tmp_path):
    root = logging.getLogger(log.ROOT)
    root.handlers[:] = []
    root.setLevel(logging.NOTSET)
    with log.run_log(tmp_path / "run.log") as path:
        logging.getLogger("emonet_dist.x").info("progress")
    assert "progress" in path.read_text() and root.level == logging.NOTSET


def test_a_worker_logs_at_the_level_the_driver_chose():
    code = ("import logging; from emonet_dist import log; log.setup_worker(); "
            "lg = logging.getLogger('emonet_dist.train.loop'); lg.debug('dbg'); lg.info('[train] step 4')")
    for level, expect in (("INFO", "[train] step 4\n"), ("WARNING", ""), ("DEBUG", "dbg\n[train] step 4\n")):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**os.environ, log.LEVEL_ENV: level})
        assert res.returncode == 0 and res.stdout == expect, (level, res.stdout, res.stderr[-500:])
