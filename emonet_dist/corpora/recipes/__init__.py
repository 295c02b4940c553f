"""Corpus recipes: one module per corpus, each parsing the corpus's official layout.

A recipe module defines:

* ``NAME`` — the name used on the command line (``emonet corpus prepare NAME RAW_DIR``);
* ``LAYOUT`` — the layout it expects, shown in errors;
* ``LABELS`` — every category name it can produce (the arousal/valence map must cover them; ``csv`` and
  ``synth`` take their labels from their input);
* ``scan(root, files)`` — yields a :class:`~emonet_dist.corpora.manifest.Found` or
  :class:`~emonet_dist.corpora.manifest.Skipped` for every audio file in ``files`` (absolute paths of all audio
  files under ``root``, sorted); files it never mentions are reported as skipped by the core;
* optionally ``DEFAULT_SPLIT`` (``speaker``, ``folds`` or ``official``) and ``WALK = False`` when ``root`` is a
  list file rather than a directory tree (the ``csv`` recipe).

Everything shared — walking the tree, checking the audio, partitioning, the leakage check and the report —
lives in :mod:`emonet_dist.corpora.prepare`, so each recipe stays short.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ...errors import CorpusError

# name on the command line -> module under emonet_dist.corpora.recipes
_MODULES = {
    "ravdess": "ravdess",
    "emovo": "emovo",
    "urdu": "urdu",
    "emodb": "emodb",
    "casia": "casia",
    "iemocap": "iemocap",
    "crema-d": "cremad",
    "tess": "tess",
    "savee": "savee",
    "csv": "csvlist",
    "synth": "synth",
    "voxceleb": "voxceleb",
}


def recipe_names() -> list[str]:
    return sorted(_MODULES)


def get_recipe(name: str) -> ModuleType:
    key = name.lower()
    if key not in _MODULES:
        raise CorpusError(f"unknown recipe '{name}'; choose one of: {', '.join(recipe_names())} "
                          "(or `csv` for a path,label,speaker[,partition] list)")
    return importlib.import_module(f"{__name__}.{_MODULES[key]}")
