"""RAVDESS — Ryerson Audio-Visual Database of Emotional Speech and Song (speech, audio-only).

Livingstone & Russo (2018), PLoS ONE 13(5): e0196391. Zenodo record 1188976, ``Audio_Speech_Actors_01-24.zip``.

Layout: ``Actor_XX/MM-VC-EE-II-SS-RR-AA.wav`` (24 actors x 60 files)

* MM modality: 01 full-AV, 02 video-only, 03 audio-only (only 03 is audio)
* VC vocal channel: 01 speech, 02 song
* EE emotion: 01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised
* II intensity: 01 normal, 02 strong; SS statement: 01 "Kids are talking by the door", 02 "Dogs are sitting by
  the door"; RR repetition 01/02; AA actor 01..24 (odd male, even female)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "ravdess"
LAYOUT = "Actor_XX/03-01-EE-II-SS-RR-AA.wav"
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
LABELS = tuple(EMOTIONS.values())
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_DIR = re.compile(r"^Actor_(\d\d)$")


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    for path in files:
        rel = path.relative_to(root)
        m, d = _NAME.match(path.stem), _DIR.match(rel.parts[-2]) if len(rel.parts) >= 2 else None
        if not m or not d:
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        modality, channel, emo, intensity, statement, rep, actor = m.groups()
        if actor != d.group(1):
            yield Skipped(str(path), f"outside expected layout: actor {actor} in folder {rel.parts[-2]}")
        elif modality != "03" or channel != "01":
            yield Skipped(str(path), f"not audio-only speech (modality {modality}, vocal channel {channel})")
        elif emo not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: emotion {emo} (known: {', '.join(EMOTIONS)})")
        elif intensity not in ("01", "02") or statement not in STATEMENTS:
            yield Skipped(str(path), f"unknown label code: intensity {intensity} / statement {statement}")
        else:
            yield Found(path, EMOTIONS[emo], f"actor{actor}", {
                "gender": "male" if int(actor) % 2 else "female",
                "intensity": "normal" if intensity == "01" else "strong",
                "statement": int(statement),
                "sentence": STATEMENTS[statement],
                "repetition": int(rep),
                "language": "en",
            })
