"""Arousal/valence aggregation (EmoNet paper section 6.2, Table 2).

``av_map.csv`` holds Table 2 (category -> low/high arousal, negative/neutral/positive valence) plus aliases for
the names the recipes produce (``angry`` for ``anger``, RAVDESS ``calm``...), each row saying where it comes
from. A category without a mapping is an error that names it; it is never guessed.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from ..errors import CorpusError
from .labels import harmonise

AROUSAL = ("low", "high")
VALENCE = ("negative", "neutral", "positive")
CLASSES = {"arousal": AROUSAL, "valence": VALENCE}


@lru_cache(maxsize=1)
def table() -> dict[str, tuple[str, str]]:
    with open(Path(__file__).with_name("av_map.csv"), newline="") as f:
        return {row["category"]: (row["arousal"], row["valence"]) for row in csv.DictReader(f)}


def map_label(label: str, task: str) -> str:
    """The arousal (``low``/``high``) or valence (``negative``/``neutral``/``positive``) class of a category."""
    if task not in CLASSES:
        raise ValueError(f"task must be arousal or valence, got {task!r}")
    t = table()
    key = label.strip().lower().replace(" ", "_")
    hit = t.get(key) or t.get(harmonise(key))
    if hit is None:
        raise CorpusError(f"emotion category '{label}' has no arousal/valence mapping; add a row for it to "
                          f"{Path(__file__).with_name('av_map.csv')} (category,arousal,valence,source)")
    return hit[0] if task == "arousal" else hit[1]
