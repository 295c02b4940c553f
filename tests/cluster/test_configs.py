"""Every shipped cluster config and job spec, checked without a cluster.

* the autoscaler YAML against Ray's own schema (ray/autoscaler/ray-schema.json) and Ray's own config checks;
* the KubeRay manifests: they parse and pin the Ray image and the emonet-dist version;
* every job spec under jobs/submit/ loads (its embedded config through ``Config.from_dict``), validates its steps,
  uses only shared paths, and pins this package's version; the demo and sweep specs agree with jobs/demo.yaml and
  jobs/spaces/lr_lambda.yaml;
* the spec validator refuses what would fail later on the cluster, and the log parser finds the MLflow runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

import emonet_dist
from emonet_dist.config import Config, load_config
from emonet_dist.errors import ConfigError, EmonetError
from emonet_dist.pipeline.checks import check_shared_paths
from emonet_dist.pipeline.runner import MARKER
from emonet_dist.pipeline.spec import load_spec
from emonet_dist.submit import failure, mlflow_links, run_records

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "jobs" / "submit").glob("*.job.yaml"))
PIN = f"emonet-dist=={emonet_dist.__version__}"
RAY_VERSION = "2.60.0"


def _pyproject_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_package_version_is_the_pinned_one():
    assert emonet_dist.__version__ == _pyproject_version()


# ---------------------------------------------------------------------------------------------------------------
# cluster configs
# ---------------------------------------------------------------------------------------------------------------
def test_autoscaler_config_validates_against_rays_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    cfg = yaml.safe_load((ROOT / "cluster" / "autoscaler.yaml").read_text())
    jsonschema.validate(cfg, schema)  # the file as written
    validate_config(prepare_config(cfg))  # and as `ray up` sees it: defaults filled, node types checked
    gpu = cfg["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and cfg["head_node_type"] == "head"
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{RAY_VERSION}-py311")
    setup = " ".join(cfg["setup_commands"])
    assert f'"{PIN}"' in setup and f"ray.__version__ == '{RAY_VERSION}'" in setup
    assert all("RAY_AUTH_MODE=token" in " ".join(cfg[k])
               for k in ("head_start_ray_commands", "worker_start_ray_commands"))


def _images(obj) -> list[str]:
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == "image"] + [i for v in obj.values() for i in _images(v)]
    if isinstance(obj, list):
        return [i for v in obj for i in _images(v)]
    return []


def test_kuberay_manifests_parse_and_pin_ray_and_the_package():
    cluster = list(yaml.safe_load_all((ROOT / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    job = list(yaml.safe_load_all((ROOT / "cluster" / "kuberay" / "rayjob.yaml").read_text()))
    rc = next(d for d in cluster if d["kind"] == "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1" and rc["spec"]["rayVersion"] == RAY_VERSION
    assert rc["metadata"]["labels"]["app.kubernetes.io/version"] == emonet_dist.__version__
    ray_images = [i for i in _images(rc) if i.startswith("rayproject/ray:")]
    assert ray_images and all(i.startswith(f"rayproject/ray:{RAY_VERSION}-py311") for i in ray_images)
    gpu = rc["spec"]["workerGroupSpecs"][0]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EMONET_DIST_VERSION"]["value"] == emonet_dist.__version__ and env["RAY_AUTH_MODE"]["value"] == "token"
    assert {d["kind"] for d in cluster} >= {"Service", "Deployment", "PersistentVolumeClaim"}  # MLflow + storage

    (rj,) = job
    assert rj["kind"] == "RayJob" and rj["apiVersion"] == "ray.io/v1"
    assert rj["spec"]["clusterSelector"]["ray.io/cluster"] == rc["metadata"]["name"]
    runtime_env = yaml.safe_load(rj["spec"]["runtimeEnvYAML"])
    assert runtime_env["pip"] == [PIN] and f"v{emonet_dist.__version__}" in runtime_env["working_dir"]
    entry = rj["spec"]["entrypoint"].split()
    assert entry[:5] == ["python", "-m", "emonet_dist.cli", "jobs", "run"] and (ROOT / entry[5]).is_file()
    assert all(i.startswith(f"rayproject/ray:{RAY_VERSION}") for i in _images(rj))


def test_local_scripts_are_valid_shell_and_document_themselves():
    for name in ("start.sh", "stop.sh"):
        path = ROOT / "cluster" / "local" / name
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
        out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "cluster/local" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# job specs
# ---------------------------------------------------------------------------------------------------------------
def test_the_required_specs_ship():
    names = {p.name for p in SPECS}
    assert {"demo.job.yaml", "pretrain-transfer.job.yaml", "sweep-lr-lambda.job.yaml",
            "voxceleb-transfer.job.yaml"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_job_spec_loads_and_validates(path):
    raw = yaml.safe_load(path.read_text())
    cfg = Config.from_dict(raw["config"])  # the embedded config, strictly
    spec = load_spec(path)
    assert spec.config == cfg and spec.steps and spec.description
    check_shared_paths(cfg)  # submittable as is: absolute shared paths or URLs
    assert spec.runtime_env["pip"] == [PIN]
    assert spec.runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    assert Config.from_dict(spec.to_dict()["config"]) == cfg  # what submit ships round-trips


def test_demo_spec_is_jobs_demo_yaml_on_shared_paths():
    spec = load_spec(ROOT / "jobs" / "submit" / "demo.job.yaml")
    demo = load_config(ROOT / "jobs" / "demo.yaml")
    paths = ("output_dir", "data.shards", "ray.storage_path")
    assert {k: v for k, v in spec.config.flat().items() if k not in paths} == \
        {k: v for k, v in demo.flat().items() if k not in paths}
    from emonet_dist.demo import TARGET, demo_spec_path

    arms = {s.mode: s for s in spec.steps if s.run == "transfer"}
    assert set(arms) == {"adapters", "scratch"} and all(a.corpus == TARGET for a in arms.values())
    # the steps are those of the shipped demo spec (`emonet demo`), transfer overrides included
    shipped = load_spec(demo_spec_path())
    assert spec.steps == shipped.steps
    assert len({a.overrides for a in arms.values()}) == 1 and all(a.overrides for a in arms.values())  # fair
    # the local cluster's smoke run (the header's second command) is `emonet demo --smoke`'s profile
    assert yaml.safe_load((ROOT / "jobs" / "submit" / "demo.job.yaml").read_text())["profiles"] == \
        yaml.safe_load(demo_spec_path().read_text())["profiles"]


def test_sweep_spec_embeds_the_lr_lambda_space():
    spec = load_spec(ROOT / "jobs" / "submit" / "sweep-lr-lambda.job.yaml")
    (tune,) = [s for s in spec.steps if s.run == "tune"]
    assert tune.space == yaml.safe_load((ROOT / "jobs" / "spaces" / "lr_lambda.yaml").read_text())


def test_voxceleb_spec_streams_resampled_speaker_shards_from_object_storage():
    spec = load_spec(ROOT / "jobs" / "submit" / "voxceleb-transfer.job.yaml")
    (vox,) = spec.config.data.corpora
    assert (vox.task, vox.epoch_mode) == ("speaker", "resampled")
    assert spec.config.data.shards.startswith("pipe:") and "{path}" in spec.config.data.shards
    assert [s.mode for s in spec.steps if s.run == "transfer"] == ["adapters", "adapters"]


def _write(tmp_path: Path, **changes) -> Path:
    base = {"name": "t", "config": {"output_dir": "/tmp/x", "data": {"shards": "/tmp/s", "corpora": [{"name": "a"}]}},
            "steps": [{"id": "pre", "run": "train"}]}
    base.update(changes)
    path = tmp_path / "t.job.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("changes, match", [
    ({"extra": 1}, "unknown: extra"),
    ({"steps": [{"run": "fly"}]}, "needs run"),
    ({"steps": [{"run": "train", "overrides": ["optim.nope=1"]}]}, "optim.nope"),
    ({"steps": [{"run": "transfer", "corpus": "b", "mode": "adapters"}]}, "earlier train/transfer step"),
    ({"steps": [{"id": "a", "run": "train"}, {"id": "a", "run": "train"}]}, "duplicate id"),
    ({"steps": [{"run": "train", "epochs": 3}]}, "unknown key"),
    ({"steps": [{"run": "tune", "space": {"optim.lr": "loguniform(0, 1)"}}]}, "low > 0"),
    ({"steps": [{"id": "p", "run": "train"}, {"run": "report", "baseline": "p", "candidates": ["q"]}]}, "report needs"),
    ({"runtime_env": {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1"}}}, "emonet sets them itself"),
    ({"config": {"data": {"corpora": [{"name": "a", "task": "dance"}]}}}, "task"),
])
def test_bad_specs_are_refused_before_submission(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        load_spec(_write(tmp_path, **changes))


def test_submitted_configs_need_shared_paths(tmp_path):
    spec = load_spec(_write(tmp_path), ["output_dir=runs"])
    with pytest.raises(ConfigError, match="output_dir must be absolute"):
        check_shared_paths(spec.config)
    for ok in ("http://127.0.0.1:8000/shards", "pipe:aws s3 cp s3://b/{path} -", "/mnt/emonet/shards"):
        check_shared_paths(spec.config.override("output_dir=/o", f"data.shards={json.dumps(ok)}"))


def test_mlflow_runs_are_found_in_job_logs():
    rec = {"step": "pre", "run": "tiny-1", "mlflow_run_id": "abc", "tracking_uri": "http://127.0.0.1:5000",
           "experiment_id": "3"}
    logs = "\n".join(["(RayTrainWorker pid=1) noise", MARKER + json.dumps(rec), f"prefix {MARKER}{{not json",
                      MARKER + json.dumps({**rec, "step": "t", "mlflow_run_id": None}),
                      MARKER + json.dumps({**rec, "step": "x", "mlflow_run_id": "def", "tracking_uri": "sqlite:///r.db"})])
    assert [r["step"] for r in run_records(logs)] == ["pre", "t", "x"]
    assert mlflow_links(logs) == ["mlflow run abc (pre: tiny-1) at http://127.0.0.1:5000/#/experiments/3/runs/abc",
                                  "mlflow run def (x: tiny-1) at sqlite:///r.db"]
    assert failure("a\nerror: first\nb\nerror: the real one\n", "Ray's message") == "the real one"
    assert failure("no cli error", "Job entrypoint   failed") == "Job entrypoint failed"


@pytest.mark.parametrize("shell, given, expect", [
    ("http://127.0.0.1:5123", [], "http://127.0.0.1:5123"),  # cluster/local's env.sh sourced: its server
    (None, [], "http://mlflow:5000"),  # nothing in the shell: the spec's default
    ("sqlite:////home/me/mlflow.db", [], "http://mlflow:5000"),  # a local store is not forwarded to the cluster
    ("http://127.0.0.1:5123", ["MLFLOW_TRACKING_URI=http://other:5000"], "http://other:5000"),  # --env wins
])
def test_a_submitted_job_logs_to_the_shells_mlflow_server_unless_told_otherwise(monkeypatch, shell, given, expect):
    """Issue 14, row 10: a job submitted to cluster/local logged to the spec's http://mlflow:5000, which does not
    exist there, and failed after 8.5 minutes."""
    from emonet_dist.submit import runtime_env

    if shell is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", shell)
    path = ROOT / "jobs" / "submit" / "demo.job.yaml"
    renv = runtime_env(load_spec(path), path, given, no_pip=True)
    assert renv["env_vars"]["MLFLOW_TRACKING_URI"] == expect and "pip" not in renv


@pytest.mark.parametrize("local, pin, drops", [
    ("http://127.0.0.1:8265", PIN, True),  # env.sh of cluster/local names this job API: its Python has the package
    ("http://127.0.0.1:8265/", PIN, True),
    ("http://127.0.0.1:9999", PIN, False),  # another cluster (a port-forward to a real one): the pin is installed
    (None, PIN, False),
])
def test_the_local_cluster_runs_this_machines_python_without_the_pip_pin(monkeypatch, local, pin, drops):
    """For a pip pin Ray would clone cluster/local's whole venv (torch included) before the job starts."""
    from emonet_dist.submit import runs_this_python

    if local is None:
        monkeypatch.delenv("EMONET_LOCAL_CLUSTER", raising=False)
    else:
        monkeypatch.setenv("EMONET_LOCAL_CLUSTER", local)
    assert runs_this_python("http://127.0.0.1:8265", [pin]) is drops
    assert runs_this_python("http://127.0.0.1:8265", []) is False


def test_the_local_cluster_refuses_a_pin_of_another_version(monkeypatch):
    from emonet_dist.submit import runs_this_python

    monkeypatch.setenv("EMONET_LOCAL_CLUSTER", "http://127.0.0.1:8265")
    with pytest.raises(EmonetError, match="pins 'emonet-dist==9.9', but the local cluster .* runs this machine's"):
        runs_this_python("http://127.0.0.1:8265", ["emonet-dist==9.9", "numpy"])


def test_the_local_clusters_env_sh_names_its_job_api_for_submit():
    script = (ROOT / "cluster" / "local" / "start.sh").read_text()
    assert "export RAY_API_SERVER_ADDRESS=$DASHBOARD" in script and "export EMONET_LOCAL_CLUSTER=$DASHBOARD" in script
