"""EMOVO — Italian emotional speech corpus.

Costantini, Iaderola, Paoloni, Todisco, "EMOVO Corpus: an Italian Emotional Speech Database", LREC 2014.

Layout: ``<spk>/<emo>-<spk>-<sent>.wav`` — 6 actors (f1, f2, f3, m1, m2, m3) x 7 emotions x 14 sentences.

* emo: dis disgust (disgusto), gio joy (gioia), neu neutral, pau fear (paura), rab anger (rabbia),
  sor surprise (sorpresa), tri sadness (tristezza)
* sent: b1-b3 short, l1-l4 long, n1-n5 nonsense, d1-d2 questions
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..manifest import Found, Skipped

NAME = "emovo"
LAYOUT = "<spk>/<emo>-<spk>-<sent>.wav (e.g. f1/dis-f1-b1.wav)"
EMOTIONS = {"dis": "disgust", "gio": "joy", "neu": "neutral", "pau": "fear", "rab": "anger", "sor": "surprise",
            "tri": "sadness"}
LABELS = tuple(EMOTIONS.values())
_NAME = re.compile(r"^([a-z]{3})-([fm]\d)-([bldn]\d)$", re.I)


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    for path in files:
        rel = path.relative_to(root)
        m = _NAME.match(path.stem)
        if not m or len(rel.parts) < 2:
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        emo, spk, sent = (g.lower() for g in m.groups())
        if rel.parts[-2].lower() != spk:
            yield Skipped(str(path), f"outside expected layout: speaker {spk} in folder {rel.parts[-2]}")
        elif emo not in EMOTIONS:
            yield Skipped(str(path), f"unknown label code: emotion '{emo}' (known: {', '.join(EMOTIONS)})")
        else:
            yield Found(path, EMOTIONS[emo], spk, {
                "gender": "female" if spk[0] == "f" else "male", "sentence_id": sent, "language": "it"})
