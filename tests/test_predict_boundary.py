"""The `emonet predict` and adapter-bundle boundary (issue 14, rows 4, 6, 13).

Row 4: one bad file (too short for one STFT window, empty, corrupt) costs no other file its result, and
``--chunk-seconds`` is validated. Row 6: a bundle is sealed (bundle.json itself, corpus files, weights) and
checked against its weights; an unreachable MLflow store fails fast; downloads are temporary. Row 13: a long
file is streamed: the model sees a bounded batch, the decoder a bounded block (the benchmark
``bench/bench_predict_memory.py`` measures the RSS).
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from emonet_dist.bundles import load_bundle, save_backbone, write_bundle
from emonet_dist.cli import main
from emonet_dist.config import HeadConfig, ModelConfig, PoolingConfig
from emonet_dist.errors import EmonetError
from emonet_dist.model.build import build_model
from emonet_testkit import FP32_REORDERED, assert_close_relative, free_port, write_tone

CLASSES = ["angry", "happy", "neutral", "sad"]


def _bundle(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(stem_width=4, base_width=8, pooling=PoolingConfig(units=8), head=HeadConfig(hidden=8))
    model = build_model(cfg)
    model.add_corpus("toy", 4, labels=CLASSES)
    with torch.no_grad():  # make the per-corpus parts non-trivial, so a swapped label changes the answer
        for p in model.corpus_parameters("toy"):
            p.add_(torch.randn_like(p) * 0.1)
    run = tmp_path / "run"
    sha = save_backbone(model, run / "backbone")
    write_bundle(model, "toy", run / "bundles" / "toy", {"task": "emotion", "classes": CLASSES,
                                                         "class_counts": [1, 1, 1, 1], "backbone_sha256": sha})
    return model.eval(), run / "bundles" / "toy"


def _edit(bundle, change):
    """Rewrite bundle.json with ``change(meta)`` applied, keeping its (now stale) seal."""
    meta = json.loads((bundle / "bundle.json").read_text())
    change(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta, indent=2))


def _reseal(bundle, change):
    """Apply ``change`` and seal again, as a careful forger (or a buggy exporter) would."""
    try:
        from emonet_dist.bundles import seal_bundle
    except ImportError:  # the code before the seal (these tests also run against it): nothing to re-seal
        return _edit(bundle, change)
    meta = json.loads((bundle / "bundle.json").read_text())
    change(meta)
    seal_bundle(bundle, meta)


def _cli(argv, capsys):
    """``main(argv)`` -> (exit code, stdout, stderr); argparse's own exits count as exit codes."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


