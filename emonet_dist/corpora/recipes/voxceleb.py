"""VoxCeleb1 — celebrity speech from YouTube, for speaker-ID pretraining (labels are speaker ids, not emotions).

Nagrani, Chung & Zisserman, "VoxCeleb: a large-scale speaker identification dataset", Interspeech 2017
(VoxCeleb1: 1,251 speakers, 153,516 utterances, 352 h). VoxCeleb2 (Chung, Nagrani & Zisserman, Interspeech 2018:
6,112 speakers, ~1.1 M utterances, 2,442 h) has the same ``idNNNNN/<video>/NNNNN`` tree; convert its AAC/m4a
files to WAV or FLAC first (libsndfile does not read AAC).

Layout: ``wav/idNNNNN/<video>/NNNNN.wav`` (the ``wav/`` folder may be the root itself or sit deeper, e.g.
``vox1_dev_wav/wav``), plus one official list file at the root:

* ``iden_split.txt`` — the identification split, one line ``<1|2|3> idNNNNN/<video>/NNNNN.wav`` per file
  (1 train, 2 dev, 3 test). Every speaker is in all three partitions, with different videos: a speaker-ID head
  can only be scored on speakers it was trained on. **This split is not speaker-independent by design**, so the
  recipe declares ``SPEAKER_INDEPENDENT = False``; ``emonet corpus prepare`` then accepts the shared speakers
  for the official split only, and ``report.json`` says ``"speaker_independent": false``. Files the list does not
  name are skipped with the reason.
* ``veri_test.txt`` (used when there is no ``iden_split.txt``) — verification trials ``<0|1> idA/v/f.wav
  idB/v/f.wav``. The speakers appearing in it form ``test``; about 5 % of the others (chosen by a hash of the
  speaker id, so stable) form ``dev``; the rest ``train``. This split is speaker-independent.

Without either file every row lacks a partition: use ``--split speaker`` for a speaker-disjoint split.
The manifest's ``label`` and ``speaker`` are both the speaker id; ``extra`` holds the video id and which official
list assigned the partition. Train it with ``task: speaker`` (and ``epoch_mode: resampled`` at full size).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from ...errors import CorpusError
from ..manifest import Found, Skipped

NAME = "voxceleb"
LAYOUT = "wav/idNNNNN/<video>/NNNNN.wav with iden_split.txt (or veri_test.txt) at the root"
DEFAULT_SPLIT = "official"
SPEAKER_INDEPENDENT = False
"""The official identification split shares every speaker between train, dev and test (see the module doc)."""
IDEN, VERI = "iden_split.txt", "veri_test.txt"
PARTITIONS = {"1": "train", "2": "dev", "3": "test"}
DEV_SPEAKER_SHARE = 0.05
_SPK = re.compile(r"^id\d{5}$")
_UTT = re.compile(r"^\d{5}$")


def _key(parts: tuple[str, ...]) -> str:
    """``idNNNNN/<video>/NNNNN`` from the last three path parts (extension dropped: FLAC copies match too)."""
    return "/".join((*parts[-3:-1], Path(parts[-1]).stem))


def _read_lines(path: Path, fields: int) -> Iterator[tuple[int, list[str]]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != fields:
                raise CorpusError(f"{path}:{lineno}: expected {fields} fields, got {line.strip()!r}")
            yield lineno, cols


def read_iden_split(path: Path) -> dict[str, str]:
    """``{idNNNNN/<video>/NNNNN: partition}`` from ``iden_split.txt``."""
    out = {}
    for lineno, (code, rel) in _read_lines(path, 2):
        if code not in PARTITIONS:
            raise CorpusError(f"{path}:{lineno}: unknown partition code {code!r} (1 train, 2 dev, 3 test)")
        out[_key(tuple(rel.split("/")))] = PARTITIONS[code]
    return out


def read_veri_speakers(path: Path) -> set[str]:
    """Speakers appearing in the verification trials of ``veri_test.txt``."""
    speakers = set()
    for lineno, (target, a, b) in _read_lines(path, 3):
        if target not in ("0", "1"):
            raise CorpusError(f"{path}:{lineno}: trial target must be 0 or 1, got {target!r}")
        speakers.update((a.split("/")[0], b.split("/")[0]))
    return speakers


def dev_speakers(speakers: set[str]) -> set[str]:
    """A stable ~5 % of ``speakers`` (lowest hashes), at least one when there are three or more."""
    ranked = sorted(speakers, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    n = max(round(DEV_SPEAKER_SHARE * len(ranked)), 1 if len(ranked) >= 3 else 0)
    return set(ranked[:n])


def scan(root: Path, files: list[Path]) -> Iterator[Found | Skipped]:
    iden = read_iden_split(root / IDEN) if (root / IDEN).is_file() else None
    veri = read_veri_speakers(root / VERI) if iden is None and (root / VERI).is_file() else None
    parsed = []
    for path in files:
        parts = path.relative_to(root).parts
        if len(parts) < 3 or not _SPK.match(parts[-3]) or not _UTT.match(path.stem):
            yield Skipped(str(path), f"outside expected layout {LAYOUT}")
            continue
        parsed.append((path, parts[-3], parts[-2], _key(parts)))
    dev = dev_speakers({s for _, s, _, _ in parsed} - veri) if veri is not None else set()
    for path, spk, video, key in parsed:
        extra = {"video": video, "task": "speaker-id"}
        if iden is not None:
            if key not in iden:
                yield Skipped(str(path), f"excluded by {IDEN}: {key} is not listed")
                continue
            part, extra["official_split"] = iden[key], "identification (speakers shared by design)"
        elif veri is not None:
            part = "test" if spk in veri else "dev" if spk in dev else "train"
            extra["official_split"] = "verification (speaker-independent)"
        else:
            part = None
        yield Found(path, spk, spk, extra, partition=part)
