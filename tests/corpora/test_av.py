"""Arousal/valence aggregation: Table 2 covers every category the recipes produce; balancing is exact."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from emonet_dist.corpora import av
from emonet_dist.corpora.recipes import get_recipe, recipe_names
from emonet_dist.corpora.synth import EMOTIONS as SYNTH_EMOTIONS
from emonet_dist.data.plan import class_balanced_mask
from emonet_dist.errors import CorpusError


def _all_recipe_labels() -> dict[str, tuple[str, ...]]:
    out = {n: tuple(get_recipe(n).LABELS) for n in recipe_names() if hasattr(get_recipe(n), "LABELS")}
    out["synth"] = tuple(SYNTH_EMOTIONS)
    return out


def test_every_label_of_every_recipe_has_a_mapping():
    labels = _all_recipe_labels()
    assert set(labels) >= {"ravdess", "emovo", "urdu", "emodb", "casia", "iemocap", "crema-d", "tess", "savee", "synth"}
    for recipe, names in labels.items():
        for name in names:
            assert av.map_label(name, "arousal") in av.AROUSAL, (recipe, name)
            assert av.map_label(name, "valence") in av.VALENCE, (recipe, name)


def test_table2_rows_and_aliases():
    assert av.map_label("anger", "arousal") == "high" and av.map_label("anger", "valence") == "negative"
    assert av.map_label("boredom", "arousal") == "low" and av.map_label("boredom", "valence") == "neutral"
    assert av.map_label("surprise", "valence") == "neutral" and av.map_label("tenderness", "valence") == "positive"
    assert av.map_label("fearful", "arousal") == av.map_label("fear", "arousal")  # RAVDESS name
    assert av.map_label("Freude", "valence") == "positive"  # harmonised German name


def test_unknown_category_is_named():
    with pytest.raises(CorpusError, match="'bewilderment' has no arousal/valence mapping"):
        av.map_label("bewilderment", "arousal")


@pytest.mark.parametrize("task", ["arousal", "valence"])
def test_balanced_subsampling_gives_equal_class_counts(task):
    rng = np.random.default_rng(0)
    raw = list(rng.choice(["angry", "sad", "neutral", "happy", "fearful", "calm"], size=500,
                          p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05]))
    mapped = [av.map_label(x, task) for x in raw]
    keep = class_balanced_mask(mapped, seed=1)
    counts = Counter(np.asarray(mapped)[keep])
    assert len(counts) == len(av.CLASSES[task]) and len(set(counts.values())) == 1
    assert min(Counter(mapped).values()) == next(iter(counts.values()))