class CountingModel(nn.Module):
    """The real model, recording the batch shape of every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, waves, lengths, corpus):
        self.shapes.append(tuple(waves.shape))
        return self.inner(waves, lengths, corpus)


# [row 4] one bad file, chunk validation, empty input -----------------------------------------------------------
def test_short_empty_and_corrupt_files_cost_no_other_file_its_result(tmp_path, capsys):
    _, bundle = _bundle(tmp_path)
    audio = tmp_path / "audio"
    write_tone(audio / "good.wav", 1.0)
    write_tone(audio / "good8k.flac", 0.5, sr=8000)
    sf.write(str(audio / "s256.wav"), np.full(256, 0.1, np.float32), 16000)  # the case: a traceback
    sf.write(str(audio / "s100.wav"), np.full(100, 0.1, np.float32), 16000)
    sf.write(str(audio / "s400.wav"), np.full(400, 0.1, np.float32), 16000)  # under one window (512)
    (audio / "empty.wav").write_bytes(b"")
    (audio / "corrupt.flac").write_bytes(b"fLaC" + b"\x00" * 50)
    code, out, err = _cli(["predict", "--bundle", str(bundle), str(audio), "--format", "json"], capsys)
    assert code == 1, err
    rows = {r["file"].rsplit("/", 1)[1]: r for r in json.loads(out)}
    assert set(rows) == {"good.wav", "good8k.flac", "s256.wav", "s100.wav", "s400.wav", "empty.wav", "corrupt.flac"}
    for name in ("good.wav", "good8k.flac"):
        assert rows[name]["label"] in CLASSES and "error" not in rows[name]
    for name in ("s256.wav", "s100.wav", "s400.wav"):
        assert rows[name]["error"].startswith("too short"), rows[name]
    assert rows["empty.wav"]["error"] == "empty file (0 bytes)"
    assert "error" in rows["corrupt.flac"]
    assert "5 file(s) could not be read; 2 predicted" in err and "s256.wav: too short" in err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "0.01"])
def test_chunk_seconds_is_validated_in_one_line(tmp_path, capsys, value):
    _, bundle = _bundle(tmp_path)
    wav = write_tone(tmp_path / "a.wav", 1.0)
    code, out, err = _cli(["predict", "--bundle", str(bundle), str(wav), f"--chunk-seconds={value}"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "chunk-seconds" in err and "Traceback" not in err


def test_an_input_without_audio_is_an_error(tmp_path, capsys):
    _, bundle = _bundle(tmp_path)
    (tmp_path / "empty").mkdir()
    code, out, err = _cli(["predict", "--bundle", str(bundle), str(tmp_path / "empty")], capsys)
    assert code == 2 and "no audio files" in err and out == ""


# [row 6] sealed bundles ----------------------------------------------------------------------------------------
def test_swapped_class_names_are_refused(tmp_path):
    _, bundle = _bundle(tmp_path)
    _edit(bundle, lambda m: m.update(classes=["sad", "happy", "neutral", "angry"]))
    with pytest.raises(EmonetError, match="edited after it was sealed"):
        load_bundle(bundle)


def test_a_bundle_without_its_seal_is_refused_and_its_weights_stay_covered(tmp_path):
    _, bundle = _bundle(tmp_path)
    _edit(bundle, lambda m: m.pop("files_sha256"))
    with pytest.raises(EmonetError, match="is not sealed"):
        load_bundle(bundle)
    _, bundle = _bundle(tmp_path / "b")
    _edit(bundle, lambda m: m["files_sha256"].pop("bundle.json", None))  # a bundle sealed the old way
    with pytest.raises(EmonetError, match="is not sealed"):
        load_bundle(bundle)
    _, bundle = _bundle(tmp_path / "c")
    st = bundle / "corpus.safetensors"
    data = bytearray(st.read_bytes())
    data[-5] ^= 0xFF
    st.write_bytes(bytes(data))
    with pytest.raises(EmonetError, match="corpus.safetensors does not match"):
        load_bundle(bundle)


@pytest.mark.parametrize("change, match", [
    (lambda m: m.update(classes=["sad", "happy", "neutral", "angry"]), "differ from the weights' labels"),
    (lambda m: m.update(classes=CLASSES[:3]), "differ from the weights' labels"),
    (lambda m: m["frontend"].update(sample_rate=8000, f_max=4000.0), "frontend or model config differs"),
    (lambda m: m.update(corpus="other"), "bundle.json is for corpus 'other'"),
])
def test_resealed_bundles_are_checked_against_their_weights(tmp_path, change, match):
    _, bundle = _bundle(tmp_path)
    _reseal(bundle, change)
    with pytest.raises(EmonetError, match=match):
        load_bundle(bundle)


def test_bundle_export_writes_sealed_bundles_even_from_a_run_sealed_the_old_way(tmp_path):
    from emonet_dist.bundles import export_bundle

    model, src = _bundle(tmp_path)
    _edit(src, lambda m: m["files_sha256"].pop("bundle.json", None))  # a run directory written before the seal
    out = export_bundle(src.parent.parent, "toy", tmp_path / "exported")
    assert set(json.loads((out / "bundle.json").read_text())["files_sha256"]) == {
        "corpus.safetensors", "corpus.json", "bundle.json"}
    loaded, name, meta = load_bundle(out)
    x, n = torch.randn(1, 8000) * 0.1, torch.tensor([8000])
    with torch.no_grad():
        assert name == "toy" and meta["classes"] == CLASSES and torch.equal(model(x, n, "toy"), loaded(x, n, "toy"))
    st = src / "corpus.safetensors"  # the run's own files are verified before they are re-sealed
    st.write_bytes(st.read_bytes()[:-1] + bytes([st.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(EmonetError, match="corpus.safetensors does not match"):
        export_bundle(src.parent.parent, "toy", tmp_path / "again")


def _without_local_backbone(bundle, tracking_uri, run_id="0123456789abcdef"):
    import shutil

    shutil.rmtree(bundle.parent.parent / "backbone")
    _reseal(bundle, lambda m: m.update(backbone_path=None, backbone_uri=f"runs:/{run_id}/backbone",
                                       tracking_uri=tracking_uri))


def _finishes_within(seconds, fn):
    """Run ``fn`` in a daemon thread; the exception it raised (or None), or fail if it is still running."""
    box = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["exc"] = exc

    t0 = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return box.get("exc"), time.monotonic() - t0


def test_a_backbone_in_an_unreachable_tracking_store_fails_within_30_s(tmp_path):
    _, bundle = _bundle(tmp_path)
    _without_local_backbone(bundle, f"http://127.0.0.1:{free_port()}")  # closed port
    exc, _ = _finishes_within(30, lambda: load_bundle(bundle))
    assert isinstance(exc, EmonetError) and "does not answer" in str(exc), exc
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _reseal(bundle, lambda m: m.update(tracking_uri=f"http://127.0.0.1:{silent.getsockname()[1]}"))
        exc, took = _finishes_within(30, lambda: load_bundle(bundle))
    assert isinstance(exc, EmonetError) and "does not answer" in str(exc), (exc, took)


def test_predict_with_a_bundle_in_an_unreachable_tracking_store_fails_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")  # main sets it from --tracking-uri; restored afterwards
    wav = write_tone(tmp_path / "a.wav", 0.5)
    uri = f"http://127.0.0.1:{free_port()}"
    box = {}
    exc, _ = _finishes_within(30, lambda: box.update(code=main(
        ["predict", "--bundle", "models:/emonet-x/1", "--tracking-uri", uri, str(wav)])))
    err = capsys.readouterr().err
    assert exc is None and box["code"] == 2, (exc, err)
    assert err.startswith("error: MLflow tracking server http://127.0.0.1:") and len(err.splitlines()) == 1


def test_a_backbone_from_mlflow_loads_and_its_download_is_removed(tmp_path, monkeypatch):
    import mlflow

    model, bundle = _bundle(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("b", artifact_location=(tmp_path / "art").as_uri()))
    client.log_artifacts(run.info.run_id, str(bundle.parent.parent / "backbone"), "backbone")
    _without_local_backbone(bundle, uri, run.info.run_id)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    loaded, _, _ = load_bundle(bundle)
    x, n = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    with torch.no_grad():
        assert torch.equal(model(x, n, "toy"), loaded(x, n, "toy"))
    assert list(scratch.iterdir()) == []


# [row 13] bounded memory -----------------------------------------------------------------------------------------
def test_a_long_file_is_streamed_in_bounded_batches(tmp_path):
    from emonet_dist import predict

    bound = getattr(predict, "BATCH_CHUNKS", 8)  # the documented bound (the old code had none)
    model, bundle = _bundle(tmp_path)
    meta = json.loads((bundle / "bundle.json").read_text())
    seconds, chunk_s = 64, 0.5
    path = write_tone(tmp_path / "long.wav", seconds)
    counting = CountingModel(model)
    tracemalloc.start()  # numpy's buffers are traced: the decoded audio, blocks, chunk buffers
    try:
        results, failed = predict.predict_files(counting, "toy", meta, [path], chunk_seconds=chunk_s)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert failed == [] and abs(results[0]["seconds"] - seconds) < 1e-3
    chunk = int(chunk_s * 16000)
    assert max(b for b, _ in counting.shapes) <= bound
    assert len(counting.shapes) == seconds / chunk_s / bound
    assert max(w for _, w in counting.shapes) <= chunk + chunk // 4
    file_bytes = seconds * 16000 * 4  # the whole file as float32: what decoding it at once holds
    assert peak < file_bytes / 3, f"numpy peak {peak / 1e6:.1f} MB for a {file_bytes / 1e6:.1f} MB file"


def test_streamed_prediction_equals_the_one_batch_result(tmp_path):
    from emonet_dist.audio import load_mono
    from emonet_dist.predict import predict_files, predict_wave

    model, bundle = _bundle(tmp_path)
    meta = json.loads((bundle / "bundle.json").read_text())
    path = write_tone(tmp_path / "stereo.wav", 12.3, sr=44100, channels=2)  # resampled in blocks
    results, _ = predict_files(model, "toy", meta, [path], chunk_seconds=1.0)
    # today's computation: the whole file decoded and resampled at once, every chunk in one batch
    whole = predict_wave(model, "toy", load_mono(path, 16000), 16000, "cpu", batch_chunks=10**6)
    got = np.array([results[0]["probs"][c] for c in CLASSES])
    assert_close_relative(got, whole, FP32_REORDERED, "streamed vs one batch")  # other batch shapes: rounding only


def test_streamed_resampling_equals_whole_file_resampling(tmp_path):
    from emonet_dist.audio import load_mono, stream_mono

    rng = np.random.default_rng(0)
    for sr, channels, frames in ((44100, 2, 44100 * 3 + 17), (8000, 1, 8000 * 2 + 3), (22050, 1, 1000)):
        path = tmp_path / f"x{sr}.wav"
        sf.write(str(path), (rng.standard_normal((frames, channels)) * 0.1).astype(np.float32), sr, subtype="FLOAT")
        whole = load_mono(path, 16000)
        streamed = np.concatenate(list(stream_mono(path, 16000, block_frames=4999)))
        assert len(streamed) == len(whole)  # block-wise convolution sums in another order: rounding only
        assert_close_relative(streamed, whole, FP32_REORDERED, f"{sr} Hz resampled in blocks")


def test_a_lone_short_tail_in_the_last_batch_is_predicted(tmp_path):
    from emonet_dist.predict import BATCH_CHUNKS, predict_wave

    model, _ = _bundle(tmp_path)
    chunk = 640  # 40 ms; the last batch holds only a 200-sample tail (>= chunk // 4, so it stays on its own)
    wave = (np.random.default_rng(1).standard_normal(BATCH_CHUNKS * chunk + 200) * 0.05).astype(np.float32)
    counting = CountingModel(model)
    streamed = predict_wave(counting, "toy", wave, chunk, "cpu")
    assert [b for b, _ in counting.shapes] == [BATCH_CHUNKS, 1]
    whole = predict_wave(model, "toy", wave, chunk, "cpu", batch_chunks=10**6)
    assert_close_relative(streamed, whole, FP32_REORDERED, "a lone short tail")
