"""Adapter bundles and `emonet predict`: formats, integrity checks, and inference on awkward audio."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from emonet_dist.bundles import load_bundle, save_backbone, write_bundle
from emonet_dist.cli import main
from emonet_dist.config import HeadConfig, ModelConfig, PoolingConfig
from emonet_dist.errors import EmonetError
from emonet_dist.model.build import build_model
from emonet_testkit import FP32_REORDERED, assert_close_relative, write_tone

CLASSES = ["angry", "happy", "neutral", "sad"]


def _bundle(tmp_path, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(stem_width=4, base_width=8, pooling=PoolingConfig(units=8), head=HeadConfig(hidden=8))
    model = build_model(cfg)
    model.add_corpus("toy", 4, labels=CLASSES)
    with torch.no_grad():  # make the per-corpus parts non-trivial
        for p in model.corpus_parameters("toy"):
            p.add_(torch.randn_like(p) * 0.1)
    run = tmp_path / f"run{seed}"
    sha = save_backbone(model, run / "backbone")
    write_bundle(model, "toy", run / "bundles" / "toy", {"task": "emotion", "classes": CLASSES,
                                                         "class_counts": [1, 1, 1, 1], "backbone_sha256": sha})
    return model.eval(), run


def test_bundle_round_trip_is_exact_and_small(tmp_path):
    model, run = _bundle(tmp_path)
    loaded, name, meta = load_bundle(run / "bundles" / "toy")
    x, n = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    with torch.no_grad():
        assert torch.equal(model(x, n, "toy"), loaded(x, n, "toy"))
    assert name == "toy" and meta["classes"] == CLASSES and meta["frontend"]["sample_rate"] == 16000
    bundle_bytes = sum(f.stat().st_size for f in (run / "bundles" / "toy").iterdir())
    backbone_bytes = sum(f.stat().st_size for f in (run / "backbone").iterdir())
    assert bundle_bytes < backbone_bytes


def test_tampered_bundle_and_wrong_backbone_are_refused(tmp_path):
    _, run = _bundle(tmp_path, 0)
    _, other = _bundle(tmp_path, 1)
    with pytest.raises(EmonetError, match="trained on backbone"):
        load_bundle(run / "bundles" / "toy", backbone=other / "backbone")
    st = run / "bundles" / "toy" / "corpus.safetensors"
    data = bytearray(st.read_bytes())
    data[-5] ^= 0xFF
    st.write_bytes(bytes(data))
    with pytest.raises(EmonetError, match="does not match the sha256"):
        load_bundle(run / "bundles" / "toy")


def test_no_pickle_is_loaded(tmp_path, monkeypatch):
    """Loading must never unpickle: pickle's loaders are replaced by ones that fail (a guard, not a fake)."""
    _, run = _bundle(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a bundle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_bundle(run / "bundles" / "toy")


def test_predict_handles_rates_channels_lengths_and_bad_files(tmp_path, capsys):
    _, run = _bundle(tmp_path)
    audio = tmp_path / "audio"
    write_tone(audio / "stereo44k.wav", 1.5, sr=44100, channels=2)
    write_tone(audio / "tel8k.flac", 1.0, sr=8000)
    write_tone(audio / "long60s.wav", 60.0, sr=16000)
    (audio / "corrupt.wav").write_bytes(b"RIFF....not audio at all" * 10)
    code = main(["predict", "--bundle", str(run / "bundles" / "toy"), str(audio), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 1  # one file failed; the others were still predicted
    rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(out)}
    # every file is listed: the bad one with its reason instead of a prediction
    assert set(rows) == {"stereo44k.wav", "tel8k.flac", "long60s.wav", "corrupt.wav"}
    assert rows.pop("corrupt.wav")["error"].startswith("not decodable audio")
    assert abs(rows["long60s.wav"]["seconds"] - 60.0) < 0.01
    for r in rows.values():
        assert r["label"] in CLASSES and abs(sum(r["probs"].values()) - 1) < 1e-5
        assert r["arousal"] in ("low", "high") and abs(sum(r["valence_probs"].values()) - 1) < 1e-5
    assert "corrupt.wav: not decodable audio" in err and "1 file(s) could not be read" in err
    assert main(["predict", "--bundle", str(run / "bundles" / "toy"), str(audio / "tel8k.flac")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["file", "label", "confidence"] and "tel8k.flac" in table[1]


def test_long_files_average_chunk_posteriors(tmp_path):
    from emonet_dist.predict import predict_wave

    model, _ = _bundle(tmp_path)
    wave = (np.random.default_rng(0).standard_normal(16000 * 25) * 0.05).astype(np.float32)
    whole = predict_wave(model, "toy", wave, 16000 * 10, "cpu")
    parts = [predict_wave(model, "toy", wave[s:s + 16000 * 10], 16000 * 10, "cpu") for s in (0, 160000)]
    tail = predict_wave(model, "toy", wave[320000:], 16000 * 10, "cpu")
    expected = (parts[0] * 10 + parts[1] * 10 + tail * 5) / 25
    # chunk posteriors of the same chunks in another batch: rounding only; a distribution sums to 1 within fp32
    assert_close_relative(whole, expected, FP32_REORDERED, "chunk-averaged posteriors")
    assert abs(whole.sum() - 1) < 1e-5
