"""``emonet corpus prepare``: raw corpus in its official layout -> ``manifest.jsonl`` + ``report.json``.

The steps, shared by every recipe:

1. walk the raw tree, keeping audio files (any extension libsndfile reads) and counting the rest;
2. let the recipe parse the layout (labels, speakers, official partitions) — it must account for every file;
3. decode every file in a process pool (empty, unreadable, corrupt, truncated and too-short files are skipped,
   with the reason; so are folders that cannot be listed);
4. assign partitions (speaker-independent by default) and refuse speaker leakage;
5. write the manifest atomically and a report with counts and every skipped file.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .. import atomic
from ..audio import AudioError, is_audio_file, probe_audio
from ..config import FrontendConfig, PrepareConfig
from ..errors import CorpusError, EmonetError
from ..names import check_name
from ..pool import worker_pool
from ..progress import Progress
from .labels import harmonise
from .manifest import MANIFEST, REPORT, Found, Skipped, Utterance, check_speaker_disjoint, summarize, write_manifest
from .partitions import assign_speakers
from .recipes import get_recipe

_FRONTEND = FrontendConfig()  # the frontend's defaults define the shortest usable utterance


def walk_audio(root: Path, unreadable: list[Skipped] | None = None) -> tuple[list[Path], Counter]:
    """Sorted audio files under ``root`` and a count of the other files by extension.

    Folders that cannot be listed are appended to ``unreadable`` with the reason (their files would otherwise
    vanish from the corpus without a trace).
    """
    audio, other = [], Counter()
    errors = unreadable if unreadable is not None else []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda exc: errors.append(_folder_error(exc))):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name.startswith("."):
                other["(hidden)"] += 1
            elif is_audio_file(p):
                audio.append(p)
            else:
                other[p.suffix.lower() or "(none)"] += 1
    return audio, other


def _folder_error(exc: OSError) -> Skipped:
    if isinstance(exc, PermissionError):
        reason = "permission denied: cannot list the folder; none of its files are in the manifest"
    else:
        reason = f"cannot read folder: {exc.strerror or exc}; none of its files are in the manifest"
    return Skipped(str(exc.filename), reason)


def _probe(args: tuple[str, bool]) -> tuple[float, int, int] | str:
    path, decode = args
    try:
        return probe_audio(path, decode=decode)
    except AudioError as exc:
        return str(exc)


def probe_all(paths: list[str], decode: bool, jobs: int, label: str) -> list[tuple[float, int, int] | str]:
    """Probe files in parallel; each result is ``(duration, sr, channels)`` or the reason it is unusable."""
    jobs = jobs or os.cpu_count() or 1
    prog = Progress(label, len(paths), "files")
    out = []
    if jobs == 1 or len(paths) < 64:
        for p in paths:
            out.append(_probe((p, decode)))
            prog.update()
    else:
        with worker_pool(jobs) as pool:
            for res in pool.map(_probe, [(p, decode) for p in paths], chunksize=32):
                out.append(res)
                prog.update()
    prog.close()
    return out


def make_id(corpus: str, root: Path, path: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return f"{corpus}/{rel.with_suffix('').as_posix()}"


def prepare_corpus(recipe_name: str, raw: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(),
                   name: str | None = None) -> dict:
    """Run a recipe end to end and return the report (also written to ``out/report.json``)."""
    t0 = time.time()
    recipe = get_recipe(recipe_name)
    corpus = check_name(name or recipe.NAME, "corpus name")  # it names directories and utterance ids
    root = Path(raw).expanduser().resolve()
    walk = getattr(recipe, "WALK", True)
    found, skipped, other = _scan_layout(recipe, root, walk)

    # [2] audio: decode every file (or read headers)
    results = probe_all([str(f.path) for f in found], cfg.check_audio == "decode", cfg.jobs, f"check {corpus}")
    rows, groups = _usable_rows(found, results, corpus, root if walk else root.parent, skipped)
    if not rows:
        reasons = Counter(s.reason.split(":")[0] for s in skipped).most_common(3)
        raise CorpusError(f"no usable utterances in {root} ({len(skipped)} skipped, mostly: "
                          f"{'; '.join(r for r, _ in reasons)}); expected the layout {recipe.LAYOUT}")

    # [3] partitions
    split = cfg.split if cfg.split != "auto" else getattr(recipe, "DEFAULT_SPLIT", "auto")
    if split == "auto":
        split = "official" if all(r.partition for r in rows) else "speaker"
    assign_partitions(rows, split, cfg, groups)
    _check_partition_names(rows)
    # A recipe whose official split shares speakers by design (VoxCeleb identification: a speaker-ID head is
    # scored on the speakers it trained on) says SPEAKER_INDEPENDENT = False. Only that split is exempt, and the
    # report records the exemption, which is what `emonet shard` reads.
    by_design = split == "official" and not getattr(recipe, "SPEAKER_INDEPENDENT", True)
    allow = cfg.allow_speaker_overlap or by_design
    shared = check_speaker_disjoint(rows, allow, where=f"{corpus} ({split} split)")

    # [4] write
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: r.id)
    write_manifest(rows, out / MANIFEST)
    report = {
        "corpus": corpus,
        "recipe": recipe.NAME,
        "raw": str(root),
        "split": split,
        "prepare": {**asdict(cfg), "allow_speaker_overlap": allow},
        "speaker_independent": not shared,
        **summarize(rows),
        "skipped_count": len(skipped),
        "skipped_by_reason": dict(Counter(_reason_kind(s.reason) for s in skipped).most_common()),
        "skipped": [asdict(s) for s in sorted(skipped, key=lambda s: s.path)],
        "ignored_non_audio": dict(sorted(other.items())),
        "seconds": round(time.time() - t0, 2),
    }
    atomic.write_text(out / REPORT, json.dumps(report, indent=1, ensure_ascii=False))
    return report


def _scan_layout(recipe, root: Path, walk: bool) -> tuple[list[Found], list[Skipped], Counter]:
    """Steps [0] walk and [1] layout: the recipe's records, every skipped file or folder, and the non-audio count."""
    if walk and not root.is_dir():
        raise CorpusError(f"raw corpus directory {root} does not exist; expected the {recipe.NAME} layout "
                          f"{recipe.LAYOUT}")
    if not walk and not root.exists():
        raise CorpusError(f"{root} does not exist; the {recipe.NAME} recipe expects {recipe.LAYOUT}")
    skipped: list[Skipped] = []
    files, other = walk_audio(root, skipped) if walk else ([], Counter())
    if walk and not files:
        hint = f" ({len(skipped)} folder(s) unreadable, e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise CorpusError(f"no audio files under {root}{hint}; expected the {recipe.NAME} layout {recipe.LAYOUT}")
    # the recipe accounts for every audio file
    found: list[Found] = []
    for item in recipe.scan(root, files):
        (found if isinstance(item, Found) else skipped).append(item)
    seen = {str(f.path) for f in found} | {s.path for s in skipped}
    skipped += [Skipped(str(p), f"not matched by the {recipe.NAME} layout {recipe.LAYOUT}")
                for p in files if str(p) not in seen]
    return found, skipped, other


