"""The real-corpus experiment, smoke-sized (issue 8): ``emonet jobs run jobs/realdata_smoke.job.yaml`` on the real
URDU and EMOVO FLAC files: prepare + shard, eGeMAPS+SVM, scratch, pretraining + adapter transfer, the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emonet_testkit import SHARED_DATA, shared_corpus, user_env

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.timeout(1800)]  # the job's own budget: 1500 s
ROOT = Path(__file__).resolve().parents[1]


def test_realdata_smoke_job_runs_every_method_on_identical_test_partitions(tmp_path):
    shared_corpus("urdu"), shared_corpus("emovo")
    out = tmp_path / "runs"
    env = user_env(EMONET_REALDATA=str(SHARED_DATA))
    res = subprocess.run([sys.executable, "-m", "emonet_dist.cli", "jobs", "run",
                          str(ROOT / "jobs" / "realdata_smoke.job.yaml"), f"output_dir={out}",
                          f"data.shards={out / 'shards'}"], capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "[job realdata_smoke] finished: 5 run(s)" in res.stdout
    # the corpora came from their official layouts, every file accounted for
    for corpus, n in (("urdu", 400), ("emovo", 588)):
        rep = json.loads((out / "corpora" / corpus / "report.json").read_text())
        assert rep["utterances"] + rep["skipped_count"] == n and rep["speaker_independent"]
    # the report compares all methods on the same EMOVO test utterances (build_report refuses otherwise)
    report_dir = next((out / "reports").glob("report-*"))
    report = json.loads((report_dir / "report.json").read_text())
    (row,) = report["corpora"]
    assert row["corpus"] == "emovo" and row["num_classes"] == 7 and abs(row["chance"] - 1 / 7) < 1e-9
    assert set(row["candidates"]) == {"egemaps", "scratch-emovo@final", "transfer-emovo"}
    assert all((report_dir / f).is_file() for f in ("report.md", "report.html", "uar_delta.png"))
    html = (report_dir / "report.html").read_text()  # issue 5: a report from runs trained on real corpora
    assert "<table" in html and "emovo" in html and "transfer-emovo" in html
    # every run recorded the speaker-independent split it used, and the EMOVO test speakers are the same in all
    test_speakers = set()
    runs = [r for r in out.glob("smoke-*") if (r / "run.json").is_file()]
    assert len(runs) == 4
    for run in runs:
        parts = json.loads((run / "partitions.json").read_text())
        for name, corpus in parts.items():
            spk = {p: set(v["speakers"]) for p, v in corpus["partitions"].items()}
            assert not (spk["train"] & spk["test"]) and not (spk["dev"] & spk["test"]) and spk["test"]
            if name == "emovo":
                test_speakers.add(tuple(sorted(spk["test"])))
    assert len(test_speakers) == 1
