"""Every corpus recipe against a tiny synthetic tree in that corpus's official layout.

Each tree mixes .wav and .flac, has enough speakers for the default split, and holds at least one file with an
unknown label code and one outside the layout; the test runs the real ``prepare_corpus`` and reads the manifest
and report back.
"""

from __future__ import annotations

import importlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

from emonet_dist.config import PrepareConfig
from emonet_dist.corpora.labels import harmonise
from emonet_dist.corpora.manifest import read_manifest
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_dist.errors import SpeakerLeakageError
from emonet_testkit import write_tone

CFG = PrepareConfig(jobs=1)
STANDARD = {"angry", "happy", "sad", "fear", "disgust", "surprise", "neutral", "calm", "boredom", "excited",
            "frustrated", "contempt"}


def make_tree(root: Path, rels: list[str]) -> dict[str, Path]:
    """Write a 0.2 s tone for each relative path given without extension, alternating .wav and .flac.

    Returns ``{rel: absolute path written}``.
    """
    out = {}
    for i, rel in enumerate(rels):
        out[rel] = write_tone(root / f"{rel}{'.flac' if i % 2 else '.wav'}", seconds=0.2, sr=8000, seed=i,
                              freq=200.0 + 10 * i)
    return out


def run(recipe: str, root: Path, out: Path, cfg: PrepareConfig = CFG) -> tuple[dict, dict]:
    """Prepare ``root``; returns the report (as written to disk) and ``{id without corpus prefix: row}``."""
    prepare_corpus(recipe, root, out, cfg)
    report = json.loads((out / "report.json").read_text())
    rows = {r.id.split("/", 1)[1]: r for r in read_manifest(out)}
    # The recipe itself must account for every audio file; the core's catch-all reason means it did not.
    assert not [s for s in report["skipped"] if s["reason"].startswith("not matched by")]
    assert report["utterances"] == len(rows)
    return report, rows


def reasons(report: dict) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in report["skipped"]}


def assert_speaker_disjoint(rows: dict) -> dict[str, set[str]]:
    parts = defaultdict(set)
    for r in rows.values():
        parts[r.speaker].add(r.partition)
    assert all(len(p) == 1 for p in parts.values()), dict(parts)
    return parts


@pytest.mark.parametrize("module, table", [
    ("emodb", "EMOTIONS"), ("casia", "EMOTIONS"), ("iemocap", "FOUR_CLASS"), ("cremad", "EMOTIONS"),
    ("tess", "EMOTIONS"), ("savee", "EMOTIONS"), ("ravdess", "EMOTIONS"), ("emovo", "EMOTIONS"),
    ("urdu", "EMOTIONS")])
def test_every_recipe_label_harmonises(module, table):
    codes = getattr(importlib.import_module(f"emonet_dist.corpora.recipes.{module}"), table)
    labels = codes.values() if isinstance(codes, dict) else codes
    assert {harmonise(lab) for lab in labels} <= STANDARD


def test_emodb(tmp_path):
    root = tmp_path / "emodb"
    files = make_tree(root, [
        "wav/03a01Fa", "wav/03a01Wa", "wav/03b10Nc", "wav/08a02Tb", "wav/08b01La", "wav/09a04Ea", "wav/09a05Aa",
        "wav/10a07Fa", "wav/10b02Wa", "wav/16b03Nb",
        "wav/03a01Xa",  # unknown emotion letter
        "wav/05a01Fa",  # not an EmoDB speaker
        "silb/03a01Fa",  # right name, wrong folder
        "wav/notes"])
    report, rows = run("emodb", root, tmp_path / "out")
    assert len(rows) == 10
    r = rows["wav/03a01Fa"]
    assert (r.label, r.speaker, r.extra["label_std"]) == ("happiness", "03", "happy")
    assert {k: r.extra[k] for k in ("gender", "age", "text_id", "version")} == {
        "gender": "male", "age": 31, "text_id": "a01", "version": "a"}
    assert rows["wav/08b01La"].label == "boredom" and rows["wav/08b01La"].extra["gender"] == "female"
    assert rows["wav/09a05Aa"].label == "fear" and rows["wav/16b03Nb"].extra["version"] == "b"
    why = reasons(report)
    assert why[str(files["wav/03a01Xa"])].startswith("unknown label code: emotion letter 'X'")
    assert why[str(files["wav/05a01Fa"])].startswith("outside expected layout: speaker 05")
    assert why[str(files["silb/03a01Fa"])].startswith("outside expected layout")
    assert why[str(files["wav/notes"])].startswith("outside expected layout")
    assert set(assert_speaker_disjoint(rows)) == {"03", "08", "09", "10", "16"}
    assert {r.partition for r in rows.values()} == {"train", "dev", "test"}


