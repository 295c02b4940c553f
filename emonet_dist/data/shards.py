"""``emonet shard``: prepared corpora -> WebDataset tar shards, an index per corpus, and verification.

Layout::

    SHARD_DIR/<corpus>/index.json                       counts, classes, speakers, durations, sha256 per shard
    SHARD_DIR/<corpus>/<partition>/shard-000000.tar      samples: <key>.flac (16 kHz mono) + <key>.json (metadata)
    SHARD_DIR/<corpus>/.progress/                        plan + one record per finished shard (for resuming)

The shard plan (which utterance goes in which shard) is a pure function of the manifest and the shard settings,
so a killed run resumes by redoing only the shards without a finished record; each shard is written to a temp
file and renamed, so a half-written shard is never mistaken for a finished one. Tar members carry a fixed mtime,
so the same input gives byte-identical shards (and checksums).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import as_completed
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import atomic
from ..audio import AudioError, encode_flac, load_mono
from ..config import ShardConfig
from ..corpora.manifest import Utterance, check_speaker_disjoint, iter_manifest
from ..errors import ShardError
from ..names import check_name, inside
from ..pool import worker_pool
from ..progress import Progress
from . import remote
from .index_schema import check_index
from .remote import UrlPolicy, read_bytes, shard_url, short  # noqa: F401 - shard_url, read_bytes: API

log = logging.getLogger(__name__)

INDEX = "index.json"
FORMAT_VERSION = 1
_PCM16_BYTES_PER_S = 2  # per sample; used to estimate shard sizes before encoding


# ---------------------------------------------------------------------------------------------------------------
# paths and URLs
# ---------------------------------------------------------------------------------------------------------------
def load_index(root: str, corpus: str, policy: UrlPolicy = UrlPolicy()) -> dict:
    """The checked ``index.json`` of one corpus under a shard root (local or remote); see
    :mod:`emonet_dist.data.index_schema`."""
    return load_index_with_digest(root, corpus, policy)[0]


def load_index_with_digest(root: str, corpus: str, policy: UrlPolicy = UrlPolicy()) -> tuple[dict, str, str]:
    """``(index, sha256 of the index file's bytes, its URL)``: the digest names exactly the shards a run read
    (the index holds every shard's sha256), e.g. as the digest of an MLflow dataset input."""
    url = shard_url(root, f"{remote.check_name(corpus, 'corpus')}/{INDEX}")
    try:
        data = read_bytes(url, policy)
    except FileNotFoundError:
        raise ShardError(f"no shards for corpus '{corpus}' at {short(url, 120)}; create them with "
                         f"`emonet shard CORPUS_DIR --out {short(root, 120)}`") from None
    except OSError as exc:
        raise ShardError(f"cannot read {short(url, 120)}: {short(str(exc))}") from None
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ShardError(f"{short(url, 120)} is not JSON ({short(str(exc))}); rewrite it with "
                         "`emonet shard --force`") from None
    return check_index(index, corpus, short(url, 120)), hashlib.sha256(data).hexdigest(), url


def list_corpora(root: str | Path) -> list[str]:
    root = Path(root)
    return sorted(p.parent.name for p in root.glob(f"*/{INDEX}"))


def sample_key(uid: str) -> str:
    """Tar-safe WebDataset key: no dots (WebDataset splits extensions at the first dot) and no slashes."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", uid)
    if len(key) > 90:  # ustar member names are short; keep keys unique with a hash suffix
        key = key[:70] + "_" + hashlib.sha1(uid.encode()).hexdigest()[:16]
    return key


# ---------------------------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------------------------
def plan_shards(rows: list[Utterance], cfg: ShardConfig) -> dict[str, list[list[Utterance]]]:
    """``{partition: [[rows of shard 0], [rows of shard 1], ...]}``, deterministic in the manifest and ``cfg``.

    Rows are shuffled with ``cfg.seed`` first so each shard mixes speakers and classes (small corpora have few
    shards, and shuffling at read time only reaches within a window).
    """
    by_part: dict[str, list[Utterance]] = defaultdict(list)
    for r in rows:
        by_part[r.partition].append(r)
    limit = cfg.max_shard_mb * 1e6
    plan = {}
    for part in sorted(by_part):
        items = sorted(by_part[part], key=lambda r: r.id)
        perm = np.random.default_rng([cfg.seed, _stable_int(part)]).permutation(len(items))
        shards, cur, size = [], [], 0.0
        for i in perm:
            est = items[i].duration * cfg.sample_rate * _PCM16_BYTES_PER_S
            if cur and (len(cur) >= cfg.samples_per_shard or size + est > limit):
                shards.append(cur)
                cur, size = [], 0.0
            cur.append(items[i])
            size += est
        if cur:
            shards.append(cur)
        plan[part] = shards
    return plan


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _fingerprint(manifest: Path, cfg: ShardConfig) -> str:
    h = hashlib.sha256(manifest.read_bytes())
    h.update(json.dumps({k: v for k, v in asdict(cfg).items() if k != "jobs"}, sort_keys=True).encode())
    h.update(str(FORMAT_VERSION).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------
def _write_one(task: dict) -> dict:
    """Write one shard (runs in a worker process). Returns its record."""
    import torch
    import webdataset as wds

    torch.set_num_threads(1)  # one shard per process; avoid oversubscribing the cores
    final, tmp = Path(task["final"]), Path(task["final"] + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    sr = task["sample_rate"]
    failed, per_class, durations, labels = [], Counter(), [], []
    n = 0
    with open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0)  # fixed mtime: reruns give identical bytes
        for row in task["rows"]:
            try:
                wave = load_mono(row["path"], sr)
            except AudioError as exc:
                failed.append({"id": row["id"], "path": row["path"], "reason": str(exc)})
                continue
            meta = {k: row[k] for k in ("id", "corpus", "label", "speaker", "partition", "extra")}
            meta["duration"] = round(len(wave) / sr, 4)
            meta["num_samples"] = int(len(wave))
            writer.write({"__key__": sample_key(row["id"]), "flac": encode_flac(wave, sr),
                          "json": json.dumps(meta, ensure_ascii=False).encode()})
            per_class[row["label"]] += 1
            labels.append(row["label"])
            durations.append(meta["duration"])
            n += 1
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    record = {"path": task["rel"], "samples": n, "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp),
              "per_class": dict(per_class), "duration_s": round(float(sum(durations)), 3), "failed": failed,
              "labels": labels}
    _atomic_json(Path(task["record"]), record)
    os.replace(tmp, final)  # the shard becomes visible only once complete and recorded
    return record


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_json(path: Path, obj) -> None:
    atomic.write_text(path, json.dumps(obj, indent=1, ensure_ascii=False))


def shard_corpus(corpus_dir: str | Path, out: str | Path, cfg: ShardConfig = ShardConfig(),
                 force: bool = False) -> dict:
    """Shard one prepared corpus; resumes an interrupted run. Returns the corpus index."""
    t0 = time.time()
    corpus_dir, out = Path(corpus_dir), Path(out)
    manifest = corpus_dir / "manifest.jsonl" if corpus_dir.is_dir() else corpus_dir
    rows = list(iter_manifest(manifest))
    if not rows:
        raise ShardError(f"{manifest} has no utterances; nothing to shard")
    corpora = {r.corpus for r in rows}
    if len(corpora) != 1:
        raise ShardError(f"{manifest} mixes corpora {sorted(corpora)}; shard each corpus from its own manifest")
    corpus = rows[0].corpus  # iter_manifest checked that it is a plain name
    for part in sorted({r.partition for r in rows}):  # partitions become subdirectories of the corpus's
        check_name(part, f"partition of {manifest}")
    report_path = manifest.parent / "report.json"
    allow = json.loads(report_path.read_text()).get("prepare", {}).get("allow_speaker_overlap", False) \
        if report_path.is_file() else False
    check_speaker_disjoint(rows, allow_overlap=allow, where=str(manifest))

    # Everything below is written (and with --force deleted) under this directory, so it must stay inside --out.
    cdir = inside(out, corpus)
    prog_dir = cdir / ".progress"
    fp = _fingerprint(manifest, cfg)
    index_path = cdir / INDEX
    if index_path.is_file() and not force:
        old = json.loads(index_path.read_text())
        if old.get("fingerprint") == fp:
            log.info("[shard %s] up to date (%s)", corpus, index_path)
            return old
    plan_file = prog_dir / "plan.json"
    if plan_file.is_file() and not force:
        old_fp = json.loads(plan_file.read_text()).get("fingerprint")
        if old_fp != fp:
            raise ShardError(f"{cdir} holds shards from a different manifest or shard settings; rerun with "
                             f"--force to rewrite corpus '{corpus}' (other corpora are not touched)")
    if force and cdir.exists():
        import shutil

        shutil.rmtree(cdir)
    _atomic_json(plan_file, {"fingerprint": fp, "manifest": str(manifest), "shard": asdict(cfg)})

    plan = plan_shards(rows, cfg)
    tasks, records = [], {}
    for part, shards in plan.items():
        for i, shard_rows in enumerate(shards):
            rel = f"{part}/shard-{i:06d}.tar"
            final = cdir / rel
            record = prog_dir / f"{part}-{i:06d}.json"
            if final.is_file() and record.is_file():
                records[rel] = json.loads(record.read_text())
                continue
            tasks.append({"rel": rel, "final": str(final), "record": str(record), "sample_rate": cfg.sample_rate,
                          "rows": [_row_dict(r) for r in shard_rows]})
    total = sum(len(shard) for shards in plan.values() for shard in shards)
    done_before = len(records)
    prog = Progress(f"shard {corpus}", total, "utterances")
    prog.update(sum(r["samples"] + len(r["failed"]) for r in records.values()))
    jobs = cfg.jobs or os.cpu_count() or 1
    if tasks:
        if jobs == 1:
            for t in tasks:
                rec = _write_one(t)
                records[t["rel"]] = rec
                prog.update(rec["samples"] + len(rec["failed"]))
        else:
            with worker_pool(min(jobs, len(tasks))) as pool:
                futures = {pool.submit(_write_one, t): t for t in tasks}
                for fut in as_completed(futures):
                    rec = fut.result()
                    records[futures[fut]["rel"]] = rec
                    prog.update(rec["samples"] + len(rec["failed"]))
    prog.close(f"({len(tasks)} shards written, {done_before} reused)")
    index = build_index(corpus, rows, plan, records, cfg, fp)
    index["seconds"] = round(time.time() - t0, 2)
    _atomic_json(index_path, index)
    if index["failed"]:
        log.warning("[shard %s] %d utterance(s) could not be read and are not in the shards; they are listed under "
                    "'failed' in %s", corpus, len(index["failed"]), index_path)
    return index


def _row_dict(r: Utterance) -> dict:
    return {"id": r.id, "corpus": r.corpus, "path": r.path, "label": r.label, "speaker": r.speaker,
            "partition": r.partition, "extra": r.extra}


def build_index(corpus: str, rows: list[Utterance], plan: dict, records: dict, cfg: ShardConfig, fp: str) -> dict:
    """The per-corpus index: what a loader needs without opening a shard."""
    parts = {}
    failed = []
    for part, shards in plan.items():
        recs = [records[f"{part}/shard-{i:06d}.tar"] for i in range(len(shards))]
        per_class: Counter = Counter()
        for r in recs:
            per_class.update(r["per_class"])
            failed += r["failed"]
        durs = [r.duration for r in rows if r.partition == part]
        parts[part] = {
            "utterances": sum(r["samples"] for r in recs),
            "speakers": len({r.speaker for r in rows if r.partition == part}),
            "speaker_ids": sorted({r.speaker for r in rows if r.partition == part}),  # written into every run
            "per_class": dict(sorted(per_class.items())),
            "duration_s": {"total": round(float(sum(durs)), 3), "mean": round(float(np.mean(durs)), 4),
                           "min": round(float(min(durs)), 4), "max": round(float(max(durs)), 4)},
            # labels in sample order let loaders subsample (e.g. class balancing) without opening a shard
            "shards": [{k: r[k] for k in ("path", "samples", "bytes", "sha256", "duration_s", "labels")} for r in recs],
        }
    return {
        "format_version": FORMAT_VERSION,
        "corpus": corpus,
        "sample_rate": cfg.sample_rate,
        "fingerprint": fp,
        "classes": sorted({r.label for r in rows}),
        "speakers": sorted({r.speaker for r in rows}),
        "utterances": sum(p["utterances"] for p in parts.values()),
        "partitions": parts,
        "failed": failed,
        "shard_config": asdict(cfg),
    }


def shard_corpora(corpus_dirs: list[str | Path], out: str | Path, cfg: ShardConfig = ShardConfig(),
                  force: bool = False) -> list[dict]:
    """Shard several corpora; each corpus is independent (adding one never rewrites the others)."""
    return [shard_corpus(d, out, cfg, force) for d in corpus_dirs]


# ---------------------------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------------------------
def verify(root: str | Path, corpora: list[str] | None = None, quick: bool = False) -> tuple[int, list[str]]:
    """Check shards against their index. Returns ``(shards checked, problems)``; see
    :func:`emonet_dist.data.verify.verify` (``quick``: hashes and sizes only)."""
    from .verify import verify as _verify  # the checks import this module (sample keys)

    return _verify(root, corpora, quick)
