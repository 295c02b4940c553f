"""The built-in synthetic corpora: determinism, learnability, the ``synth`` recipe, label sets.

The default set is the session's ``synth_set`` (built once for the whole suite, about 20-30 s on 2 cores; its
build time is a benchmark: ``python bench/bench_synth_build.py``); the other tests reuse it or build only
the small transfer target.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emonet_dist.corpora.manifest import Found, Skipped, read_manifest
from emonet_dist.corpora.recipes import get_recipe
from emonet_dist.corpora.synth import (
    CORPORA,
    EMOTIONS,
    TARGET,
    build_synthetic,
    make_speakers,
    recording_session,
    synth_utterance,
)

VOCABULARY = {"angry", "happy", "sad", "neutral", "fear", "disgust", "surprise", "calm", "boredom", "excited"}


@pytest.fixture
def built(synth_set):
    """The default synthetic set, ``(dir, reports, build seconds)``: the session's copy, not a second build."""
    return synth_set


def _rows(manifest_dir: Path) -> list[dict]:
    """Manifest rows without the absolute path (which names the build folder)."""
    rows = []
    for r in read_manifest(manifest_dir):
        d = {k: getattr(r, k) for k in ("id", "corpus", "label", "speaker", "duration", "partition", "extra")}
        rows.append(d)
    return rows


# [1] determinism ----------------------------------------------------------------------------------------------
def test_same_seed_same_corpus_other_seed_other_audio(built, tmp_path):
    out, _, _ = built
    again = tmp_path / "again"
    build_synthetic(again, seed=0, names=[TARGET], jobs=2)
    assert _rows(again / TARGET) == _rows(out / TARGET)
    ref = read_manifest(out / TARGET)
    for r in ref[::40]:
        a, _ = sf.read(r.path, dtype="float32")
        b, _ = sf.read(again / "raw" / r.id.split("/", 1)[0] / (r.id.split("/", 1)[1] + ".flac"), dtype="float32")
        np.testing.assert_array_equal(a, b)

    other = tmp_path / "other"
    build_synthetic(other, seed=1, names=[TARGET], jobs=2)
    rows1 = _rows(other / TARGET)
    assert [r["id"] for r in rows1] == [r["id"] for r in _rows(out / TARGET)]  # same layout ...
    assert [r["duration"] for r in rows1] != [r["duration"] for r in _rows(out / TARGET)]  # ... other audio
    r = ref[0]
    a, _ = sf.read(r.path, dtype="float32")
    b, _ = sf.read(other / "raw" / TARGET / Path(r.path).parent.name / Path(r.path).name, dtype="float32")
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_utterance_does_not_depend_on_call_order():
    spec = CORPORA[TARGET]
    spk = make_speakers(spec, 3)[1]
    session = recording_session(spec, spk, 3)
    first = synth_utterance(spec, spk, "sad", 2, 3, session)
    synth_utterance(spec, spk, "angry", 0, 3, session)  # another utterance in between changes nothing
    np.testing.assert_array_equal(first, synth_utterance(spec, spk, "sad", 2, 3))
    assert first.dtype == np.float32 and np.abs(first).max() <= 0.99
    assert 1.2 < first.size / 16000 < 4.5


# [2] learnability ---------------------------------------------------------------------------------------------
def test_each_corpus_is_learnable_from_mean_log_mel(built):
    """Linear model on mean log-mel (n_fft 512, hop 256, 64 mels), speaker-independent train -> test."""
    import torch
    import torchaudio
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out, reports, _ = built
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=256, n_mels=64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny transforms: threads only contend with the other test processes
    scores = {}
    try:
        for name in reports:
            feats, labels, parts = [], [], []
            for r in read_manifest(out / name):
                wave, sr = sf.read(r.path, dtype="float32")
                assert sr == 16000 and wave.ndim == 1
                logmel = torch.log(torch.clamp(mel(torch.from_numpy(wave)), min=1e-6))  # (64, T)
                feats.append(logmel.mean(dim=1).numpy())
                labels.append(r.label)
                parts.append(r.partition)
            x, y, p = np.stack(feats), np.array(labels), np.array(parts)
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(x[p == "train"], y[p == "train"])
            uar = recall_score(y[p == "test"], clf.predict(x[p == "test"]), average="macro")
            scores[name] = (uar, 1.0 / len(set(y)))
    finally:
        torch.set_num_threads(threads)
    for name, (uar, chance) in scores.items():
        print(f"{name}: test UAR {uar:.3f} (chance {chance:.3f}, margin {uar - chance:+.3f})")
    for name, (uar, chance) in scores.items():
        assert uar > chance + 0.20, f"{name}: UAR {uar:.3f} is not 20 points above chance {chance:.3f}"


