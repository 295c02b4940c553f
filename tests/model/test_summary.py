"""Parameter accounting (acceptance 1) and the ``emonet model summary`` text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from emonet_dist.config import ModelConfig
from emonet_dist.model.build import build_model
from emonet_dist.model.summary import parameter_counts, summarize


def test_paper_widths_give_about_3m_parameters_and_at_most_3_7x_for_26_corpora():
    """Counting only (no forward pass) at the paper's widths; the arithmetic is in summary.py's docstring."""
    model = build_model(ModelConfig(), {"iemocap": 4})
    counts = parameter_counts(model, "iemocap")
    shared, own = counts["shared"]["total"], counts["per_corpus"]["total"]
    total = sum(p.numel() for p in model.parameters())
    assert shared + own == total == 3_089_508
    assert 2.8e6 <= total <= 3.2e6
    assert counts["shared"] == {"convs": 2_709_792, "pooling": 66_048, "total": 2_775_840}
    assert counts["per_corpus"] == {"adapters": 301_088, "batchnorms": 4_160, "head": 8_420, "total": 313_668}
    assert 0.28e6 <= own <= 0.35e6
    for i in range(25):
        model.add_corpus(f"c{i}", 4)
    ratio = sum(p.numel() for p in model.parameters()) / total
    assert ratio == pytest.approx((shared + 26 * own) / total)
    assert ratio <= 3.7 and ratio == pytest.approx(3.538, abs=1e-3)


def test_summary_text_and_dict(tiny_cfg):
    text, data = summarize(tiny_cfg(), corpora=3, seconds=1.0)
    p = data["parameters"]
    assert p["one_corpus"] == p["shared"]["total"] + p["per_corpus"]["total"]
    assert p["n_corpora"] == p["shared"]["total"] + 3 * p["per_corpus"]["total"]
    assert p["ratio_n_vs_1"] == pytest.approx(p["n_corpora"] / p["one_corpus"])
    f = data["flops_per_second"]
    assert 0 < f["forward"] < f["train_step"] < 4 * f["forward"]
    assert data["shapes"]["log-mel"] == (1, 1, 64, 63) and data["shapes"]["stack3"] == (1, 32, 8, 8)
    assert data["shapes"]["logits"] == (1, 4)
    for needle in ["shared", "per corpus", "3 corpora", "26 corpora", "forward", "train step", "stack2"]:
        assert needle in text
    assert f"{p['per_corpus']['total']:,}" in text


def test_flops_benchmark_script_runs(capsys):
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_model_flops.py"
    spec = importlib.util.spec_from_file_location("bench_model_flops", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke-test", "--variants", "emonet,plain"]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "emonet" in out and "plain" in out
