"""Label harmonisation across corpora.

Recipes keep each corpus's own category names as ``label`` (RAVDESS says ``fearful``, EMOVO ``fear``); the
harmonised name goes to ``extra["label_std"]`` so that cross-corpus tools (the arousal/valence map, reports)
speak one vocabulary: angry, happy, sad, fear, disgust, surprise, neutral, calm, boredom, and a few more that
only some corpora have (excited, frustrated, contempt, ...).
"""

from __future__ import annotations

STANDARD = {
    # anger
    "anger": "angry", "angry": "angry", "ang": "angry", "rabbia": "angry", "ärger": "angry", "wut": "angry",
    # happiness
    "happy": "happy", "happiness": "happy", "joy": "happy", "hap": "happy", "gioia": "happy", "freude": "happy",
    # sadness
    "sad": "sad", "sadness": "sad", "tristezza": "sad", "trauer": "sad",
    # fear
    "fear": "fear", "fearful": "fear", "paura": "fear", "angst": "fear", "fea": "fear",
    # disgust
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust", "disgusto": "disgust", "ekel": "disgust",
    # surprise
    "surprise": "surprise", "surprised": "surprise", "sorpresa": "surprise", "sur": "surprise",
    "pleasant_surprise": "surprise", "ps": "surprise",
    # neutral / calm / boredom
    "neutral": "neutral", "neu": "neutral", "calm": "calm", "boredom": "boredom", "langeweile": "boredom",
    # corpus-specific extras
    "excited": "excited", "exc": "excited", "frustrated": "frustrated", "frustration": "frustrated",
    "fru": "frustrated", "contempt": "contempt",
}


def harmonise(label: str) -> str:
    """Harmonised name for a corpus label (unknown names pass through, lower-cased)."""
    key = label.strip().lower().replace(" ", "_")
    return STANDARD.get(key, key)