def test_casia(tmp_path):
    root = tmp_path / "casia"
    files = make_tree(root, [
        "liuchanhg/angry/201", "liuchanhg/sad/202", "wangzhe/happy/201", "wangzhe/fear/203",
        "zhaoquanyin/neutral/201", "zhaoquanyin/surprise/204", "zhaozuoxiang/angry/205", "ZhaoZuoxiang/sad/206",
        "wangzhe/bored/201",  # unknown emotion folder
        "lisi/angry/201",  # not a CASIA speaker
        "wangzhe/201"])  # no emotion folder
    report, rows = run("casia", root, tmp_path / "out")
    assert len(rows) == 8
    r = rows["wangzhe/happy/201"]
    assert (r.label, r.speaker, r.extra["gender"], r.extra["text_id"]) == ("happy", "wangzhe", "male", 201)
    assert rows["zhaozuoxiang/angry/205"].speaker == "ZhaoZuoxiang"  # folder case normalised to the release's
    assert rows["zhaoquanyin/surprise/204"].extra["label_std"] == "surprise"
    why = reasons(report)
    assert why[str(files["wangzhe/bored/201"])].startswith("unknown label code: emotion folder 'bored'")
    assert why[str(files["lisi/angry/201"])].startswith("outside expected layout: folder 'lisi'")
    assert why[str(files["wangzhe/201"])].startswith("outside expected layout")
    assert len(assert_speaker_disjoint(rows)) == 4


def _iemocap_session(root: Path, n: int) -> list[str]:
    """Audio of one session (relative paths, no extension) and its EmoEvaluation files."""
    s = f"Ses0{n}"
    impro, script = f"{s}F_impro01", f"{s}M_script01_1"
    lines = {
        impro: [(f"{impro}_F000", "neu"), (f"{impro}_M000", "ang"), (f"{impro}_F001", "exc"),
                (f"{impro}_M001", "hap")],
        script: [(f"{script}_F000", "sad"), (f"{script}_M000", "fru")],
    }
    ev = root / f"Session{n}" / "dialog" / "EmoEvaluation"
    ev.mkdir(parents=True, exist_ok=True)
    rels = []
    for dialog, utts in lines.items():
        text = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        for i, (utt, code) in enumerate(utts):
            text += f"[{i + 1.5:.4f} - {i + 3.25:.4f}]\t{utt}\t{code}\t[2.5000, {3.0 + i / 2:.4f}, 3.5000]\n"
            text += "C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
            rels.append(f"Session{n}/sentences/wav/{dialog}/{utt}")
        (ev / f"{dialog}.txt").write_text(text)
    if n == 1:
        with open(ev / f"{impro}.txt", "a") as f:
            f.write(f"[9.0000 - 9.5000]\t{impro}_F003\tzzz\t[1.0000, 1.0000, 1.0000]\n")
        rels += [f"Session1/sentences/wav/{impro}/{impro}_F002",  # no evaluation line
                 f"Session1/sentences/wav/{impro}/{impro}_F003",  # unknown code
                 f"Session1/sentences/wav/{s}F_impro02/{s}F_impro02_F000",  # dialog without EmoEvaluation file
                 f"Session1/dialog/wav/{impro}",  # whole-dialog recording
                 f"Session1/sentences/wav/{impro}/readme"]
    return rels


