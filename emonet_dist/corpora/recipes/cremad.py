"""CREMA-D — Crowd-sourced Emotional Multimodal Actors Dataset (English, acted).

Cao, Cooper, Keutmann, Gur, Nenkova, Verma, "CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset", IEEE
Transactions on Affective Computing 5(4), 2014. Release: github.com/CheyneyComputerScience/CREMA-D.

Layout: ``AudioWAV/AAAA_SSS_EEE_LL.wav`` (e.g. ``AudioWAV/1001_DFA_ANG_XX.wav``), 91 actors, 7,442 files.
Only ``AudioWAV/`` is read: ``AudioMP3/`` holds the same utterances again and would duplicate them.

* AAAA actor: 1001..1091 (age, sex, race in ``VideoDemographics.csv``; when that file sits in ROOT, the actor's
  sex and age go to ``extra``)
* SSS sentence: IEO "It's eleven o'clock", TIE "That is exactly what happened", IOM "I'm on my way to the
  meeting", IWW "I wonder what this is about", TAI "The airplane is almost full", MTI "Maybe tomorrow it will be
  cold", IWL "I would like a new alarm clock", ITH "I think I have a doctor's appointment", DFA "Don't forget a
  jacket", ITS "I think I've seen this before", TSI "The surface is slick", WSI "We'll stop in a couple of
  minutes"
* EEE emotion: ANG anger, DIS disgust, FEA fear, HAP happy, NEU neutral, SAD sad
* LL level: LO low, MD medium, HI high, XX unspecified (only IEO was recorded at three levels)

The release documents ``1076_MTI_SAD_XX.wav`` as holding no audio; the core's audio check reports it if it
decodes to nothing.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "crema-d"
LAYOUT = "AudioWAV/AAAA_SSS_EEE_LL.wav (e.g. AudioWAV/1001_DFA_ANG_XX.wav)"
EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LABELS = tuple(EMOTIONS.values())
SENTENCES = {"IEO": "It's eleven o'clock", "TIE": "That is exactly what happened",
             "IOM": "I'm on my way to the meeting", "IWW": "I wonder what this is about",
             "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
             "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
             "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before", "TSI": "The surface is slick",
             "WSI": "We'll stop in a couple of minutes"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    demographics = _demographics(root / "VideoDemographics.csv")
    for path in files:
        m = _NAME.match(path.stem)
        if not m or path.parent.name.lower() != "audiowav":
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        actor, sentence, emo, level = m.groups()
        if not 1001 <= int(actor) <= 1091:
            yield Skipped(str(path), f"outside expected layout: actor {actor} is not in 1001..1091")
        elif emo not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: emotion '{emo}' (known: {', '.join(EMOTIONS)})")
        elif sentence not in SENTENCES or level not in LEVELS:
            yield Skipped(str(path), f"unknown label code: sentence '{sentence}' / level '{level}'")
        else:
            yield Found(path, EMOTIONS[emo], actor, {
                "sentence": sentence, "text": SENTENCES[sentence], "level": LEVELS[level], "language": "en",
                **demographics.get(actor, {})})


def _demographics(csv_path: Path) -> dict[str, dict]:
    """``{actor: {"gender", "age"}}`` from the release's ``VideoDemographics.csv`` (empty when absent)."""
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        return {r["ActorID"].strip(): {"gender": r["Sex"].strip().lower(), "age": int(r["Age"])}
                for r in csv.DictReader(f) if r.get("ActorID") and r.get("Sex") and (r.get("Age") or "").isdigit()}
