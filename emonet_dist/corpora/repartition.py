"""``emonet corpus partition``: (re)assign partitions of an existing manifest without touching the audio.

For manifests that come from elsewhere (a VoxCeleb-sized list, a colleague's manifest) or to try another seed
or split. It streams the manifest twice — once to count utterances per speaker and class, once to write the
rows with their partitions and the report — so memory grows with the number of speakers, not utterances.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

from ..config import PrepareConfig
from ..errors import CorpusError, SpeakerLeakageError
from .manifest import MANIFEST, REPORT
from .partitions import assign_speakers


def _rows(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorpusError(f"{path}:{lineno}: not a manifest row ({exc})") from None


def partition_manifest(src: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig()) -> dict:
    """Write ``out/manifest.jsonl`` with new partitions and ``out/report.json``; returns the report."""
    t0 = time.time()
    src = Path(src)
    src = src / MANIFEST if src.is_dir() else src
    if not src.is_file():
        raise CorpusError(f"no manifest at {src}")
    split = "speaker" if cfg.split == "auto" else cfg.split
    # pass 1: speaker x class counts (and speaker groups for folds)
    spk_class: dict[str, Counter] = defaultdict(Counter)
    groups: dict[str, str] = {}
    corpora: set[str] = set()
    for r in _rows(src):
        spk_class[r["speaker"]][r["label"]] += 1
        groups.setdefault(r["speaker"], r.get("extra", {}).get("group", r["speaker"]))
        corpora.add(r["corpus"])
    if not spk_class:
        raise CorpusError(f"{src} has no rows")
    by_speaker = assign_speakers(spk_class, groups, split, cfg) if split != "official" else None
    # pass 2: write rows and accumulate the report
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (MANIFEST + ".tmp")
    per_class, per_part, per_pc = Counter(), Counter(), defaultdict(Counter)
    spk_parts: dict[str, set] = defaultdict(set)
    n, total, dmin, dmax = 0, 0.0, float("inf"), 0.0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in _rows(src):
            if by_speaker is not None:
                r["partition"] = by_speaker[r["speaker"]]
            elif not r.get("partition"):
                raise CorpusError(f"split=official but {r['id']} has no partition")
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            p = r["partition"]
            per_class[r["label"]] += 1
            per_part[p] += 1
            per_pc[p][r["label"]] += 1
            spk_parts[r["speaker"]].add(p)
            n, total = n + 1, total + r["duration"]
            dmin, dmax = min(dmin, r["duration"]), max(dmax, r["duration"])
    shared = sorted(s for s, p in spk_parts.items() if len(p) > 1)
    if shared and not cfg.allow_speaker_overlap:
        tmp.unlink()
        raise SpeakerLeakageError(f"{src}: {len(shared)} speaker(s) are in more than one partition (e.g. "
                                  f"'{shared[0]}' in {sorted(spk_parts[shared[0]])}); use the default speaker split "
                                  "or pass --allow-speaker-overlap to accept it knowingly")
    os.replace(tmp, out / MANIFEST)
    report = {
        "corpus": ",".join(sorted(corpora)), "source": str(src), "split": split, "prepare": asdict(cfg),
        "utterances": n, "speakers": len(spk_parts), "classes": sorted(per_class),
        "per_class": dict(sorted(per_class.items())), "per_partition": dict(sorted(per_part.items())),
        "per_partition_class": {p: dict(sorted(c.items())) for p, c in sorted(per_pc.items())},
        "speakers_per_partition_count": dict(Counter(next(iter(p)) for p in spk_parts.values() if len(p) == 1)),
        "duration_s": {"total": round(total, 3), "mean": round(total / n, 4), "min": round(dmin, 4),
                       "max": round(dmax, 4)},
        "skipped_count": 0, "skipped": [], "seconds": round(time.time() - t0, 2),
    }
    (out / REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return report