def test_iemocap(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    files = make_tree(root, [rel for n in range(1, 6) for rel in _iemocap_session(root, n)])
    report, rows = run("iemocap", root, tmp_path / "out")
    assert len(rows) == 5 * 5
    wav = "Session1/sentences/wav"
    r = rows[f"{wav}/Ses01F_impro01/Ses01F_impro01_M000"]
    assert (r.label, r.speaker, r.extra["label_std"]) == ("angry", "Ses01M", "angry")
    assert {k: r.extra[k] for k in ("gender", "session", "dialog", "type", "label_orig", "valence", "activation",
                                    "dominance", "start", "end")} == {
        "gender": "male", "session": 1, "dialog": "Ses01F_impro01", "type": "improvised", "label_orig": "ang",
        "valence": 2.5, "activation": 3.5, "dominance": 3.5, "start": 2.5, "end": 4.25}
    exc = rows[f"{wav}/Ses01F_impro01/Ses01F_impro01_F001"]
    assert (exc.label, exc.speaker, exc.extra["label_orig"]) == ("happy", "Ses01F", "exc")
    sad = rows["Session3/sentences/wav/Ses03M_script01_1/Ses03M_script01_1_F000"]
    assert (sad.label, sad.speaker, sad.extra["type"]) == ("sad", "Ses03F", "scripted")
    assert {r.label for r in rows.values()} == {"angry", "happy", "neutral", "sad"}

    why = reasons(report)
    fru = why[str(files["Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_M000"])]
    assert fru.startswith("excluded by the 4-class protocol: fru")
    assert report["skipped_by_reason"]["excluded by"] == 5
    assert why[str(files[f"{wav}/Ses01F_impro01/Ses01F_impro01_F002"])].startswith("no label: no evaluation line")
    assert why[str(files[f"{wav}/Ses01F_impro02/Ses01F_impro02_F000"])].startswith("no label: ")
    assert why[str(files[f"{wav}/Ses01F_impro01/Ses01F_impro01_F003"])].startswith("unknown label code: 'zzz'")
    assert why[str(files["Session1/dialog/wav/Ses01F_impro01"])].startswith("outside expected layout")
    assert why[str(files[f"{wav}/Ses01F_impro01/readme"])].startswith("outside expected layout")

    # Default split: leave-one-session-out, both actors of a session in the same fold.
    assert report["split"] == "folds"
    assert {r.partition for r in rows.values()} == {f"session{n}" for n in range(1, 6)}
    assert all(r.partition == f"session{r.extra['session']}" for r in rows.values())
    assert len(assert_speaker_disjoint(rows)) == 10


def test_cremad(tmp_path):
    root = tmp_path / "CREMA-D"
    files = make_tree(root, [
        "AudioWAV/1001_DFA_ANG_XX", "AudioWAV/1001_IEO_HAP_HI", "AudioWAV/1002_TIE_SAD_XX",
        "AudioWAV/1002_IEO_NEU_LO", "AudioWAV/1003_MTI_FEA_XX", "AudioWAV/1003_WSI_DIS_XX",
        "AudioWAV/1091_ITS_ANG_XX", "AudioWAV/1004_IEO_SAD_MD",
        "AudioWAV/1002_DFA_XYZ_XX",  # unknown emotion
        "AudioWAV/1001_ABC_ANG_XX",  # unknown sentence
        "AudioWAV/1092_DFA_ANG_XX",  # actor out of range
        "AudioMP3/1001_DFA_ANG_XX",  # duplicate encoding
        "AudioWAV/1001-DFA-ANG-XX"])
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n"
                                                "1002,21,Female,Caucasian,Not Hispanic\n")
    report, rows = run("crema-d", root, tmp_path / "out")
    assert len(rows) == 8
    r = rows["AudioWAV/1001_IEO_HAP_HI"]
    assert (r.label, r.speaker, r.extra["label_std"]) == ("happy", "1001", "happy")
    assert {k: r.extra[k] for k in ("sentence", "text", "level", "gender", "age")} == {
        "sentence": "IEO", "text": "It's eleven o'clock", "level": "high", "gender": "male", "age": 51}
    assert rows["AudioWAV/1002_IEO_NEU_LO"].extra["level"] == "low"
    assert rows["AudioWAV/1002_TIE_SAD_XX"].extra["gender"] == "female"
    assert rows["AudioWAV/1001_DFA_ANG_XX"].label == "anger"
    assert "gender" not in rows["AudioWAV/1003_MTI_FEA_XX"].extra  # actor not in the demographics file
    assert rows["AudioWAV/1003_MTI_FEA_XX"].extra["level"] == "unspecified"
    why = reasons(report)
    assert why[str(files["AudioWAV/1002_DFA_XYZ_XX"])].startswith("unknown label code: emotion 'XYZ'")
    assert why[str(files["AudioWAV/1001_ABC_ANG_XX"])].startswith("unknown label code: sentence 'ABC'")
    assert why[str(files["AudioWAV/1092_DFA_ANG_XX"])].startswith("outside expected layout: actor 1092")
    assert why[str(files["AudioMP3/1001_DFA_ANG_XX"])].startswith("outside expected layout")
    assert why[str(files["AudioWAV/1001-DFA-ANG-XX"])].startswith("outside expected layout")
    assert report["ignored_non_audio"] == {".csv": 1}
    assert len(assert_speaker_disjoint(rows)) == 5


