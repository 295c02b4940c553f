"""Rendering a significance report (the dict of :func:`emonet_dist.evaluate.report.build_report`) as a
terminal table, Markdown, self-contained HTML and CSV.

UARs are shown in percent with one decimal, as in the paper's Table 4; the JSON keeps full precision. A grid
report (:mod:`.grid_report`: folds × seeds per method) adds the runs' UAR mean ± std, the pooled UAR's bootstrap
CI and the ASO ε_min matrix, and lists every seed's McNemar test.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path

CSV_COLUMNS = ["corpus", "num_classes", "chance", "n", "baseline", "baseline_uar", "baseline_wa", "candidate",
               "candidate_uar", "candidate_wa", "uar_delta", "b", "c", "method", "statistic", "p_value", "alpha",
               "significant", "mark"]
GRID_CSV_COLUMNS = ["candidate_uar_mean", "candidate_uar_std", "candidate_ci_low", "candidate_ci_high", "seeds",
                    "aso_eps_min_candidate_better", "aso_eps_min_baseline_better"]


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _p(x: float) -> str:
    return f"{x:.3g}" if x >= 1e-4 else f"{x:.1e}"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """The Table-4 grid as strings: header and one row per corpus (``corpus, chance, baseline, cands...``)."""
    labels = [c["label"] for c in report["candidates"]]
    head = ["corpus", "chance", f"{report['baseline']['label']} (baseline)", *labels]
    rows = [[r["corpus"], _pct(r["chance"]), _pct(r["baseline_uar"]),
             *[_pct(r["candidates"][lab]["uar"]) + r["candidates"][lab]["mark"] for lab in labels]]
            for r in report["corpora"]]
    return head, rows


def format_table(report: dict) -> str:
    """The table as plain text for the terminal, with the legend, skipped corpora and the caveat."""
    head, rows = table_rows(report)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"test UAR [%] ({report['checkpoint']} checkpoint); McNemar's test at alpha={report['alpha']:g}: "
           "+ significantly better, \u2212 significantly worse than the baseline", line(head),
           "  ".join("-" * w for w in widths), *[line(r) for r in rows]]
    for lab, s in report["summary"].items():
        out.append(f"{lab}: higher UAR on {s['uar_higher']}/{s['corpora']} corpora, significantly better on "
                   f"{s['significant_better']}, worse on {s['significant_worse']} "
                   f"(mean delta {100 * s['mean_uar_delta']:+.1f} pp)")
    if "grid" in report:
        out += ["", "  ".join(GRID_HEAD), *["  ".join(r) for r in grid_rows(report)]]
        for corpus, head, rows in aso_tables(report):
            out += ["", f"ASO {corpus}: " + "  ".join(head), *["  ".join(r) for r in rows]]
        out += ["", *tests_used(report)]
    for s in report["skipped_corpora"]:
        out.append(f"skipped {s['corpus']}: {s['reason']}")
    out.append("note: " + report["caveat"])
    return "\n".join(out)


def _details(report: dict) -> list[list[str]]:
    """One row per (corpus, candidate): the McNemar numbers behind each mark."""
    out = []
    for r in report["corpora"]:
        for lab, c in r["candidates"].items():
            for t in c.get("per_seed") or [c]:  # a grid report: every seed's test on its pooled predictions
                who = f"{lab} (seed {t['seed']})" if "seed" in t else lab
                out.append([r["corpus"], who, f"{100 * c['uar_delta']:+.1f}", str(t["b"]), str(t["c"]), str(t["n"]),
                            t["method"], f"{t['statistic']:.4g}", _p(t["p_value"]), t["mark"] or "·"])
    return out


def _pct_ci(ci: dict) -> str:
    return f"[{_pct(ci['low'])}, {_pct(ci['high'])}]"


GRID_HEAD = ["corpus", "method", "runs", "UAR mean ± std [%]", "pooled UAR [%]", "95 % CI (bootstrap)"]


def grid_rows(report: dict) -> list[list[str]]:
    """Per corpus and method: runs, their UAR mean ± std, the pooled UAR (mean over seeds) and its CI."""
    out = []
    for r in report["corpora"]:
        for m, g in r["grid"].items():
            out.append([r["corpus"], m, str(len(g["runs"])), f"{_pct(g['uar_mean'])} ± {_pct(g['uar_std'])}",
                        _pct(g["pooled_uar_mean"]), _pct_ci(g["ci"])])
    return out


def aso_tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per corpus: (corpus, header, rows) of ε_min(row better than column)."""
    out = []
    for r in report["corpora"]:
        names = list(r["aso"])
        rows = [[a, *[("—" if a == b else f"{r['aso'][a][b]:.2f}") for b in names]] for a in names]
        out.append((r["corpus"], ["ε_min(row > column)", *names], rows))
    return out


