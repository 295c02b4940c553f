"""Manifest rows, the records recipes produce, and the speaker-leakage check.

A prepared corpus directory holds ``manifest.jsonl`` (one :class:`Utterance` per line) and ``report.json``
(counts and every skipped file with its reason). Manifests are streamed line by line, so a VoxCeleb-sized
manifest never has to sit in memory as Python objects.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import atomic
from ..errors import CorpusError, EmonetError, SpeakerLeakageError
from ..names import check_name

MANIFEST = "manifest.jsonl"
REPORT = "report.json"


@dataclass(slots=True)
class Utterance:
    """One row of ``manifest.jsonl``."""

    id: str
    """Unique within the corpus and stable across runs: ``<corpus>/<path relative to the raw root, no ext>``."""
    corpus: str
    path: str
    """Absolute path of the raw audio file."""
    label: str
    """The corpus's own category name (e.g. RAVDESS ``fearful``); ``extra["label_std"]`` holds the harmonised one."""
    speaker: str
    duration: float
    """Seconds, from the decoded audio."""
    partition: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_json(cls, line: str) -> Utterance:
        return cls(**json.loads(line))


@dataclass(slots=True)
class Found:
    """What a recipe reads from the layout for one audio file (before the audio is checked)."""

    path: Path
    label: str
    speaker: str
    extra: dict = field(default_factory=dict)
    partition: str | None = None
    """Official partition, when the layout or a list file defines one."""
    group: str | None = None
    """Speaker group for fold splits (e.g. the IEMOCAP session); defaults to the speaker."""


@dataclass(slots=True)
class Skipped:
    """A file the recipe or the audio check could not use, and why. Every one ends up in ``report.json``."""

    path: str
    reason: str


def write_manifest(rows: Iterable[Utterance], path: Path) -> int:
    """Write rows atomically (temp file + rename); returns the number of rows."""
    n = 0
    with atomic.replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(row.to_json() + "\n")
            n += 1
    return n


def iter_manifest(path: Path) -> Iterator[Utterance]:
    """Stream rows of a manifest, with a clear error naming the line that is malformed."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise CorpusError(f"no manifest at {path}; create it with `emonet corpus prepare RECIPE RAW_DIR --out DIR`")
    checked: set[str] = set()  # corpus and partition names repeat on every row: check each distinct one once
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = Utterance.from_json(line)
            except (json.JSONDecodeError, TypeError) as exc:
                raise CorpusError(f"{path}:{lineno}: not a manifest row ({exc}); "
                                  "re-run `emonet corpus prepare`") from None
            for what, value in (("corpus", row.corpus), ("partition", row.partition)):
                if value not in checked and (value or what == "corpus"):
                    _check_row_name(value, what, path, lineno)
                    checked.add(value)
            yield row


def _check_row_name(value, what: str, path: Path, lineno: int) -> None:
    """Corpus and partition names become shard directories; a manifest is input, so they are checked here."""
    try:
        check_name(value, f"{what} name")
    except EmonetError as exc:
        raise CorpusError(f"{path}:{lineno}: {exc}") from None


def read_manifest(path: Path) -> list[Utterance]:
    return list(iter_manifest(path))


def check_speaker_disjoint(rows: Iterable[Utterance], allow_overlap: bool = False, where: str = "manifest") -> dict:
    """Refuse partitions that share a speaker, unless ``allow_overlap``.

    Returns ``{speaker: sorted partitions}`` for the shared speakers (empty when disjoint).
    """
    parts: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        parts[(r.corpus, r.speaker)].add(r.partition)
    shared = {f"{c}/{s}": sorted(p) for (c, s), p in parts.items() if len(p) > 1}
    if shared and not allow_overlap:
        first = sorted(shared)[:3]
        shown = "; ".join(f"speaker '{s}' is in {' and '.join(shared[s])}" for s in first)
        more = f" (and {len(shared) - 3} more)" if len(shared) > 3 else ""
        raise SpeakerLeakageError(
            f"{where}: partitions share speakers: {shown}{more}. Speaker-independent scores need disjoint "
            "partitions: re-partition with `emonet corpus prepare` (default split), or accept the overlap "
            "knowingly with --allow-speaker-overlap (prepare.allow_speaker_overlap=true)."
        )
    return shared


def summarize(rows: Iterable[Utterance]) -> dict:
    """Counts per class, speaker and partition, and duration statistics."""
    per_class: Counter = Counter()
    per_speaker: Counter = Counter()
    per_partition: Counter = Counter()
    per_partition_class: dict[str, Counter] = defaultdict(Counter)
    speakers_per_partition: dict[str, set] = defaultdict(set)
    total = 0.0
    dmin, dmax, n = float("inf"), 0.0, 0
    for r in rows:
        per_class[r.label] += 1
        per_speaker[r.speaker] += 1
        per_partition[r.partition] += 1
        per_partition_class[r.partition][r.label] += 1
        speakers_per_partition[r.partition].add(r.speaker)
        total += r.duration
        dmin, dmax, n = min(dmin, r.duration), max(dmax, r.duration), n + 1
    return {
        "utterances": n,
        "speakers": len(per_speaker),
        "classes": sorted(per_class),
        "per_class": dict(sorted(per_class.items())),
        "per_speaker": dict(sorted(per_speaker.items())),
        "per_partition": dict(sorted(per_partition.items())),
        "per_partition_class": {p: dict(sorted(c.items())) for p, c in sorted(per_partition_class.items())},
        "speakers_per_partition": {p: sorted(s) for p, s in sorted(speakers_per_partition.items())},
        "duration_s": {
            "total": round(total, 3),
            "mean": round(total / n, 4) if n else 0.0,
            "min": round(dmin, 4) if n else 0.0,
            "max": round(dmax, 4),
        },
    }
