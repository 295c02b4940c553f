"""The significance report on small synthetic runs: files, numbers, marks, refusals, and its MLflow run."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import pytest
from scipy.stats import binomtest, chi2
from sklearn.metrics import recall_score

from emonet_dist import metrics
from emonet_dist.errors import EmonetError
from emonet_dist.evaluate.report import CAVEAT, FILES, build_report, log_report_run
from emonet_dist.evaluate.report_format import format_table
from emonet_testkit import paired

BIN = ("neg", "pos")
EMO = ("ang", "hap", "neu", "sad")


def _imbalanced():
    """90 'neu' + 10 'ang'. Baseline: every 'ang' right, 60 of 90 'neu' right (UAR 0.833). Candidate: every 'neu'
    right, no 'ang' (UAR 0.5). b = 10, c = 30: significantly *more correct* predictions, yet a lower UAR."""
    labels = ["neu"] * 90 + ["ang"] * 10
    base = ["neu"] * 60 + ["ang"] * 30 + ["ang"] * 10
    cand = ["neu"] * 90 + ["neu"] * 10
    return [f"i{i:03d}" for i in range(100)], labels, base, cand


@pytest.fixture
def runs(make_run):
    """Baseline + two candidates over four corpora; the cases are chosen for their known McNemar outcome."""
    sig = paired(0, 30, 50, 20, BIN, seed=1)            # chi2, p ~ 1e-7, candidate better   -> "+"
    same = paired(3, 5, 40, 10, EMO, seed=2)            # exact, p = 0.727                  -> ""
    worse = paired(12, 0, 30, 8, EMO, seed=3)           # exact, p = 2 / 4096, worse        -> "−"
    imb = _imbalanced()                                 # chi2, p = 0.0027, "+" with lower UAR
    cl = {"sig": BIN, "same": EMO, "worse:emo": EMO, "imb": ("ang", "neu")}
    cases = {"sig": sig, "same": same, "worse:emo": worse, "imb": imb}
    base = make_run("scratch", {k: (v[0], v[1], v[2], cl[k]) for k, v in cases.items()}, mlflow_run_id="a" * 32)
    cand = make_run("all", {k: (v[0], v[1], v[3], cl[k]) for k, v in cases.items()}, mlflow_run_id="b" * 32)
    # a second candidate identical to the baseline on every corpus but one, and without 'imb'
    twin = make_run("twin", {k: (v[0], v[1], v[2], cl[k]) for k, v in cases.items() if k != "imb"})
    return base, cand, twin, cases, cl


def _uar(labels, preds):
    return recall_score(labels, preds, labels=sorted(set(labels)), average="macro")


def test_report_files_numbers_and_marks(runs, tmp_path):
    base, cand, twin, cases, cl = runs
    out = tmp_path / "report"
    rep = build_report(base, [cand, twin], out, labels={"all": "All"})
    for name in FILES.values():
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["alpha"] == 0.05 and saved["checkpoint"] == "best" and saved["caveat"] == CAVEAT
    assert saved["baseline"]["run_id"] == "a" * 32 and saved["baseline"]["label"] == "scratch"
    assert [c["label"] for c in saved["candidates"]] == ["All", "twin"]
    assert saved["candidates"][0]["mlflow_run_id"] == "b" * 32
    assert saved["candidates"][1]["run_id"] == "twin"  # no MLflow id: the run name links it
    assert saved["skipped_corpora"] == [{"corpus": "imb", "reason": "missing in twin"}]
    rows = {r["corpus"]: r for r in saved["corpora"]}
    assert list(rows) == ["same", "sig", "worse:emo"]  # shared corpora, sorted

    for corpus, (ids, labels, bp, cp) in cases.items():
        if corpus == "imb":
            continue
        r = rows[corpus]
        assert r["chance"] == pytest.approx(1 / len(cl[corpus])) and r["n"] == len(ids)
        assert r["baseline_uar"] == pytest.approx(_uar(labels, bp), rel=1e-12)
        idx = {c: i for i, c in enumerate(cl[corpus])}
        ref = metrics.scores([idx[x] for x in labels], [idx[x] for x in cp], len(idx))
        cell = r["candidates"]["All"]
        assert cell["uar"] == pytest.approx(_uar(labels, cp), rel=1e-12) == pytest.approx(ref["uar"], rel=1e-12)
        assert cell["uar_delta"] == pytest.approx(cell["uar"] - r["baseline_uar"], rel=1e-12)
        b = sum(x == t != y for t, x, y in zip(labels, bp, cp))
        c = sum(y == t != x for t, x, y in zip(labels, bp, cp))
        assert (cell["b"], cell["c"], cell["n"]) == (b, c, len(ids))
        if b + c < 25:
            assert cell["method"] == "exact"
            assert cell["p_value"] == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)
        else:
            assert cell["method"] == "chi2"
            assert cell["p_value"] == pytest.approx(chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1), rel=1e-12)
        twin_cell = r["candidates"]["twin"]
        assert (twin_cell["b"], twin_cell["c"], twin_cell["p_value"], twin_cell["mark"]) == (0, 0, 1.0, "")

    marks = {k: r["candidates"]["All"]["mark"] for k, r in rows.items()}
    assert marks == {"sig": "+", "same": "", "worse:emo": "\u2212"}
    assert rows["sig"]["candidates"]["All"]["significant"] is True
    assert rows["same"]["candidates"]["All"]["p_value"] == pytest.approx(0.7265625)

    with open(out / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 * 2
    first = next(t for t in table if t["corpus"] == "sig" and t["candidate"] == "All")
    assert float(first["p_value"]) == pytest.approx(rows["sig"]["candidates"]["All"]["p_value"], rel=1e-12)
    assert first["mark"] == "+" and first["baseline"] == "scratch"

    text = format_table(rep)
    assert "\u2212" in text and "+" in text and "skipped imb" in text and "imbalanced" in text
    md = (out / "report.md").read_text()
    assert CAVEAT in md and "| sig | 50.0 |" in md and "uar_delta.png" in md


class _Tables(HTMLParser):
    """Collects the text of every table cell, per table (by class), and the paragraphs' text."""

    def __init__(self):
        super().__init__()
        self.tables, self.text, self.imgs, self._cell, self._cls = {}, [], [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._cls = a.get("class")
            self.tables[self._cls] = []
        elif tag == "tr":
            self.tables[self._cls].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[self._cls][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        self.text.append(data)


def test_html_is_self_contained_with_table_and_caveat(runs, tmp_path):
    base, cand, _, _, _ = runs
    build_report(base, [cand], tmp_path / "r")
    p = _Tables()
    p.feed((tmp_path / "r" / "report.html").read_text())
    p.close()
    head, *body = p.tables["table4"]
    assert head == ["corpus", "chance", "scratch (baseline)", "all"]
    cells = {r[0]: r for r in body}
    assert set(cells) == {"imb", "same", "sig", "worse:emo"}
    assert cells["sig"][3].endswith("+") and cells["worse:emo"][3].endswith("\u2212")
    assert not cells["same"][3].endswith(("+", "\u2212"))
    # the caveat case: significantly more correct predictions, but a lower UAR
    assert cells["imb"][3] == "50.0+" and cells["imb"][2] == "83.3"
    assert CAVEAT in " ".join(" ".join(p.text).split())
    assert p.imgs and p.imgs[0].startswith("data:image/png;base64,")  # no file next to it needed


def test_checkpoint_and_run_names(runs, tmp_path, make_run):
    base, cand, _, cases, cl = runs
    ids, labels, bp, _ = cases["sig"]
    # final predictions differ from best: the final candidate equals the baseline
    better = make_run("ck", {"sig": (ids, labels, bp, BIN)}, checkpoints=("final",))
    with pytest.raises(EmonetError, match=r"no prediction CSVs in predictions/best/; it has final"):
        build_report(base, [better], tmp_path / "x")
    rep = build_report("scratch", ["ck"], tmp_path / "y", checkpoint="final", output_dir=base.parent)
    assert rep["corpora"][0]["candidates"]["ck"]["b"] == 0 and rep["corpora"][0]["candidates"]["ck"]["c"] == 0


def test_mismatched_ids_and_labels_refused(runs, tmp_path, make_run):
    base, _, _, cases, cl = runs
    ids, labels, _, cp = cases["same"]
    short = make_run("short", {"same": (ids[:-1], labels[:-1], cp[:-1], EMO)})
    with pytest.raises(EmonetError,
                       match=r"corpus same: .*different utterances \(57 ids matched, 1 only in the baseline"):
        build_report(base, [short], tmp_path / "a")
    relabelled = ["sad" if x == "ang" else x for x in labels]
    other = make_run("relabelled", {"same": (ids, relabelled, cp, EMO)})
    with pytest.raises(EmonetError, match="different true labels"):
        build_report(base, [other], tmp_path / "b")


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_log_report_run_and_mlflow_inputs(runs, tmp_path, sqlite_uri):
    from mlflow import MlflowClient

    from emonet_dist import tracking

    base, cand, _, _, _ = runs
    client = MlflowClient(tracking_uri=sqlite_uri)
    # the candidate as an MLflow run: its prediction CSVs as artifacts, read back through the artifacts API
    exp = tracking.ensure_experiment(sqlite_uri, "train", (tmp_path / "artifacts").as_uri())
    train_id = client.create_run(exp, run_name="all-mlflow").info.run_id
    client.log_artifacts(train_id, str(cand / "predictions"), "predictions")

    out = tmp_path / "rep"
    rep = build_report(base, [train_id], out, tracking_uri=sqlite_uri)
    assert rep["candidates"][0]["source"] == "mlflow" and rep["candidates"][0]["label"] == "all-mlflow"
    assert rep["candidates"][0]["run_id"] == train_id
    marks = {r["corpus"]: r["candidates"]["all-mlflow"]["mark"] for r in rep["corpora"]}
    assert marks == {"imb": "+", "same": "", "sig": "+", "worse:emo": "\u2212"}

    run_id = log_report_run(rep, sqlite_uri, "reports", out)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["report.baseline"] == "a" * 32
    assert run.data.tags["report.candidates"] == train_id
    assert run.data.tags["emonet.kind"] == "report"
    m = run.data.metrics
    sig = next(r for r in rep["corpora"] if r["corpus"] == "sig")
    assert m["uar_delta/sig/all-mlflow"] == pytest.approx(sig["candidates"]["all-mlflow"]["uar_delta"])
    assert m["uar/worse-emo/scratch"] == pytest.approx(
        next(r for r in rep["corpora"] if r["corpus"] == "worse:emo")["baseline_uar"])
    assert m["p_value/imb/all-mlflow"] < 0.05
    assert run.data.params["alpha"] == "0.05"
    assert {a.path for a in client.list_artifacts(run_id)} >= set(FILES.values())
    saved = json.loads((out / "report.json").read_text())
    assert saved["report_run"]["run_id"] == run_id


def test_cli_report_and_evaluate(runs, tmp_path, capsys, make_run):
    from emonet_dist.cli import main

    base, cand, _, cases, _ = runs
    out = tmp_path / "cli"
    assert main(["report", "--baseline", str(base), "--candidate", "all", "--output-dir", str(base.parent),
                 "--label", "all=All", "--out", str(out), "--no-track"]) == 0
    text = capsys.readouterr().out
    assert "All" in text and "imbalanced" in text and (out / "report.html").is_file()
    assert main(["evaluate", "--predictions", str(cand), "--out", str(tmp_path / "ev"), "--checkpoint", "final"]) == 0
    assert "UAR" in capsys.readouterr().out and (tmp_path / "ev" / "worse-emo.confusion.png").is_file()
    ids, labels, _, cp = cases["sig"]
    make_run("short2", {"sig": (ids[1:], labels[1:], cp[1:], BIN)})
    assert main(["report", "--baseline", str(base), "--candidate", "short2", "--output-dir", str(base.parent),
                 "--out", str(tmp_path / "bad"), "--no-track"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: corpus sig:") and len(err.strip().splitlines()) == 1


def test_per_corpus_runs_merge_into_one_column_and_checkpoint_suffix(runs, tmp_path, make_run):
    base, cand, _, cases, cl = runs
    # per-corpus candidate runs (as scratch or transfer per corpus): one column, same numbers as the joint run
    parts = [make_run(f"per-{k.replace(':', '_')}", {k: (v[0], v[1], v[3], cl[k])}) for k, v in cases.items()]
    joint = build_report(base, [cand], tmp_path / "joint")
    merged = build_report(base, [",".join(p.name for p in parts)], tmp_path / "merged", output_dir=base.parent,
                          labels={",".join(p.name for p in parts): "per-corpus"})
    assert [r["candidates"]["per-corpus"]["uar"] for r in merged["corpora"]] == \
        [r["candidates"]["all"]["uar"] for r in joint["corpora"]]
    assert merged["candidates"][0]["source"] == "merged" and len(merged["corpora"]) == 4
    # a corpus in two merged runs is refused
    with pytest.raises(EmonetError, match="is in both"):
        build_report(base, [f"{parts[0].name},{parts[0].name}"], tmp_path / "dup", output_dir=base.parent)
    # @final reads that run's final predictions whatever the report's checkpoint
    ids, labels, bp, _ = cases["sig"]
    make_run("finalonly", {"sig": (ids, labels, bp, BIN)}, checkpoints=("final",))
    rep = build_report(base, ["finalonly@final"], tmp_path / "fin", output_dir=base.parent)
    assert rep["corpora"][0]["candidates"]["finalonly@final"]["b"] == 0
