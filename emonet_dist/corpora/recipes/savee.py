"""SAVEE — Surrey Audio-Visual Expressed Emotion database (British English, acted).

Haq, Jackson, "Speaker-dependent audio-visual emotion recognition", AVSP 2009; Haq, Jackson, "Multimodal emotion
recognition", in Machine Audition: Principles, Algorithms and Systems, IGI Global 2010. Release: ``AudioData``
from kahlan.eps.surrey.ac.uk/savee.

Layout: ``AudioData/<SPK>/<code><nn>.wav`` (e.g. ``AudioData/DC/sa03.wav``), 4 speakers x 120 files.

* SPK speaker: DC, JE, JK, KL (four male students and researchers of the University of Surrey)
* code: a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise; the two-letter codes are
  matched whole, so ``sa03`` is sadness, never an ``s`` code followed by text
* nn: sentence number, 01..15 per emotion (neutral 01..30); sentences are TIMIT sentences
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "savee"
LAYOUT = "AudioData/<DC|JE|JK|KL>/<code><nn>.wav (e.g. AudioData/DC/sa03.wav)"
EMOTIONS = {"a": "anger", "d": "disgust", "f": "fear", "h": "happiness", "n": "neutral", "sa": "sadness",
            "su": "surprise"}
LABELS = tuple(EMOTIONS.values())
SPEAKERS = ("DC", "JE", "JK", "KL")
# The letter run is taken whole before the digits, so "sa"/"su" cannot be read as a one-letter code.
_NAME = re.compile(r"^([a-z]{1,2})(\d\d)$", re.I)


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    for path in files:
        m = _NAME.match(path.stem)
        # Folders are checked on the absolute path, so ROOT may be the release folder or AudioData itself.
        speaker = path.parent.name.upper()
        if not m or speaker not in SPEAKERS or path.parent.parent.name.lower() != "audiodata":
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        code, number = m.group(1).lower(), int(m.group(2))
        if code not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: '{m.group(1)}' (known: {', '.join(EMOTIONS)})")
        else:
            yield Found(path, EMOTIONS[code], speaker, {"gender": "male", "sentence_no": number, "language": "en"})
