"""SYNTH — the built-in synthetic emotional-speech corpora (:mod:`emonet_dist.corpora.synth`).

Generated, not recorded: procedurally generated speakers with a source–filter voice, one made-up language and
one recording channel per corpus. Build them with ``build_synthetic(out)``, which also runs this recipe.

Layout: ``<speaker>/<speaker>_<label>_<nnn>.<ext>`` (e.g. ``f01/f01_angry_003.flac``)

* speaker: letters, digits and ``-`` (no ``_``); the folder name must match;
* label: the emotion, may itself contain ``_`` (``f01_pleasant_surprise_003``): the speaker is split off the
  front and the take number off the back;
* nnn: take number per speaker and label;
* an optional ``corpus.json`` in the root (written by the builder) adds the language, channel, label set and
  per-speaker metadata (gender, f0, vocal-tract scale) to ``extra``; labels outside its label set are skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from ...errors import CorpusError
from ..manifest import Found, Skipped

NAME = "synth"
LAYOUT = "<speaker>/<speaker>_<label>_<nnn>.<ext> (e.g. f01/f01_angry_003.flac), optional corpus.json"
META = "corpus.json"
_SPEAKER = re.compile(r"^[A-Za-z0-9-]+$")
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    meta = _read_meta(root)
    labels = set(meta.get("labels", ()))
    speakers = meta.get("speakers", {})
    common = {"language": meta["language"]} if "language" in meta else {}
    if "channel" in meta:
        common["channel"] = meta["channel"].get("name", "")
    for path in files:
        rel = path.relative_to(root)
        speaker, _, rest = path.stem.partition("_")
        label, _, take = rest.rpartition("_")
        if len(rel.parts) != 2 or not _SPEAKER.match(speaker) or not _LABEL.match(label) or not take.isdigit():
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
        elif speaker != rel.parts[0]:
            yield Skipped(str(path), f"outside expected layout: speaker {speaker} in folder {rel.parts[0]}")
        elif labels and label not in labels:
            yield Skipped(str(path), f"unknown label: {label} (known: {', '.join(sorted(labels))})")
        else:
            info = speakers.get(speaker, {})
            extra = {**common, "take": int(take)}
            extra.update({k: info[k] for k in ("gender", "f0_hz", "vt_scale") if k in info})
            yield Found(path, label, speaker, extra)


def _read_meta(root: Path) -> dict:
    path = root / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{path}: unreadable synthetic-corpus metadata ({exc}); delete it or rebuild the "
                          "corpus with build_synthetic") from None
    if not isinstance(meta, dict):
        raise CorpusError(f"{path}: expected a JSON object; delete it or rebuild the corpus with build_synthetic")
    return meta