# [4] the recipe -----------------------------------------------------------------------------------------------
def _tone(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.1 * np.sin(np.arange(4000) / 10)).astype(np.float32), 16000)
    return path


def test_recipe_parses_layout_and_skips_with_reasons(tmp_path):
    recipe = get_recipe("synth")
    root = tmp_path / "raw"
    good = [_tone(root / "f01" / "f01_angry_000.wav"), _tone(root / "f01" / "f01_pleasant_surprise_012.flac"),
            _tone(root / "m-2" / "m-2_sad_3.wav")]
    bad = {_tone(root / "f01" / "angry.wav"): "outside expected layout",
           _tone(root / "m02" / "f01_angry_001.wav"): "speaker f01 in folder m02",
           _tone(root / "f01_angry_002.wav"): "outside expected layout",
           _tone(root / "f01" / "deep" / "f01_angry_004.wav"): "outside expected layout",
           _tone(root / "f01" / "f01_angry_x1.wav"): "outside expected layout"}
    files = sorted(good + list(bad))
    items = list(recipe.scan(root, files))
    assert len(items) == len(files)  # every file is accounted for
    found = {Path(i.path).name: i for i in items if isinstance(i, Found)}
    assert set(found) == {p.name for p in good}
    assert (found["f01_pleasant_surprise_012.flac"].label, found["f01_pleasant_surprise_012.flac"].speaker) == \
        ("pleasant_surprise", "f01")
    assert found["f01_pleasant_surprise_012.flac"].extra["take"] == 12
    assert (found["m-2_sad_3.wav"].label, found["m-2_sad_3.wav"].speaker) == ("sad", "m-2")
    skipped = {Path(i.path): i.reason for i in items if isinstance(i, Skipped)}
    for path, reason in bad.items():
        assert reason in skipped[path], (path, skipped[path])

    # with the builder's metadata: labels outside the label set are skipped, speaker metadata lands in extra
    (root / "corpus.json").write_text(json.dumps({"corpus": "x", "language": "synth-a", "labels": ["angry", "sad"],
                                                  "channel": {"name": "studio"},
                                                  "speakers": {"f01": {"gender": "female", "f0_hz": 200.0}}}))
    items = {Path(i.path).name: i for i in recipe.scan(root, files)}
    assert "unknown label: pleasant_surprise" in items["f01_pleasant_surprise_012.flac"].reason
    angry = items["f01_angry_000.wav"]
    assert isinstance(angry, Found)
    assert angry.extra == {"language": "synth-a", "channel": "studio", "take": 0,
                           "gender": "female", "f0_hz": 200.0}


def test_built_corpora_parse_completely_with_metadata(built):
    out, reports, _ = built
    for name, report in reports.items():
        assert report["skipped_count"] == 0, report["skipped"][:3]
        assert report["ignored_non_audio"] == {".json": 1}
        row = read_manifest(out / name)[0]
        assert row.extra["language"] == CORPORA[name].language
        assert row.extra["gender"] in ("female", "male") and row.extra["sample_rate"] == 16000
        assert row.extra["label_std"] == row.label


# [5] the corpora differ ---------------------------------------------------------------------------------------
def test_corpora_differ_in_label_sets_and_the_target_is_small(built):
    _, reports, _ = built
    training = {n: r for n, r in reports.items() if n != TARGET}
    assert sorted(len(r["classes"]) for r in training.values()) == [2, 4, 5, 7]
    assert len({CORPORA[n].language for n in training}) == len(training)  # one language per training corpus
    assert CORPORA[TARGET].language in {CORPORA[n].language for n in training}  # the target speaks a known one
    assert len({CORPORA[n].channel for n in reports}) == len(reports)  # one channel per corpus
    for name, r in reports.items():
        assert set(r["classes"]) <= VOCABULARY <= set(EMOTIONS), name
        assert set(r["per_partition"]) == {"train", "dev", "test"}
        assert 1.2 <= r["duration_s"]["min"] and r["duration_s"]["max"] <= 4.5, (name, r["duration_s"])
    target = reports[TARGET]
    assert len(target["classes"]) == 4 and target["per_partition"]["train"] <= 100  # few training utterances
    assert max(target["per_class"].values()) <= 2 * target["speakers"]
    assert target["utterances"] < min(r["utterances"] for r in training.values())
    for name, r in training.items():
        assert 8 <= r["speakers"] <= 16 and 200 <= r["utterances"] <= 600, name
