"""docs/results/data_size.py, the command docs/results.md documents: a data-size learning curve from a grid report
(methods on half and all of the training speakers) and where each neural line meets eGeMAPS's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("data_size", ROOT / "docs" / "results" / "data_size.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _report(pooled: dict[str, dict[str, float]]) -> dict:
    return {"kind": "emonet-grid-report", "grid": {},
            "corpora": [{"corpus": c, "grid": {m: {"pooled_uar_mean": v} for m, v in methods.items()}}
                        for c, methods in pooled.items()]}


def test_the_neural_line_meets_the_reference_where_the_slopes_say(tmp_path, capsys):
    report = _report({
        # scratch gains 0.10 per doubling, eGeMAPS 0.02: the 0.16 gap closes in 0.16 / 0.08 = 2 doublings (x4)
        "a": {"scratch": 0.30, "scratch_1fold": 0.20, "egemaps": 0.46, "egemaps_1fold": 0.44},
        # scratch gains less than eGeMAPS: the lines only part
        "b": {"scratch": 0.30, "scratch_1fold": 0.29, "egemaps": 0.50, "egemaps_1fold": 0.40},
        # already above: 0 doublings; a method without a _1fold twin is not a line
        "c": {"scratch": 0.60, "scratch_1fold": 0.50, "egemaps": 0.55, "egemaps_1fold": 0.50, "all": 0.7}})
    mod = _module()
    rows = {(r["corpus"], r["method"]): r for r in mod.curve(report)}
    assert set(rows) == {(c, m) for c in "abc" for m in ("scratch", "egemaps")}
    assert rows[("a", "scratch")]["doublings"] == pytest.approx(2.0)
    assert rows[("a", "scratch")]["gain"] == pytest.approx(0.10)
    assert rows[("b", "scratch")]["doublings"] is None and rows[("c", "scratch")]["doublings"] == 0.0
    assert rows[("a", "egemaps")]["doublings"] is None  # the reference itself
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    mod.main([str(path)])
    printed = capsys.readouterr().out
    assert "| a | scratch | 20.0 | 30.0 | +10.0 | 2.0 (x4) |" in printed
    assert "| b | scratch | 29.0 | 30.0 | +1.0 | never (gains less per doubling) |" in printed


def test_a_file_that_is_not_a_grid_report_with_train_folds_is_refused(tmp_path):
    mod = _module()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read a grid report"):
        mod.main([str(bad)])
    bad.write_text(json.dumps({"kind": "emonet-report"}))
    with pytest.raises(SystemExit, match="is not a grid report"):
        mod.main([str(bad)])
    bad.write_text(json.dumps(_report({"a": {"scratch": 0.3, "egemaps": 0.4}})))
    with pytest.raises(SystemExit, match="no method .* has a _1fold twin"):
        mod.main([str(bad)])
    bad.write_text(json.dumps({"kind": "emonet-grid-report", "corpora": [{"corpus": "a", "grid": {"x": 1}}]}))
    with pytest.raises(SystemExit, match="malformed grid report"):
        mod.main([str(bad)])
