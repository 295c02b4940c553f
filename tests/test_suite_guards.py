"""The suite's own guards: a run cannot pass by skipping the real-corpus tests where they must run.

CI sets ``EMONET_REQUIRE_SHARED_DATA=1`` (.ci/run); there a missing ``../shared/data`` fails the run and names the
missing corpus. Without the switch (a user's machine) the same tests skip with a reason. Both are checked by running
one real-corpus test in a pytest subprocess against a directory that does not hold the corpora.
"""

from __future__ import annotations

import os
import subprocess
import sys

from emonet_testkit import ROOT

TARGET = "tests/corpora/test_real_corpora.py"


def _pytest(tmp_path, require: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EMONET_REQUIRE_SHARED_DATA"}
    env["EMONET_SHARED_DATA"] = str(tmp_path / "no-shared-data")
    if require is not None:
        env["EMONET_REQUIRE_SHARED_DATA"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs",
                           "-q", TARGET], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_missing_real_data_fails_the_run_when_ci_requires_it(tmp_path):
    res = _pytest(tmp_path, "1")
    assert res.returncode == 1, res.stdout[-2000:]
    assert "EMONET_REQUIRE_SHARED_DATA is set: real corpus ravdess not found at" in res.stdout
    assert str(tmp_path / "no-shared-data") in res.stdout and " skipped" not in res.stdout.splitlines()[-1]


def test_missing_real_data_skips_with_a_reason_without_the_switch(tmp_path):
    res = _pytest(tmp_path, None)
    assert res.returncode == 0, res.stdout[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert "skipped" in last and "passed" not in last and "failed" not in last, last
    assert "SKIPPED" in res.stdout and "real corpus ravdess not found at" in res.stdout