def tests_used(report: dict) -> list[str]:
    """One sentence per statistic the report used (a grid report states each)."""
    t = report["test"]
    return [f"{k}: {t[k]}" for k in ("pooled", "bootstrap", "aso") if k in t]


DETAIL_HEAD = ["corpus", "candidate", "UAR delta [pp]", "b", "c", "n", "test", "statistic", "p", "mark"]


def _runs(report: dict) -> list[list[str]]:
    rows = []
    for role, r in [("baseline", report["baseline"])] + [("candidate", c) for c in report["candidates"]]:
        rows.append([role, r["label"], r["name"], r.get("mlflow_run_id") or "", r.get("run_dir") or r["source"]])
    return rows


RUN_HEAD = ["role", "label", "run", "MLflow run id", "run directory / source"]


def render_markdown(report: dict) -> str:
    def md(head, rows):
        def esc(s):
            return str(s).replace("|", "\\|")

        return "\n".join(["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head),
                          *["| " + " | ".join(map(esc, r)) + " |" for r in rows]])

    head, rows = table_rows(report)
    parts = [
        "# Significance report", "",
        f"Test-set UAR [%] at the **{report['checkpoint']}** checkpoint. Marks: McNemar's test on the paired "
        f"test predictions, p < {report['alpha']:g}: **+** the candidate makes significantly fewer errors than "
        "the baseline, **\u2212** significantly more. Chance = 1 / number of classes.", "",
        md(head, rows), "",
        f"> **Caveat.** {report['caveat']}", "",
        f"![UAR delta per corpus and candidate]({report['files']['heatmap']})", "",
        "## McNemar's test per corpus", "",
        f"b = baseline right and candidate wrong, c = baseline wrong and candidate right, n = utterances matched "
        f"by id. Exact two-sided binomial test when b + c < {report['test']['exact_below']}, continuity-corrected "
        "chi-square (1 dof) otherwise.", "",
        md(DETAIL_HEAD, _details(report)), "",
        "## Runs", "", md(RUN_HEAD, _runs(report)), "",
    ]
    if "grid" in report:
        parts[2] += (" Grid report: UAR on each seed's folds pooled (every utterance once), mean over seeds; "
                     "McNemar per seed on the pooled predictions.")
        parts += ["## Folds × seeds", "", md(GRID_HEAD, grid_rows(report)), ""]
        for corpus, head, rows in aso_tables(report):
            parts += [f"### Almost Stochastic Order: {corpus}", "", md(head, rows), ""]
        parts += ["## Tests used", "", *[f"* {line}" for line in tests_used(report)], ""]
    if report["skipped_corpora"]:
        parts += ["Corpora not in every run (left out): " +
                  "; ".join(f"{s['corpus']} ({s['reason']})" for s in report["skipped_corpora"]), ""]
    parts.append(f"Generated {report['created']}; every number is in `{report['files']['json']}`.")
    return "\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f2f2f2}
