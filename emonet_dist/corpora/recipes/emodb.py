"""EmoDB — Berlin Database of Emotional Speech (German, acted).

Burkhardt, Paeschke, Rolfes, Sendlmeier, Weiss, "A Database of German Emotional Speech", Interspeech 2005.
Official download: emodb.bilderbar.info (``download.zip``, the audio in ``wav/``).

Layout: ``wav/SSTTTEV.wav`` (e.g. ``wav/03a01Fa.wav``), 10 actors x 10 texts x 7 emotions, 535 files.

* SS speaker: 03 m 31, 08 f 34, 09 f 21, 10 m 32, 11 m 26, 12 m 30, 13 f 32, 14 f 35, 15 m 25, 16 f 31
  (gender, age in years, from the EmoDB documentation)
* TTT text: a01..a07 short, b01..b10 long (the release uses a01 a02 a04 a05 a07 b01 b02 b03 b09 b10)
* E emotion, a letter of the German word: W Ärger anger, L Langeweile boredom, E Ekel disgust,
  A Angst fear (anxiety), F Freude happiness, T Trauer sadness, N neutral
* V version: a, b, c ... when an actor recorded the same text and emotion more than once
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "emodb"
LAYOUT = "wav/SSTTTEV.wav (e.g. wav/03a01Fa.wav)"
EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
            "N": "neutral"}
LABELS = tuple(EMOTIONS.values())
SPEAKERS = {"03": ("male", 31), "08": ("female", 34), "09": ("female", 21), "10": ("male", 32),
            "11": ("male", 26), "12": ("male", 30), "13": ("female", 32), "14": ("female", 35),
            "15": ("male", 25), "16": ("female", 31)}
_NAME = re.compile(r"^(\d\d)([ab]\d\d)([A-Za-z])([a-z])$")


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    for path in files:
        m = _NAME.match(path.stem)
        # The folder is checked on the absolute path, so ROOT may be the release folder or its wav/ itself.
        if not m or path.parent.name.lower() != "wav":
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        speaker, text, emo, version = m.groups()
        if speaker not in SPEAKERS:
            yield Skipped(str(path), f"outside expected layout: speaker {speaker} is not an EmoDB speaker "
                                     f"({', '.join(SPEAKERS)})")
        elif emo not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: emotion letter '{emo}' (known: {', '.join(EMOTIONS)})")
        else:
            gender, age = SPEAKERS[speaker]
            yield Found(path, EMOTIONS[emo], speaker, {
                "gender": gender, "age": age, "text_id": text, "version": version, "language": "de"})
