"""TESS — Toronto Emotional Speech Set (English, acted).

Pichora-Fuller, Dupuis, "Toronto emotional speech set (TESS)", Borealis (University of Toronto Dataverse), 2020,
doi:10.5683/SP2/E8H2MF.

Layout: ``<SPK>_<emotion>/<SPK>_<word>_<code>.wav`` (e.g. ``OAF_Fear/OAF_back_fear.wav``): 2 speakers x 7
emotions x 200 target words in the carrier phrase "Say the word ...", 2,800 files.

* SPK speaker: OAF older adult female (64 years), YAF younger adult female (26 years)
* emotion folder: angry, disgust, fear, happy, neutral, pleasant surprise, sad; the case and spelling vary in the
  release (``OAF_Fear``, ``OAF_Pleasant_surprise``, ``YAF_pleasant_surprised``), so folders are normalised
* code (file suffix): angry, disgust, fear, happy, neutral, ps (pleasant surprise), sad

Default split: ``folds``, one per speaker (leave-one-speaker-out, partitions ``oaf`` and ``yaf``). With only two
speakers a speaker-independent train/dev/test split cannot exist, and any split within a speaker would leak that
speaker's voice into the test scores.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "tess"
LAYOUT = "<OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<code>.wav (e.g. OAF_Fear/OAF_back_fear.wav)"
DEFAULT_SPLIT = "folds"
EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy", "neutral": "neutral",
            "ps": "pleasant_surprise", "sad": "sad"}
LABELS = tuple(EMOTIONS.values())
FOLDERS = {"pleasant_surprise": "ps", "pleasant_surprised": "ps", **{e: e for e in EMOTIONS}}
AGES = {"OAF": 64, "YAF": 26}
_NAME = re.compile(r"^(OAF|YAF)_(.+)_([A-Za-z]+)$", re.I)
_DIR = re.compile(r"^(OAF|YAF)_(.+)$", re.I)


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    for path in files:
        rel = path.relative_to(root)
        m, d = _NAME.match(path.stem), _DIR.match(rel.parts[-2]) if len(rel.parts) >= 2 else None
        if not m or not d:
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        speaker, word, code = m.group(1).upper(), m.group(2).lower(), m.group(3).lower()
        folder = FOLDERS.get(d.group(2).lower().replace(" ", "_"))
        if code not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: '{m.group(3)}' (known: {', '.join(EMOTIONS)})")
        elif d.group(1).upper() != speaker or folder != code:
            yield Skipped(str(path), f"outside expected layout: {speaker} {code} file in folder {rel.parts[-2]}")
        else:
            yield Found(path, EMOTIONS[code], speaker, {
                "gender": "female", "age": AGES[speaker], "word": word, "language": "en"})