def _usable_rows(found: list[Found], results: list, corpus: str, id_root: Path,
                 skipped: list[Skipped]) -> tuple[list[Utterance], dict[str, str]]:
    """Manifest rows of the files whose audio checked out (the others are appended to ``skipped``), and
    ``{speaker: speaker group}``."""
    rows: list[Utterance] = []
    groups: dict[str, str] = {}
    ids: dict[str, str] = {}
    for f, res in zip(found, results):
        reason = res if isinstance(res, str) else _too_short(res[0], res[1])
        if reason:
            skipped.append(Skipped(str(f.path), reason))
            continue
        uid = make_id(corpus, id_root, Path(f.path))
        if uid in ids:
            skipped.append(Skipped(str(f.path), f"duplicate utterance id {uid} (same name as {ids[uid]})"))
            continue
        ids[uid] = str(f.path)
        duration, sr, channels = res
        extra = {"label_std": harmonise(f.label), "sample_rate": sr, "channels": channels, **f.extra}
        rows.append(Utterance(uid, corpus, str(f.path), f.label, f.speaker, round(duration, 4),
                              f.partition or "", extra))
        groups[f.speaker] = f.group or f.speaker
    return rows, groups


def _too_short(duration: float, sr: int) -> str | None:
    """Why a file is too short for one STFT window of the frontend once resampled (``None`` if long enough)."""
    frames = round(duration * sr)
    at_rate = -(-frames * _FRONTEND.sample_rate // sr)  # resampling rounds the length up
    if at_rate >= _FRONTEND.n_fft:
        return None
    return (f"too short: {at_rate} samples at {_FRONTEND.sample_rate} Hz, one STFT window needs {_FRONTEND.n_fft} "
            f"({1000 * _FRONTEND.n_fft / _FRONTEND.sample_rate:g} ms)")


def _check_partition_names(rows: list[Utterance]) -> None:
    """Partitions become shard subdirectories, and a CSV or list file can name them anything."""
    first: dict[str, str] = {}
    for r in rows:
        first.setdefault(r.partition, r.path)
    for part, path in first.items():
        try:
            check_name(part, "partition name")
        except EmonetError as exc:
            raise CorpusError(f"{exc} (e.g. for {path}); rename it in the partition list or use --split speaker") \
                from None


def assign_partitions(rows: list[Utterance], split: str, cfg: PrepareConfig, groups: dict[str, str]) -> None:
    """Fill ``row.partition`` in place according to ``split``."""
    if split == "official":
        missing = [r for r in rows if not r.partition]
        if missing:
            raise CorpusError(f"split=official but {len(missing)} utterance(s) have no partition "
                              f"(e.g. {missing[0].path}); add a partition column or use --split speaker")
        return
    spk_class: dict[str, Counter] = {}
    for r in rows:
        spk_class.setdefault(r.speaker, Counter())[r.label] += 1
    mapping = assign_speakers(spk_class, groups, split, cfg)
    for r in rows:
        r.partition = mapping[r.speaker]


_KINDS = ("permission denied", "cannot read folder", "too short", "not a regular file", "outside expected layout",
          "unknown label code", "not decodable audio", "truncated", "empty file", "cannot access file",
          "cannot open file", "no audio samples", "audio holds NaN", "duplicate utterance id", "excluded by",
          "no label", "not matched by", "not audio-only speech")


def _reason_kind(reason: str) -> str:
    """Bucket of a skip reason for the report's summary (the full reason stays with each file)."""
    for kind in _KINDS:
        if reason.startswith(kind):
            return kind
    return reason.split(":")[0].split(" (")[0]
