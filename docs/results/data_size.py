"""A data-size learning curve from a grid report: pooled test UAR of each method trained on all of a cell's
training folds and on one of them (the grid's ``train_folds``, methods ``<name>_1fold``), its gain per doubling
of the training speakers, and how many more doublings each neural method would need to reach the reference
(eGeMAPS + SVM) if both kept their gain per doubling.

    python docs/results/data_size.py runs/realdata-grid/reports/<rdcurves-grid-...>/report.json

With 4 folds and ``dev: next`` a cell trains on two folds, so ``_1fold`` is half the training speakers of
``<name>`` (in every cell, on average over the cells). The extrapolation is linear in log2(speakers), the usual
shape of a learning curve over a small range, from two points: it says what the measured slopes imply, not what
more data would certainly give.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SUFFIX = "_1fold"


def curve(report: dict, reference: str = "egemaps") -> list[dict]:
    """One row per (corpus, method with a ``_1fold`` twin): pooled UAR (mean over seeds) on half and all of the
    training speakers, the gain per doubling, and for a method other than ``reference`` the doublings at which
    its line meets the reference's (``None``: the lines do not meet above the full data, because the method's
    gain per doubling is not larger than the reference's)."""
    rows = []
    for corpus in report.get("corpora", []):
        grid = corpus.get("grid", {})
        pooled = {m: g["pooled_uar_mean"] for m, g in grid.items()}
        lines = {m: (pooled[m + SUFFIX], pooled[m]) for m in pooled if m + SUFFIX in pooled}
        for method, (half, full) in sorted(lines.items()):
            gain = full - half
            row = {"corpus": corpus["corpus"], "method": method, "half": half, "full": full, "gain": gain,
                   "doublings": None}
            if method != reference and reference in lines:
                ref_half, ref_full = lines[reference]
                ref_gain = ref_full - ref_half
                gap = ref_full - full
                if gap <= 0:
                    row["doublings"] = 0.0
                elif gain > ref_gain:
                    row["doublings"] = gap / (gain - ref_gain)
            rows.append(row)
    return rows


def table(rows: list[dict], reference: str = "egemaps") -> str:
    lines = ["| corpus | method | UAR %, half the training speakers | UAR %, all | gain per doubling | "
             f"doublings to reach {reference} (x training speakers) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == reference:
            meet = ""
        elif r["doublings"] is None:
            meet = "never (gains less per doubling)"
        else:
            meet = f"{r['doublings']:.1f} (x{2 ** r['doublings']:.0f})" if r["doublings"] < 30 else "> 30"
        lines.append(f"| {r['corpus']} | {r['method']} | {100 * r['half']:.1f} | {100 * r['full']:.1f} | "
                     f"{100 * r['gain']:+.1f} | {meet} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="the grid report's report.json")
    ap.add_argument("--reference", default="egemaps", help="the method the others are extrapolated towards")
    args = ap.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read a grid report at {str(args.report)[:120]}: {str(exc)[:120]}") from None
    if not isinstance(report, dict) or report.get("kind") != "emonet-grid-report":
        raise SystemExit(f"error: {str(args.report)[:120]} is not a grid report")
    try:
        rows = curve(report, args.reference)
    except (KeyError, TypeError, AttributeError) as exc:  # a report written by something else, or edited
        raise SystemExit(f"error: {str(args.report)[:120]} is a malformed grid report (corpora[].grid[method]"
                         f".pooled_uar_mean expected): {type(exc).__name__} {str(exc)[:60]}") from None
    if not rows:
        raise SystemExit(f"error: no method of {str(args.report)[:120]} has a {SUFFIX} twin (a grid with train_folds)")
    print(table(rows, args.reference))


if __name__ == "__main__":
    main()
