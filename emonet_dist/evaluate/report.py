"""Significance reports: the paper's Table 4 (Gerczuk et al. 2021) for any baseline and candidate runs.

For every corpus all runs share: chance level (1 / number of classes), the baseline's test UAR and each
candidate's test UAR, marked ``+`` / ``−`` where McNemar's test (:mod:`.significance`) finds a significant
difference (p < alpha) in the proportion of errors; plus a Figure-7-style heatmap of the UAR deltas.

Files in ``out_dir``::

    report.json   every number: UARs, WAs, chance, b, c, n, test, statistic, p, alpha, runs and their ids
    report.csv    one row per (corpus, candidate)
    report.md     the table, the McNemar details, the runs and the caveat
    report.html   the same, self-contained (the heatmap is embedded)
    uar_delta.png the heatmap

:func:`log_report_run` puts a report into its own MLflow run, tagged with the ids of the runs it compares.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..errors import EmonetError, short
from .confusion import json_safe, score_predictions
from .predictions import RunPredictions, load_column
from .significance import EXACT_BELOW, check_same_ids, mcnemar

CAVEAT = ("McNemar's test compares the number of correctly classified utterances, not UAR: on imbalanced "
          "corpora a significant improvement (+, more correct predictions) need not come with a higher UAR, and "
          "a significant decrease (−) need not come with a lower one (Gerczuk et al. 2021, Table 4).")
TEST = {"name": "McNemar", "exact_below": EXACT_BELOW,
        "exact": "two-sided binomial test, p=0.5, on min(b, c) of b + c (used when b + c < 25)",
        "chi2": "(|b - c| - 1)^2 / (b + c) against chi-square with 1 dof (used when b + c >= 25)",
        "b": "baseline right, candidate wrong", "c": "baseline wrong, candidate right",
        "marks": "+ significant and c > b (candidate better); \u2212 significant and c < b (candidate worse)"}
FILES = {"json": "report.json", "csv": "report.csv", "markdown": "report.md", "html": "report.html",
         "heatmap": "uar_delta.png"}

RunRef = str | Path | RunPredictions


def build_report(baseline: RunRef, candidates: list[RunRef], out_dir: str | Path, alpha: float = 0.05,
                 checkpoint: str = "best", labels: dict | None = None, *, output_dir: str | Path = "runs",
                 tracking_uri: str | None = None) -> dict:
    """Compare candidate runs with a baseline run on every shared corpus; write the report files.

    Args:
        baseline, candidates: run directories, run names under ``output_dir``, MLflow run ids (read through
            the artifacts API at ``tracking_uri``), or already loaded :class:`RunPredictions`; a reference may
            end in ``@best``/``@final``, and comma-joined references form one column (see
            :func:`~.predictions.load_column`).
        out_dir: where the files go (created).
        alpha: significance level of the marks.
        checkpoint: ``"best"`` or ``"final"``: which prediction CSVs to read.
        labels: display names, ``{ref: label}`` (ref as given, or the run name); default: the run names.
    Returns:
        The report as written to ``report.json``.
    """
    if not candidates:
        raise EmonetError("a report needs at least one candidate run")
    if not 0.0 < alpha < 1.0:
        raise EmonetError(f"alpha must be in (0, 1), got {alpha}")
    runs = [r if isinstance(r, RunPredictions) else load_column(r, checkpoint, output_dir, tracking_uri)
            for r in [baseline, *candidates]]
    names = _labels(runs, labels or {})
    base, cands = runs[0], runs[1:]
    shared = [c for c in base.corpora if all(c in r.corpora for r in cands)]
    skipped = [{"corpus": c,
                "reason": "missing in " + ", ".join(names[i] for i, r in enumerate(runs) if c not in r.corpora)}
               for c in sorted({c for r in runs for c in r.corpora} - set(shared))]
    if not shared:
        listing = ", ".join(f"{names[i]}: {sorted(r.corpora)}" for i, r in enumerate(runs))
        raise EmonetError(f"the runs share no corpus ({listing})")
    rows = [_corpus_row(corpus, base, cands, names[1:], alpha) for corpus in sorted(shared, key=str.lower)]
    report = {
        "kind": "emonet-significance-report", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "alpha": alpha, "checkpoint": checkpoint, "metric": "test UAR (macro recall over the classes present)",
        "test": TEST, "caveat": CAVEAT,
        "baseline": {"label": names[0], "run_id": base.run_id, **base.describe()},
        "candidates": [{"label": names[i + 1], "run_id": r.run_id, **r.describe()} for i, r in enumerate(cands)],
        "corpora": rows, "skipped_corpora": skipped, "files": dict(FILES),
        "summary": summary_of(rows, names[1:]),
    }
    write_report_files(report, out_dir)
    return report


def _corpus_row(corpus: str, base: RunPredictions, cands: list[RunPredictions], labels: list[str],
                alpha: float) -> dict:
    bp = base.corpora[corpus]
    if len(bp) == 0:
        raise EmonetError(f"corpus {corpus}: the baseline's predictions ({bp.source}) have no rows")
    bs = score_predictions(bp)
    truth = dict(zip(bp.ids, bp.labels))
    row = {"corpus": corpus, "num_classes": len(bp.classes), "classes": list(bp.classes),
           "chance": 1.0 / len(bp.classes), "n": len(bp), "baseline_uar": bs["uar"], "baseline_wa": bs["wa"],
           "candidates": {}}
    for label, run in zip(labels, cands):
        cp = run.corpora[corpus]
        check_same_ids(bp.ids, cp.ids, corpus)
        wrong = [i for i, t in zip(cp.ids, cp.labels) if truth[i] != t]
        if wrong:  # same ids, different ground truth: another label map or task, not comparable
            raise EmonetError(f"corpus {corpus}: {len(wrong)} utterance(s) have different true labels in "
                              f"{base.name} and {run.name} (e.g. {wrong[0]}); compare runs with the same labels")
        t = mcnemar(bp.ids, bp.correct, cp.ids, cp.correct, corpus)
        cs = score_predictions(cp)
        row["candidates"][label] = {
            "uar": cs["uar"], "wa": cs["wa"], "uar_delta": cs["uar"] - bs["uar"], "b": t.b, "c": t.c, "n": t.n,
            "method": t.method, "statistic": t.statistic, "p_value": t.p_value,
            "significant": t.p_value < alpha and t.b != t.c, "mark": t.mark(alpha)}
    return row


def summary_of(rows: list[dict], labels: list[str]) -> dict:
    """Per candidate: on how many corpora it is higher/lower in UAR and significantly better/worse."""
    out = {}
    for lab in labels:
        cells = [r["candidates"][lab] for r in rows]
        out[lab] = {"corpora": len(cells), "uar_higher": sum(c["uar_delta"] > 0 for c in cells),
                    "uar_lower": sum(c["uar_delta"] < 0 for c in cells),
                    "significant_better": sum(c["mark"] == "+" for c in cells),
                    "significant_worse": sum(c["mark"] == "\u2212" for c in cells),
                    "mean_uar_delta": float(np.mean([c["uar_delta"] for c in cells]))}
    return out


def _labels(runs: list[RunPredictions], given: dict) -> list[str]:
    """Display names: given for the ref or run name, else the run name; made unique with a suffix."""
    out: list[str] = []
    for r in runs:
        base = str(given.get(r.ref) or given.get(r.name) or given.get(r.run_id) or r.name)
        name, k = base, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out.append(name)
    return out


def write_report_files(report: dict, out_dir: str | Path) -> Path:
    """Write (or rewrite) every file of a report into ``out_dir``; returns the directory."""
    from .plots import delta_heatmap
    from .report_format import render_html, render_markdown, write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = [c["label"] for c in report["candidates"]]
    rows = report["corpora"]
    delta = np.array([[100 * r["candidates"][lab]["uar_delta"] for lab in labels] for r in rows], dtype=float)
    marks = [[r["candidates"][lab]["mark"] for lab in labels] for r in rows]
    delta_heatmap([r["corpus"] for r in rows], labels, delta, marks, out / FILES["heatmap"],
                  title=f"test UAR − {report['baseline']['label']} [pp] ({report['checkpoint']} checkpoint)\n"
                        f"framed: McNemar p < {report['alpha']:g}")
    (out / FILES["json"]).write_text(json.dumps(json_safe(report), indent=1, ensure_ascii=False))
    write_csv(report, out / FILES["csv"])
    (out / FILES["markdown"]).write_text(render_markdown(report))
    (out / FILES["html"]).write_text(render_html(report, out / FILES["heatmap"]))
    return out


def log_report_run(report: dict, tracking_uri: str, experiment: str, out_dir: str | Path) -> str:
    """Log a report as its own MLflow run; returns the run id.

    Tags link the compared runs (``report.baseline``, ``report.candidates``: MLflow run ids, or run names for
    runs without one); metrics per corpus are ``uar/<corpus>/<label>``, ``uar_delta/<corpus>/<label>`` and
    ``p_value/<corpus>/<label>`` (keys through ``tracking.metric_key``); every file in ``out_dir`` is an
    artifact. The run id is also written into ``report.json`` (``report_run``) before the upload.
    """
    from mlflow.entities import Metric, Param

    from .. import tracking
    from ..runs.tracked import create_mlflow_run

    out = Path(out_dir)
    c = tracking.client(tracking_uri)
    base, cands = report["baseline"], report["candidates"]
    tags = {"report.baseline": base["run_id"],
            "report.candidates": ",".join(x["run_id"] for x in cands), "report.baseline_label": base["label"],
            "report.candidate_labels": ",".join(x["label"] for x in cands), "report.checkpoint": report["checkpoint"],
            "report.alpha": str(report["alpha"])}
    name = f"report-{base['label']}-vs-{'+'.join(x['label'] for x in cands)}"[:250]
    # tags emonet.kind=report, source and commit; nested under the job's run when one is open (runs.parent_run)
    run_id = create_mlflow_run(tracking_uri, experiment, name, "report", tags,
                               artifact_location=_artifact_location(tracking_uri))
    try:
        now = int(time.time() * 1000)
        ms = []
        for r in report["corpora"]:
            ms.append(Metric(tracking.metric_key("uar", r["corpus"], base["label"]), r["baseline_uar"], now, 0))
            for lab, cell in r["candidates"].items():
                for what in ("uar", "uar_delta", "p_value"):
                    ms.append(Metric(tracking.metric_key(what, r["corpus"], lab), float(cell[what]), now, 0))
        for i in range(0, len(ms), 1000):  # MLflow takes at most 1000 metrics per batch
            c.log_batch(run_id, metrics=ms[i:i + 1000])
        c.log_batch(run_id, params=[Param("alpha", str(report["alpha"])), Param("checkpoint", report["checkpoint"]),
                                    Param("test", "mcnemar-exact-below-25-else-chi2-cc" + (
                                        "-pooled-per-seed+bootstrap-ci+aso" if "aso" in report["test"] else ""))])
        report["report_run"] = {"run_id": run_id, "tracking_uri": tracking_uri, "experiment": experiment}
        (out / FILES["json"]).write_text(json.dumps(json_safe(report), indent=1, ensure_ascii=False))
        c.log_artifacts(run_id, str(out))
        c.set_terminated(run_id, "FINISHED")
    except Exception as exc:  # noqa: BLE001 - any store failure; the files on disk are complete regardless
        tracking.quietly(lambda: c.set_terminated(run_id, "FAILED"))
        raise EmonetError(f"the report files are complete in {out}, but logging them to MLflow run {run_id} at "
                          f"{tracking_uri} failed: {short(exc, 300)}") from None
    return run_id


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local store next to its database (as ``tracking.artifact_root`` does for runs), instead
    of MLflow's default ``./mlruns`` under whatever directory the command runs in."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts").as_uri()
    return None  # a file store keeps artifacts inside itself; a server decides for itself