td.plus{background:#dbeafe;font-weight:bold}td.minus{background:#fde2e2;font-weight:bold}
.caveat{border-left:4px solid #e0a800;background:#fff8e1;padding:.6em 1em}img{max-width:100%}"""


def render_html(report: dict, heatmap: str | Path | None = None) -> str:
    """One HTML file with the table, caveat, details, runs and the heatmap embedded as a data URI."""
    e = html.escape
    head, rows = table_rows(report)

    def table(head, rows, cls, marks=None):
        out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
        for i, r in enumerate(rows):
            cells = []
            for j, v in enumerate(r):
                m = marks[i][j] if marks else ""
                kind = {"+": ' class="plus"', "\u2212": ' class="minus"'}.get(m, "")
                text = e(v[:-1]) + f"<sup>{e(m)}</sup>" if m else e(v)
                cells.append(f"<td{kind}>{text}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        return "".join(out) + "</tbody></table>"

    labels = [c["label"] for c in report["candidates"]]
    marks = [["", "", "", *[r["candidates"][lab]["mark"] for lab in labels]] for r in report["corpora"]]
    img = ""
    if heatmap and Path(heatmap).is_file():
        data = base64.b64encode(Path(heatmap).read_bytes()).decode("ascii")
        img = ('<h2>UAR delta (candidate \u2212 baseline)</h2>'
               f'<img alt="UAR delta heatmap" src="data:image/png;base64,{data}">')
    skipped = "".join(f"<li>{e(s['corpus'])}: {e(s['reason'])}</li>" for s in report["skipped_corpora"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Significance report</title><style>{_CSS}</style></head><body>
<h1>Significance report</h1>
<p>Test-set UAR [%] at the <b>{e(report['checkpoint'])}</b> checkpoint. Marks: McNemar's test on the paired test
predictions, p &lt; {report['alpha']:g}: <b>+</b> the candidate makes significantly fewer errors than the baseline,
<b>\u2212</b> significantly more. Chance = 1 / number of classes.</p>
{table(head, rows, "table4", marks)}
<p class="caveat"><b>Caveat.</b> {e(report['caveat'])}</p>
{img}
<h2>McNemar's test per corpus</h2>
<p>b = baseline right and candidate wrong, c = baseline wrong and candidate right, n = utterances matched by id.
Exact two-sided binomial test when b + c &lt; {report['test']['exact_below']}, continuity-corrected chi-square
(1 dof) otherwise.</p>
{table(DETAIL_HEAD, _details(report), "details")}
<h2>Runs</h2>
{table(RUN_HEAD, _runs(report), "runs")}
{_grid_html(report, table)}
{f"<p>Corpora not in every run (left out):</p><ul>{skipped}</ul>" if skipped else ""}
<p>Generated {e(report['created'])}; every number is in {e(report['files']['json'])}.</p>
</body></html>
"""


def _grid_html(report: dict, table) -> str:
    if "grid" not in report:
        return ""
    e = html.escape
    parts = ["<h2>Folds \u00d7 seeds</h2>", table(GRID_HEAD, grid_rows(report), "grid")]
    for corpus, head, rows in aso_tables(report):
        parts += [f"<h3>Almost Stochastic Order: {e(corpus)}</h3>", table(head, rows, f"aso aso-{e(corpus)}")]
    parts += ["<h2>Tests used</h2><ul>", *[f"<li>{e(line)}</li>" for line in tests_used(report)], "</ul>"]
    return "\n".join(parts)


def write_csv(report: dict, path: str | Path) -> Path:
    """One row per (corpus, candidate) with every number at full precision."""
    grid = "grid" in report
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS + (GRID_CSV_COLUMNS if grid else []))
        w.writeheader()
        for r in report["corpora"]:
            for lab, c in r["candidates"].items():
                extra = {}
                if grid:
                    g, base = r["grid"][lab], report["baseline"]["label"]
                    extra = {"candidate_uar_mean": g["uar_mean"], "candidate_uar_std": g["uar_std"],
                             "candidate_ci_low": g["ci"]["low"], "candidate_ci_high": g["ci"]["high"],
                             "seeds": g["ci"]["seeds"], "aso_eps_min_candidate_better": r["aso"][lab][base],
                             "aso_eps_min_baseline_better": r["aso"][base][lab]}
                w.writerow({**extra, "corpus": r["corpus"], "num_classes": r["num_classes"], "chance": r["chance"],
                            "n": r["n"], "baseline": report["baseline"]["label"], "baseline_uar": r["baseline_uar"],
                            "baseline_wa": r["baseline_wa"], "candidate": lab, "candidate_uar": c["uar"],
                            "candidate_wa": c["wa"], "uar_delta": c["uar_delta"], "b": c["b"], "c": c["c"],
                            "method": c["method"], "statistic": c["statistic"], "p_value": c["p_value"],
                            "alpha": report["alpha"], "significant": c["significant"], "mark": c["mark"]})
    return Path(path)
