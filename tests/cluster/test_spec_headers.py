"""The commands in the header comment of every shipped job spec run as written (issue 14, row 10: the demo's
documented local-cluster command logged to the spec's http://mlflow:5000 and FAILED after 8.5 minutes).

* A command is what follows ``#   emonet `` in a spec's leading comment, ``\\`` continuations joined; a trailing
  ``# ...`` is a comment, as in a shell. It runs as argv (shlex, never a shell), ``$PWD`` expanded as a shell would,
  in a fresh directory whose ``jobs`` is the repository's (``jobs/...`` resolves, ``$PWD/...`` outputs land there),
  against a real local cluster (``cluster/local``) with its ``env.sh`` exported, as a user who sourced it types it.
* A command for the local cluster runs to the end: the job SUCCEEDED, every run step printed its MLflow link, on
  the local cluster's server.
* A command for a cluster with shared storage this machine lacks (``/mnt/emonet``) fails within seconds in the
  job's preflight, saying the storage is not mounted, and creates nothing there.

:data:`EXPECTED` says which is which, per command: a header command that is not listed fails the fast test.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from emonet_dist.pipeline.spec import load_spec
from emonet_testkit import emonet_console_script, started_cluster

ROOT = Path(__file__).resolve().parents[2]
MOUNT = Path("/mnt/emonet")
RUNS, UNMOUNTED = "runs on the local cluster", f"fails fast: {MOUNT} is not mounted"
EXPECTED = {
    "jobs/realdata.job.yaml": (UNMOUNTED,),
    "jobs/submit/demo.job.yaml": (UNMOUNTED, RUNS),
    "jobs/submit/pretrain-transfer.job.yaml": (UNMOUNTED,),
    "jobs/submit/sweep-lr-lambda.job.yaml": (UNMOUNTED, RUNS),
    "jobs/submit/voxceleb-transfer.job.yaml": (UNMOUNTED,),
}
FAST_SECONDS = 120
"""A failing command's bound, submission and the job's start included (measured: ~15 s on a busy 2-core machine)."""
CASES = [(spec, i, what) for spec, whats in EXPECTED.items() for i, what in enumerate(whats)]
TIMINGS: dict[str, float] = {}


def header_commands(path: Path) -> list[str]:
    """The ``emonet ...`` commands of a spec's leading comment block, continuations joined."""
    commands, current = [], None
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].rstrip()
        if current is None and text.startswith("   emonet "):
            current = ""
        if current is not None:
            if text.endswith("\\"):
                current += text[:-1] + " "
            else:
                commands.append((current + text).strip())
                current = None
    return commands


def argv(command: str, cwd: Path) -> list[str]:
    """The command as a shell would run it in ``cwd`` (only ``$PWD`` is expanded; any other variable fails)."""
    args = [re.sub(r"\$(PWD\b|\{PWD\})", str(cwd), a) for a in shlex.split(command, comments=True)]
    assert args[0] == "emonet" and not [a for a in args if "$" in a], args
    return [emonet_console_script(), *args[1:]]


def test_every_header_command_is_checked():
    found = {str(p.relative_to(ROOT)): len(header_commands(p)) for p in sorted((ROOT / "jobs").rglob("*.yaml"))}
    assert {k: v for k, v in found.items() if v} == {k: len(v) for k, v in EXPECTED.items()}
    (local,) = [c for c in header_commands(ROOT / "jobs/submit/demo.job.yaml") if "--profile" in c]
    assert argv(local, Path("/w"))[1:] == [
        "submit", "jobs/submit/demo.job.yaml", "--follow", "--profile", "smoke", "output_dir=/w/cluster-demo/runs",
        "data.shards=/w/cluster-demo/shards", "ray.storage_path=/w/cluster-demo/ray"]
    for spec, i, what in CASES:  # the header's comment on the command says which cluster it is for
        assert ("# the local cluster (cluster/local)" in header_commands(ROOT / spec)[i]) == (what == RUNS), (spec, i)


@pytest.fixture(scope="module")
def cluster():
    with started_cluster(TIMINGS) as c:
        yield c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A user's directory: the repository's ``jobs`` next to what the commands write (shared, as in a shell)."""
    cwd = tmp_path_factory.mktemp("headers")
    (cwd / "jobs").symlink_to(ROOT / "jobs")
    return cwd


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("spec, index, what", CASES, ids=[f"{Path(s).name}-{i}" for s, i, _ in CASES])
def test_the_header_command_runs_as_written(cluster, workdir, spec, index, what):
    if MOUNT.exists():
        pytest.skip(f"this machine has {MOUNT}: the commands for a cluster with it would run the full jobs here")
    command = header_commands(ROOT / spec)[index]
    args = argv(command, workdir)
    t0 = time.monotonic()
    res = subprocess.run(args, cwd=workdir, env=cluster["env"], capture_output=True, text=True, timeout=1100)
    took = TIMINGS[f"{Path(spec).name}-{index}"] = time.monotonic() - t0
    out = f"$ {command}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    job = re.search(r"submitted job (\S+)", res.stdout)
    assert job, out
    job_id = job.group(1)
    if what == UNMOUNTED:
        assert res.returncode == 1 and f"job {job_id} FAILED: shared storage '{MOUNT}' not found on this node" \
            in res.stderr, out
        assert took < FAST_SECONDS, f"took {took:.0f} s\n{out}"
        assert not MOUNT.exists()  # the job created nothing where the storage should be
        return
    assert res.returncode == 0 and f"job {job_id} SUCCEEDED" in res.stdout, out
    # every run step's MLflow run, on the local cluster's server (not the spec's http://mlflow:5000)
    overrides = [a for a in args[3:] if "=" in a and not a.startswith("-")]
    profile = args[args.index("--profile") + 1] if "--profile" in args else None
    runs = [s.id for s in load_spec(ROOT / spec, overrides, profile).steps if s.run not in ("synth", "prepare")]
    links = dict((step, url) for step, url in re.findall(r"mlflow run \w+ \(([^:]+): \S*\) at (\S+)", res.stdout))
    assert sorted(links) == sorted(runs), out
    assert all(url.startswith(f"{cluster['mlflow']}/#/experiments/") for url in links.values()), links
    output_dir = Path(next(o for o in overrides if o.startswith("output_dir=")).split("=", 1)[1])
    assert output_dir.is_dir() and output_dir.is_relative_to(workdir)  # $PWD was the command's directory
