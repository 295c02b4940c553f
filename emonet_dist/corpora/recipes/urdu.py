"""URDU — Urdu emotional speech dataset (semi-natural, from Urdu TV talk shows).

Latif, Qayyum, Usman, Qadir, "Cross Lingual Speech Emotion Recognition: Urdu vs. Western Languages", FIT 2018
(arXiv:1812.10411); github.com/siddiquelatif/URDU-Dataset.

Layout: ``<Emotion>/S<G><id>_F<nn>_<E><nn>.wav`` with Emotion in Angry, Happy, Neutral, Sad.

* ``S<G><id>``: speaker, G = M (male) / F (female), e.g. SM1, SF6
* ``F<nn>``: running file number of that speaker; ``<E><nn>``: emotion letter (A, H, N, S) and its number

Caveat (dataset README vs. file names): 29 speaker ids occur, mostly nested within one emotion, so classes
are confounded with speakers; speaker-independent splits are possible but harder than they look.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "urdu"
LAYOUT = "<Emotion>/S<G><id>_F<nn>_<E><nn>.wav (e.g. Angry/SM1_F10_A010.wav)"
EMOTIONS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
LABELS = tuple(EMOTIONS.values())
FOLDERS = {"angry": "A", "happy": "H", "neutral": "N", "sad": "S"}
_NAME = re.compile(r"^(S([MF])\d+)_F(\d+)_([A-Z])(\d+)$", re.I)


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    for path in files:
        rel = path.relative_to(root)
        m = _NAME.match(path.stem)
        if not m or len(rel.parts) < 2:
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        speaker, gender, file_no, code, _ = m.groups()
        code = code.upper()
        folder = FOLDERS.get(rel.parts[-2].lower())
        if code not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: emotion letter '{code}' (known: A, H, N, S)")
        elif folder != code:
            yield Skipped(str(path), f"outside expected layout: emotion {code} in folder {rel.parts[-2]}")
        else:
            yield Found(path, EMOTIONS[code], speaker.upper(), {
                "gender": "male" if gender.upper() == "M" else "female", "speaker_file_no": int(file_no),
                "language": "ur"})
