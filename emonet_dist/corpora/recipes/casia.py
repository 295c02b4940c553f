"""CASIA — Chinese emotional speech corpus (Mandarin, acted).

Institute of Automation, Chinese Academy of Sciences (CASIA); Tao, Liu, Zhang, Jia, "Design of speech corpus for
Mandarin text to speech", Blizzard Challenge Workshop 2008. Distributed by the Chinese LDC.

Layout: ``<speaker>/<emotion>/<id>.wav`` (e.g. ``wangzhe/angry/201.wav``); any folders above ``<speaker>`` are
ignored. 4 speakers x 6 emotions; the widely shared subset has 50 texts each (ids 201..250, 1,200 files).

* speaker: liuchanhg (female), wangzhe (male), zhaoquanyin (female), ZhaoZuoxiang (male); the folder names are
  the release's own (``liuchanhg`` is spelt so), matched case-insensitively
* emotion folder: angry, fear, happy, neutral, sad, surprise
* id: the text number; the same ids are read by every speaker in every emotion
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "casia"
LAYOUT = "<speaker>/<emotion>/<id>.wav (e.g. wangzhe/angry/201.wav)"
EMOTIONS = ("angry", "fear", "happy", "neutral", "sad", "surprise")
LABELS = EMOTIONS
SPEAKERS = {"liuchanhg": "female", "wangzhe": "male", "zhaoquanyin": "female", "ZhaoZuoxiang": "male"}
_SPEAKER = {s.lower(): s for s in SPEAKERS}
_ID = re.compile(r"^\d+$")


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    for path in files:
        rel = path.relative_to(root)
        if len(rel.parts) < 3 or not _ID.match(path.stem):
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        speaker, emo = _SPEAKER.get(rel.parts[-3].lower()), rel.parts[-2].lower()
        if speaker is None:
            yield Skipped(str(path), f"outside expected layout: folder '{rel.parts[-3]}' is not a CASIA speaker "
                                     f"({', '.join(SPEAKERS)})")
        elif emo not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: emotion folder '{rel.parts[-2]}' "
                                     f"(known: {', '.join(EMOTIONS)})")
        else:
            yield Found(path, emo, speaker, {
                "gender": SPEAKERS[speaker], "text_id": int(path.stem), "language": "zh"})