def test_tess(tmp_path):
    root = tmp_path / "TESS Toronto emotional speech set data"
    files = make_tree(root, [
        "OAF_angry/OAF_back_angry", "OAF_Fear/OAF_bar_fear", "OAF_Pleasant_surprise/OAF_back_ps",
        "OAF_Sad/OAF_dog_sad", "YAF_pleasant_surprised/YAF_back_ps", "YAF_angry/YAF_back_angry",
        "YAF_disgust/YAF_chair_disgust", "YAF_neutral/YAF_dog_neutral",
        "YAF_sad/YAF_dog_bored",  # unknown code
        "OAF_angry/YAF_bath_angry",  # speaker in the wrong folder
        "OAF_happy/OAF_bath_sad",  # emotion in the wrong folder
        "loose"])
    report, rows = run("tess", root, tmp_path / "out")
    assert len(rows) == 8
    r = rows["OAF_Pleasant_surprise/OAF_back_ps"]
    assert (r.label, r.speaker, r.extra["label_std"], r.extra["word"]) == ("pleasant_surprise", "OAF", "surprise",
                                                                           "back")
    assert rows["YAF_pleasant_surprised/YAF_back_ps"].label == "pleasant_surprise"
    assert rows["OAF_Fear/OAF_bar_fear"].label == "fear" and rows["YAF_disgust/YAF_chair_disgust"].label == "disgust"
    assert rows["YAF_angry/YAF_back_angry"].extra["age"] == 26 and r.extra["age"] == 64
    why = reasons(report)
    assert why[str(files["YAF_sad/YAF_dog_bored"])].startswith("unknown label code: 'bored'")
    assert why[str(files["OAF_angry/YAF_bath_angry"])].startswith("outside expected layout")
    assert why[str(files["OAF_happy/OAF_bath_sad"])].startswith("outside expected layout")
    assert why[str(files["loose"])].startswith("outside expected layout")
    # Default split: one fold per speaker (leave-one-speaker-out).
    assert report["split"] == "folds"
    assert assert_speaker_disjoint(rows) == {"OAF": {"oaf"}, "YAF": {"yaf"}}


