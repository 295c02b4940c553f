"""Bad input is counted and reported with its path and reason; the run goes on and nothing is dropped silently."""

from __future__ import annotations

import json
import os

from emonet_dist.config import PrepareConfig
from emonet_dist.corpora.prepare import prepare_corpus
from emonet_testkit import write_tone


def test_every_bad_input_case_is_reported(tmp_path):
    raw = tmp_path / "ravdess"
    good = []
    for actor in (1, 2, 3, 4):
        for emo in (1, 3, 5):
            good.append(write_tone(raw / f"Actor_{actor:02d}/03-01-{emo:02d}-01-01-01-{actor:02d}.wav", 0.4))
    # corrupt: random bytes with an audio extension
    corrupt = raw / "Actor_01/03-01-04-01-01-01-01.wav"
    corrupt.write_bytes(os.urandom(2000))
    # truncated: a valid FLAC cut in half
    full = write_tone(raw / "Actor_02/03-01-04-01-01-01-02.flac", 2.0)
    truncated = full
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    # zero-length
    empty = raw / "Actor_03/03-01-04-01-01-01-03.wav"
    empty.write_bytes(b"")
    # unreadable: a dangling link (tests run as root here, so permission bits would not stop a read)
    unreadable = raw / "Actor_04/03-01-04-01-01-01-04.wav"
    os.symlink(tmp_path / "gone.wav", unreadable)
    # unknown label code (emotion 09)
    unknown = write_tone(raw / "Actor_01/03-01-09-01-01-01-01.wav", 0.3)
    # outside the expected layout: a stray file at the root and a file in the wrong actor folder
    stray = write_tone(raw / "notes.wav", 0.3)
    wrong_dir = write_tone(raw / "Actor_01/03-01-02-01-01-01-02.wav", 0.3)
    (raw / "README.txt").write_text("not audio")

    report = prepare_corpus("ravdess", raw, tmp_path / "out", PrepareConfig(jobs=1, dev_fraction=0.25,
                                                                            test_fraction=0.25))
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["skipped"] == report["skipped"]
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert reasons[str(corrupt)].startswith("not decodable audio")
    assert reasons[str(truncated)].startswith(("truncated", "not decodable audio"))
    assert reasons[str(empty)] == "empty file (0 bytes)"
    assert reasons[str(unreadable)].startswith("cannot access file")
    assert reasons[str(unknown)].startswith("unknown label code: emotion 09")
    assert reasons[str(stray)].startswith("outside expected layout")
    assert reasons[str(wrong_dir)].startswith("outside expected layout: actor 02 in folder Actor_01")
    # every file is either in the manifest or in the report
    assert report["utterances"] == len(good) and report["skipped_count"] == 7
    assert report["ignored_non_audio"] == {".txt": 1}
    assert report["skipped_by_reason"]["outside expected layout"] == 2
