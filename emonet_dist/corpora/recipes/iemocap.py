"""IEMOCAP — Interactive Emotional Dyadic Motion Capture database (English, acted dyadic sessions).

Busso, Bulut, Lee, Kazemzadeh, Mower, Kim, Chang, Lee, Narayanan, "IEMOCAP: interactive emotional dyadic motion
capture database", Language Resources and Evaluation 42(4), 2008. Release ``IEMOCAP_full_release`` (USC SAIL).

Layout (5 sessions, each one female and one male actor):

* audio: ``Session{1-5}/sentences/wav/<dialog>/<utterance>.wav``, e.g.
  ``Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M013.wav``. The dialog is ``Ses<nn><G>_impro<k>`` or
  ``Ses<nn><G>_script<k>_<part>`` (G: the actor wearing the markers); the last part of the utterance id is the
  speaking actor's gender and turn number. Whole-dialog recordings in ``dialog/wav`` are not used.
* labels: ``Session{n}/dialog/EmoEvaluation/<dialog>.txt``, one line per utterance,
  ``[start - end]<TAB>utterance<TAB>code<TAB>[valence, activation, dominance]`` (times in s, dimensions 1..5);
  the other lines (``C-``/``A-`` annotator votes, ``%`` headers, blank) are ignored.
* codes: ang anger, hap happiness, exc excitement, sad sadness, neu neutral, fru frustration, sur surprise,
  fea fear, dis disgust, oth other, xxx no majority.

The usual 4-class protocol is applied: angry (ang), happy (hap and exc merged, as in most published IEMOCAP
results; ``extra["label_orig"]`` keeps which one), neutral (neu), sad (sad) — 5,531 utterances in the full
release. Every other code is skipped with its reason. Speaker = session + speaking actor (``Ses01M``); the speaker
group is the session, and the default split is leave-one-session-out (partitions ``session1..session5``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "iemocap"
LAYOUT = ("Session{1-5}/sentences/wav/<dialog>/<utterance>.wav with labels in "
          "Session{1-5}/dialog/EmoEvaluation/<dialog>.txt")
DEFAULT_SPLIT = "folds"
CODES = {"ang": "anger", "hap": "happiness", "exc": "excitement", "sad": "sadness", "neu": "neutral",
         "fru": "frustration", "sur": "surprise", "fea": "fear", "dis": "disgust", "oth": "other",
         "xxx": "no majority"}
FOUR_CLASS = {"ang": "angry", "hap": "happy", "exc": "happy", "neu": "neutral", "sad": "sad"}
LABELS = tuple(sorted(set(FOUR_CLASS.values())))
_UTT = re.compile(r"^(Ses0([1-5])[FM]_(impro|script)\w*?)_([FM])\d+$")
_SESSION = re.compile(r"^Session([1-5])$")
_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+"
                   r"\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\]")


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    evaluations: dict[Path, dict[str, tuple] | None] = {}
    for path in files:
        # Fixed folder names are checked on the absolute path, so ROOT may also be a single Session folder.
        parts = path.parts
        m = _UTT.match(path.stem)
        s = _SESSION.match(parts[-5]) if len(parts) >= 5 else None
        if parts[-3:-1] == ("dialog", "wav"):
            yield Skipped(str(path), "outside expected layout: whole-dialog recording (utterances are read from "
                                     "Session{n}/sentences/wav)")
            continue
        if not m or not s or parts[-4:-2] != ("sentences", "wav") or parts[-2] != m.group(1) \
                or s.group(1) != m.group(2):
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        dialog, session, kind, gender = m.groups()
        txt = path.parents[3] / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        if txt not in evaluations:
            evaluations[txt] = _read_evaluation(txt)
        table = evaluations[txt]
        where = txt.relative_to(path.parents[4]).as_posix()
        if table is None:
            yield Skipped(str(path), f"no label: {where} is missing")
            continue
        if path.stem not in table:
            yield Skipped(str(path), f"no label: no evaluation line for {path.stem} in {where}")
            continue
        start, end, code, val, act, dom = table[path.stem]
        if code not in CODES:
            yield Skipped(str(path), f"unknown label code: '{code}' in {where} (known: {', '.join(CODES)})")
        elif code not in FOUR_CLASS:
            yield Skipped(str(path), f"excluded by the 4-class protocol: {code} ({CODES[code]}); kept are ang, "
                                     "hap+exc, neu, sad")
        else:
            yield Found(path, FOUR_CLASS[code], f"Ses0{session}{gender}", {
                "gender": "female" if gender == "F" else "male", "session": int(session), "dialog": dialog,
                "type": "improvised" if kind == "impro" else "scripted", "label_orig": code,
                "valence": val, "activation": act, "dominance": dom, "start": start, "end": end,
                "language": "en"}, group=f"Session{session}")


def _read_evaluation(txt: Path) -> dict[str, tuple] | None:
    """``{utterance: (start, end, code, valence, activation, dominance)}``, or None when the file is missing."""
    if not txt.is_file():
        return None
    table = {}
    with open(txt, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _LINE.match(line)
            if m:
                start, end, utt, code, val, act, dom = m.groups()
                table[utt] = (float(start), float(end), code.lower(), float(val), float(act), float(dom))
    return table
