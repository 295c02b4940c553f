"""One pipeline (issue 13): ``emonet demo --smoke`` and ``emonet jobs run`` of the shipped demo spec with the same
profile make the same runs: the same steps in the same order, the same run kinds and corpora, the same configs
(paths aside), bit-identical final weights, equal metrics and the same report.

Both are the console script in a subprocess, as a user runs them. The second job reuses the first one's corpora
and shards (as a second demo does), so the comparison is about the runner, not about rebuilding the data. The
demo's wall time is printed (the target is under a minute on an idle 2-core machine), not asserted.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from emonet_dist.demo import demo_spec_path
from emonet_testkit import emonet_console_script, final_tensors, same_tensors, user_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
PATHS = ("output_dir", "ray.storage_path", "train.init_from")  # where a run's files are, not what it computes


def _emonet(*args: str, cwd: Path) -> str:
    t0 = time.time()
    proc = subprocess.run([emonet_console_script(), *args], cwd=cwd, text=True, env=user_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=1500)
    print(f"emonet {args[0]}: exit {proc.returncode} after {time.time() - t0:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def _steps(out: str) -> dict[str, Path]:
    """Step id -> run directory, from the runner's progress lines (the same lines for both commands)."""
    return {sid: Path(d) for sid, d in re.findall(r"^\[job demo\] step (\S+): \S+ in (\S+)$", out, re.M)}


def _flat(run: Path) -> dict:
    from emonet_dist.config import Config

    flat = Config.from_dict(json.loads((run / "config.json").read_text())).flat()
    return {k: v for k, v in flat.items() if k not in PATHS}


def test_demo_smoke_and_jobs_run_of_the_shipped_spec_make_the_same_runs(tmp_path):
    tmp_path = tmp_path.resolve()  # the demo resolves its --out
    demo_out = _emonet("demo", "--smoke", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    dev = dict(re.findall(r"^\s+(adapters|scratch)\s*: dev UAR ([0-9.]+)", demo_out, re.M))
    assert set(dev) == {"adapters", "scratch"} and "demo finished in" in demo_out, demo_out[-3000:]
    print(re.findall(r"demo finished in \d+ s", demo_out))

    job_out = _emonet("jobs", "run", str(demo_spec_path()), "--profile", "smoke",
                      f"output_dir={tmp_path / 'job' / 'runs'}", f"data.shards={tmp_path / 'demo' / 'shards'}",
                      cwd=tmp_path)
    assert "[job demo] finished: 4 run(s)" in job_out
    assert "[synth] reusing the corpora" in job_out  # the demo's corpora, built once

    demo, job = _steps(demo_out), _steps(job_out)
    assert list(demo) == list(job) == ["pretrain", "adapters", "scratch", "report"]
    for sid in ("pretrain", "adapters", "scratch"):
        a, b = demo[sid], job[sid]
        assert a.parent == tmp_path / "demo" / "runs" and b.parent == tmp_path / "job" / "runs"
        assert _flat(a) == _flat(b), sid  # same kind (mode, schedule), corpora, model, seeds
        assert same_tensors(final_tensors(a), final_tensors(b)), sid
        ma, mb = (json.loads((d / "run.json").read_text())["metrics"] for d in (a, b))
        scores = {k for k in ma if k.startswith(("dev_uar", "test_uar"))}
        assert scores and {k: ma[k] for k in scores} == {k: mb[k] for k in scores}, sid
    pre = json.loads((demo["pretrain"] / "config.json").read_text())
    assert [c["name"] for c in pre["data"]["corpora"]] == ["synth2"]  # the smoke profile's one small corpus
    for sid in ("adapters", "scratch"):
        cfg = json.loads((demo[sid] / "config.json").read_text())
        assert [c["name"] for c in cfg["data"]["corpora"]] == ["synth_target"] and cfg["train"]["mode"] == sid

    reports = [json.loads((demo["report"] / "report.json").read_text()),
               json.loads((job["report"] / "report.json").read_text())]
    assert demo["report"].parent == tmp_path / "demo" / "reports"  # where test_demo.py looks
    rows = [[(r["corpus"], r["baseline_uar"], {k: v["uar"] for k, v in r["candidates"].items()})
             for r in rep["corpora"]] for rep in reports]
    assert rows[0] == rows[1] and rows[0][0][0] == "synth_target"
