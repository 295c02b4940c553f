"""The VoxCeleb recipe on a small tree in the official layout, and speaker pretraining on it.

Fast tier: the identification split (same speakers in every partition, accepted by design and recorded in the
report, sharded without an override), the verification split (speaker-independent), and the refusals.
Slow tier: a tiny Ray run trains ``task: speaker`` through the resampled stream, then an emotion corpus gets
adapters on top of it with ``transfer_config``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emonet_dist.config import PrepareConfig, ShardConfig
from emonet_dist.corpora.manifest import read_manifest
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_dist.data.shards import shard_corpus
from emonet_dist.errors import CorpusError
from emonet_testkit import uar_from_predictions, write_tone

SPEAKERS = ("id10001", "id10002", "id10003", "id10004", "id10005", "id10006")
CFG = PrepareConfig(jobs=1)


def make_voxceleb(root: Path, speakers=SPEAKERS, videos: int = 3, per_video: int = 3, iden: bool = True,
                  veri: tuple[str, ...] = ()) -> Path:
    """``wav/idNNNNN/<video>/NNNNN.wav`` tones (one pitch per speaker); video 1-2 train, the last video split
    between dev and test in ``iden_split.txt``; an unlisted file, a stray file, and optionally ``veri_test.txt``."""
    lines = []
    for si, spk in enumerate(speakers):
        for v in range(videos):
            video = f"vid{si}{v}x_Ab-{v}"  # YouTube ids contain '-' and '_'
            for u in range(per_video):
                rel = f"{spk}/{video}/{u + 1:05d}.wav"
                write_tone(root / "wav" / rel, seconds=0.6 + 0.1 * u, freq=140.0 * (1 + 0.35 * si) + 5 * u,
                           seed=si * 100 + v * 10 + u)
                code = "1" if v < videos - 1 else ("2" if u == 0 else "3")
                lines.append(f"{code} {rel}")
    write_tone(root / "wav" / speakers[0] / "unlisted" / "00001.wav", seconds=0.3)
    write_tone(root / "wav" / "notes" / "intro.wav", seconds=0.3)  # outside the layout
    if iden:
        (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    if veri:
        trials = [f"{int(a == b)} {a}/vid00x_Ab-0/00001.wav {b}/vid00x_Ab-0/00002.wav" for a in veri for b in veri]
        (root / "veri_test.txt").write_text("\n".join(trials) + "\n")
    return root


def test_identification_split_shares_speakers_by_design_and_shards(tmp_path):
    raw = make_voxceleb(tmp_path / "vox1")
    report = prepare_corpus("voxceleb", raw, tmp_path / "prep", CFG)
    rows = read_manifest(tmp_path / "prep")
    assert report["split"] == "official" and len(rows) == 6 * 9
    assert {r.partition for r in rows} == {"train", "dev", "test"}
    for part in ("train", "dev", "test"):  # every speaker in every partition: what speaker ID needs
        assert {r.speaker for r in rows if r.partition == part} == set(SPEAKERS)
    assert all(r.label == r.speaker and r.extra["video"] for r in rows)
    assert rows[0].id.startswith("voxceleb/wav/id10001/")
    assert report["speaker_independent"] is False and report["prepare"]["allow_speaker_overlap"] is True
    written = json.loads((tmp_path / "prep" / "report.json").read_text())
    assert written["speaker_independent"] is False
    reasons = {Path(s["path"]).parent.name: s["reason"] for s in report["skipped"]}
    assert reasons["unlisted"].startswith("excluded by iden_split.txt")
    assert reasons["notes"].startswith("outside expected layout")
    # the recorded exemption is what `emonet shard` honours: no override needed
    index = shard_corpus(tmp_path / "prep", tmp_path / "shards", ShardConfig(samples_per_shard=8, jobs=1))
    assert index["speakers"] == list(SPEAKERS) and index["partitions"]["train"]["utterances"] == 36


def test_other_splits_of_voxceleb_stay_checked(tmp_path):
    raw = make_voxceleb(tmp_path / "vox1")
    # the exemption covers only the official split: a speaker split is disjoint as always
    report = prepare_corpus("voxceleb", raw, tmp_path / "spk", PrepareConfig(jobs=1, split="speaker"))
    assert report["speaker_independent"] is True and report["prepare"]["allow_speaker_overlap"] is False
    # and other recipes' official splits are still refused when they share speakers
    from emonet_dist.errors import SpeakerLeakageError

    (tmp_path / "list.csv").write_text("path,label,speaker,partition\n" + "".join(
        f"vox1/wav/id10001/vid00x_Ab-0/0000{i}.wav,angry,s1,{p}\n" for i, p in ((1, "train"), (2, "test"))))
    with pytest.raises(SpeakerLeakageError):
        prepare_corpus("csv", tmp_path / "list.csv", tmp_path / "csv", CFG, name="leaky")


def test_verification_list_gives_a_speaker_independent_split(tmp_path):
    raw = make_voxceleb(tmp_path / "vox1", iden=False, veri=("id10005", "id10006"))
    report = prepare_corpus("voxceleb", raw, tmp_path / "prep", CFG)
    rows = read_manifest(tmp_path / "prep")
    by_part = {p: {r.speaker for r in rows if r.partition == p} for p in ("train", "dev", "test")}
    assert by_part["test"] == {"id10005", "id10006"}
    assert len(by_part["dev"]) == 1 and not by_part["dev"] & by_part["train"]
    assert report["speaker_independent"] is True
    assert len(rows) == 6 * 9 + 1  # without iden_split.txt nothing is excluded


def test_without_a_list_file_the_official_split_is_refused_with_the_way_out(tmp_path):
    raw = make_voxceleb(tmp_path / "vox1", iden=False)
    with pytest.raises(CorpusError, match="--split speaker"):
        prepare_corpus("voxceleb", raw, tmp_path / "prep", CFG)
    (raw / "iden_split.txt").write_text("7 id10001/x/00001.wav\n")
    with pytest.raises(CorpusError, match="unknown partition code"):
        prepare_corpus("voxceleb", raw, tmp_path / "prep", CFG)


# ---------------------------------------------------------------------------------------------------------------
# slow: speaker pretraining through the resampled stream, then an emotion adapter transfer
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_speaker_pretraining_resampled_then_emotion_adapter_transfer(tmp_path, tiny_shards, ray_local):
    from safetensors.torch import load_file

    from emonet_dist.config import Config
    from emonet_dist.train.launch import run_training
    from emonet_dist.train.transfer import transfer_config

    raw = make_voxceleb(tmp_path / "vox1")
    prepare_corpus("voxceleb", raw, tmp_path / "prep", CFG)
    shards = tmp_path / "shards"
    shard_corpus(tmp_path / "prep", shards, ShardConfig(samples_per_shard=8, jobs=1))
    cfg = Config().override(
        f"output_dir={tmp_path / 'runs'}", f"data.shards={shards}", "name=vox-speaker",
        "data.corpora=[{name: voxceleb, task: speaker, epoch_mode: resampled}]", "data.batch_size=6",
        "data.max_seconds=0.5", "data.num_workers=0", "data.shuffle_window=8", "model.stem_width=4",
        "model.base_width=8", "model.pooling.units=8", "model.head.speaker_hidden=16", "optim.stages=1",
        "train.steps_per_stage=6", "train.eval_every=3", "train.checkpoint_every=6", "ray.num_workers=2",
        "tracking.enabled=false")
    pre = run_training(cfg)
    assert pre.metrics["step"] == 6
    # scored on the same speakers (iden split): the logged test UAR is the one its predictions give
    assert "dev_uar/voxceleb-speaker" in pre.metrics
    assert pre.metrics["test_uar_final/voxceleb-speaker"] == pytest.approx(
        uar_from_predictions(pre.dir / "predictions" / "final" / "voxceleb-speaker.csv"), rel=1e-12)
    model = load_file(str(pre.dir / "final" / "model.safetensors"))
    assert any(".voxceleb:speaker." in k for k in model)  # its own adapters, BNs and speaker head

    tcfg = transfer_config(str(pre.dir), "tiny", "adapters",
                           [f"data.shards={tiny_shards}", "train.patience=1", "train.max_epochs=1",
                            "data.batch_size=8", f"output_dir={tmp_path / 'runs'}"])
    assert tcfg.train.init_from and tcfg.data.corpora[0].task == "emotion"
    res = run_training(tcfg)
    after = load_file(str(res.dir / "final" / "model.safetensors"))
    shared = [k for k in model if "voxceleb" not in k and "tiny" not in k]
    assert shared and all(bool((after[k] == model[k]).all()) for k in shared)  # backbone frozen: adapters only
    assert any("tiny" in k for k in after) and "test_uar_final/tiny" in res.metrics
