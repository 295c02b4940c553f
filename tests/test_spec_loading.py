"""Job specs are checked when they load (issue 14): alias bombs, short error quotes, unset ``$VARS``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emonet_dist.errors import ConfigError
from emonet_dist.pipeline.spec import load_spec

JOBS = Path(__file__).resolve().parents[1] / "jobs"
LONG = "x" * 10_000
UNSET = "EMONET_TEST_SURELY_UNSET_VARIABLE"


def _write(tmp_path: Path, text: str | None = None, **changes) -> Path:
    base = {"name": "t", "config": {"output_dir": "/tmp/x", "data": {"shards": "/tmp/s", "corpora": [{"name": "a"}]}},
            "steps": [{"id": "pre", "run": "train"}]}
    base.update(changes)
    path = tmp_path / "t.job.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(base))
    return path


def _bomb_spec() -> str:
    """A job spec whose config.name is the billion-laughs value (9 levels of 9 aliases, 9**9 strings)."""
    levels = "abcdefghi"
    rows = ["config:", "  name: [&a [lol,lol,lol,lol,lol,lol,lol,lol,lol],"]
    rows += [f"    &{c} [{','.join([f'*{p}'] * 9)}]," for p, c in zip(levels, levels[1:])]
    return "\n".join(rows)[:-1] + "]\nsteps: [{run: train}]\n"


# Runs in a child whose address space is capped 256 MB above what its imports took (and CPU time at 30 s): a
# regression fails with MemoryError in seconds instead of taking gigabytes of a shared machine. The peak
# resident size before and after the load says what the load took.
_CAPPED_LOAD = """
import json, resource, sys
from emonet_dist.pipeline.spec import load_spec
vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
resource.setrlimit(resource.RLIMIT_CPU, (30, resource.getrlimit(resource.RLIMIT_CPU)[1]))
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_spec(sys.argv[1])
    out = {"type": None}
except BaseException as exc:
    out = {"type": type(exc).__name__, "message": str(exc)[:2000], "length": len(str(exc))}
out["grew_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
print(json.dumps(out))
"""


def test_alias_bomb_in_a_spec_is_refused_cheaply(tmp_path):
    path = _write(tmp_path, _bomb_spec())
    assert len(path.read_text()) < 400
    res = subprocess.run([sys.executable, "-c", _CAPPED_LOAD, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-1000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["type"] == "ConfigError", out
    assert out["length"] < 300 and "\n" not in out["message"] and "alias" in out["message"], out
    assert out["grew_kb"] < 20 * 1024, f"the load grew the peak resident size by {out['grew_kb'] / 1024:.0f} MB"


@pytest.mark.parametrize("changes", [
    {"name": [LONG]},
    {"description": {"a": LONG}},
    {"entrypoint_num_cpus": LONG},
    {"extends": LONG},
    {"profiles": {LONG: ["seed=1"]}},
    {"steps": [{"id": LONG, "run": "train"}]},
    {"steps": [{"run": "train", LONG: 1}]},
    {"steps": [{"run": "train", "overrides": [f"model.specaugment={LONG}"]}]},
    {"steps": [{"run": "tune", "space": {"optim.lr": LONG}}]},
    {"steps": [{"run": "tune", "space": {LONG: "uniform(0, 1)"}}]},
    {"steps": [{"run": "tune", "space": {"optim.lr": f"uniform({LONG}, 1)"}}]},
    {"steps": [{"run": "tune", "space": {"model.specaugment": f"choice([{LONG}])"}}]},
    {"steps": [{"id": "p", "run": "train"}, {"run": "report", "baseline": "p", "candidates": [LONG]}]},
    {"steps": [{"run": "prepare", "recipe": LONG, "raw": "/tmp"}]},
    {"steps": [{"run": "prepare", "recipe": [LONG], "raw": "/tmp"}]},
    {"config": {"data": {"corpora": [{"name": "a", "task": LONG}]}}},
], ids=["name", "description", "cpus", "extends", "profile-name", "step-id", "step-key", "override", "space-value",
        "space-key", "space-args", "space-choice", "report-column", "recipe", "recipe-list", "config"])
def test_spec_errors_quote_a_short_prefix(tmp_path, changes):
    path = _write(tmp_path, **changes)
    with pytest.raises(ConfigError) as exc:
        load_spec(path, profile="paper" if "profiles" in changes else None)
    msg = str(exc.value)
    assert len(msg) < 300 + len(str(path)) and "\n" not in msg, msg[:400]


@pytest.mark.parametrize("changes, where", [
    ({"config": {"output_dir": f"${{{UNSET}}}/runs", "data": {"corpora": [{"name": "a"}]}}}, "config.output_dir"),
    ({"steps": [{"id": "p", "run": "prepare", "recipe": "ravdess", "raw": f"${UNSET}/ravdess"}]}, "steps.0(p).raw"),
    ({"steps": [{"run": "train", "overrides": [f"output_dir=${{{UNSET}}}"]}]}, "steps.0.overrides.0"),
    ({"runtime_env": {"working_dir": f"${{{UNSET}}}/code"}}, "runtime_env.working_dir"),
])
def test_an_unset_variable_is_refused_when_the_spec_loads(tmp_path, monkeypatch, changes, where):
    monkeypatch.delenv(UNSET, raising=False)
    path = _write(tmp_path, **changes)
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    assert f"{where} uses ${UNSET}, which is not set" in str(exc.value)
    monkeypatch.setenv(UNSET, "/mnt/somewhere")  # set: the same spec loads
    load_spec(path)


def test_runtime_env_vars_count_when_submitting_not_when_running_here(tmp_path, monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    path = _write(tmp_path, steps=[{"id": "p", "run": "prepare", "recipe": "ravdess", "raw": f"${UNSET}/r"}],
                  runtime_env={"env_vars": {UNSET: "/mnt/raw"}})
    load_spec(path)  # `emonet submit`: the job's driver gets runtime_env.env_vars
    with pytest.raises(ConfigError, match=f"{UNSET}, which is not set"):
        load_spec(path, runs_here=True)  # `emonet jobs run`: the steps run in this process
    # a step outside the selected groups does not need its variables
    path = _write(tmp_path, steps=[{"id": "p", "group": "prep", "run": "prepare", "recipe": "ravdess",
                                    "raw": f"${UNSET}/r"}, {"id": "t", "group": "train", "run": "train"}])
    assert [s.id for s in load_spec(path, groups=["train"], runs_here=True).steps] == ["t"]


def test_jobs_run_refuses_an_unset_variable_before_any_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EMONET_REALDATA"}
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "jobs", "run", str(JOBS / "realdata_smoke.job.yaml"),
                          f"output_dir={tmp_path}/runs", f"data.shards={tmp_path}/shards"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-1000:]
    assert "steps.0(prep-urdu).raw uses $EMONET_REALDATA, which is not set" in res.stderr
    assert "step " not in res.stdout and not (tmp_path / "runs").exists()  # no step started


@pytest.mark.parametrize("name", ["../../x", "a/b", "-rf", "x" * 200])
def test_a_job_name_is_an_identifier(tmp_path, name):
    """The job's name names its parent run and its log directory (``<output_dir>/jobs/<name>-<time>/``)."""
    with pytest.raises(ConfigError, match="job name .* is not a valid name"):
        load_spec(_write(tmp_path, name=name))