def test_savee(tmp_path):
    root = tmp_path / "savee"
    files = make_tree(root, [
        "AudioData/DC/a01", "AudioData/DC/sa03", "AudioData/DC/su15", "AudioData/JE/d02", "AudioData/JE/n30",
        "AudioData/JK/f05", "AudioData/JK/h07", "AudioData/KL/sa01", "AudioData/KL/n01",
        "AudioData/KL/s01",  # unknown code
        "AudioData/XY/a01",  # not a SAVEE speaker
        "DC/a02",  # speaker folder not under AudioData
        "AudioData/DC/anger01"])
    (root / "AudioData" / "Info.txt").write_text("SAVEE\n")
    report, rows = run("savee", root, tmp_path / "out")
    assert len(rows) == 9
    assert [rows[k].label for k in ("AudioData/DC/a01", "AudioData/DC/sa03", "AudioData/DC/su15")] == [
        "anger", "sadness", "surprise"]
    r = rows["AudioData/DC/sa03"]
    assert (r.speaker, r.extra["label_std"], r.extra["sentence_no"], r.extra["gender"]) == ("DC", "sad", 3, "male")
    assert rows["AudioData/JE/n30"].label == "neutral" and rows["AudioData/JK/h07"].extra["label_std"] == "happy"
    why = reasons(report)
    assert why[str(files["AudioData/KL/s01"])].startswith("unknown label code: 's'")
    assert why[str(files["AudioData/XY/a01"])].startswith("outside expected layout")
    assert why[str(files["DC/a02"])].startswith("outside expected layout")
    assert why[str(files["AudioData/DC/anger01"])].startswith("outside expected layout")
    assert report["ignored_non_audio"] == {".txt": 1}
    assert len(assert_speaker_disjoint(rows)) == 4


def _csv_corpus(root: Path, lines: list[str]) -> Path:
    make_tree(root, [f"audio/u{i}" for i in range(8)])
    exts = {p.stem: p.suffix for p in (root / "audio").iterdir()}
    csv_path = root / "list.csv"
    csv_path.write_text("path,label,speaker,partition,gender\n" + "".join(
        line.format(**{f"u{i}": f"audio/u{i}{exts[f'u{i}']}" for i in range(8)}) + "\n" for line in lines))
    return csv_path


CSV_LINES = ["{u0},angry,s1,train,f", "{u1},happy,s1,train,f", "{u2},sad,s2,train,m", "{u3},neutral,s2,train,m",
             "{u4},angry,s3,dev,f", "{u5},happy,s3,dev,f", "{u6},sad,s4,test,m", "{u7},,s4,test,m"]


def test_csv_relative_paths_and_partition_column(tmp_path):
    root = tmp_path / "mine"
    csv_path = _csv_corpus(root, CSV_LINES)
    report, rows = run("csv", csv_path, tmp_path / "out", PrepareConfig(jobs=1, split="official"))
    assert len(rows) == 7
    assert {r.speaker: r.partition for r in rows.values()} == {"s1": "train", "s2": "train", "s3": "dev",
                                                                "s4": "test"}
    r = rows["audio/u4"]
    assert Path(r.path) == (root / "audio/u4.wav").resolve() and Path(r.path).is_absolute()
    assert (r.label, r.speaker, r.extra["gender"]) == ("angry", "s3", "f") and "partition" not in r.extra
    assert reasons(report)[f"{csv_path.resolve()}:9"].startswith("outside expected layout: empty label")


def test_csv_auto_split_keeps_partition_column(tmp_path):
    csv_path = _csv_corpus(tmp_path / "mine", CSV_LINES)
    report, rows = run("csv", csv_path, tmp_path / "out")
    assert report["split"] == "official"
    assert {r.speaker: r.partition for r in rows.values()} == {"s1": "train", "s2": "train", "s3": "dev",
                                                                "s4": "test"}


def test_csv_refuses_shared_speakers_unless_allowed(tmp_path):
    root = tmp_path / "leaky"
    csv_path = _csv_corpus(root, [
        "{u0},angry,s1,train,f", "{u1},happy,s1,test,f", "{u2},sad,s2,train,m", "{u3},neutral,s2,train,m",
        "{u4},angry,s3,dev,f", "{u5},happy,s3,dev,f", "{u6},sad,s4,test,m", "{u7},happy,s4,test,m"])
    with pytest.raises(SpeakerLeakageError, match="speaker 'csv/s1' is in test and train"):
        prepare_corpus("csv", csv_path, tmp_path / "refused", PrepareConfig(jobs=1, split="official"))
    assert not (tmp_path / "refused" / "manifest.jsonl").exists()
    report, rows = run("csv", csv_path, tmp_path / "out",
                       PrepareConfig(jobs=1, split="official", allow_speaker_overlap=True))
    assert len(rows) == 8 and {r.partition for r in rows.values() if r.speaker == "s1"} == {"train", "test"}
