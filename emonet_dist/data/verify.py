"""``emonet shard verify``: check that every shard holds what the reader needs, without a traceback for any input.

Full mode checks the index schema, each shard's size and sha256, its tar structure, both members of every
sample, the metadata schema, and decodes every audio member at the index's sample rate (the checks of
:mod:`emonet_dist.data.reader` and :mod:`emonet_dist.data.samples`, plus the labels the index lists).
``quick`` mode checks the index schema, sizes and hashes only. Every problem becomes one line naming the shard,
the member and the reason; nothing but a missing shard root raises.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ShardError, ShardReadError
from ..progress import Progress
from .index_schema import check_index
from .reader import read_shard
from .samples import bad, decode
from .shards import INDEX, list_corpora, sha256_file


def verify(root: str | Path, corpora: list[str] | None = None, quick: bool = False) -> tuple[int, list[str]]:
    """Check every shard of ``corpora`` (default: all) under ``root``. Returns ``(shards checked, problems)``."""
    root = Path(root)
    names = corpora or list_corpora(root)
    if not names:
        raise ShardError(f"no corpus index found under {root} (expected {root}/<corpus>/{INDEX}); "
                         f"is this the --out directory of `emonet shard`?")
    problems: list[str] = []
    indexes = {}
    for name in names:
        index = _load(root, name, problems)
        if index is not None:
            indexes[name] = index
    total = sum(len(p["shards"]) for index in indexes.values() for p in index["partitions"].values())
    prog = Progress("verify", total, "shards")
    checked = 0
    for name, index in indexes.items():
        for info in index["partitions"].values():
            for sh in info["shards"]:
                checked += 1
                prog.update()
                problems += _check_shard(root / name / sh["path"], sh, index, quick)
    prog.close()
    return checked, problems


def _load(root: Path, name: str, problems: list[str]) -> dict | None:
    path = root / name / INDEX
    try:
        if not path.is_file():
            problems.append(f"{name}: {path} is missing (sharding did not finish; rerun `emonet shard`)")
            return None
        return check_index(json.loads(path.read_text(encoding="utf-8")), name, str(path))
    except ShardError as exc:
        problems.append(str(exc))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        problems.append(f"{path}: unreadable or not JSON ({str(exc)[:80]}); rewrite it with `emonet shard --force`")
    return None


def _check_shard(path: Path, sh: dict, index: dict, quick: bool) -> list[str]:
    try:
        if not path.is_file():
            return [f"{path}: missing"]
        if path.stat().st_size != sh["bytes"]:
            return [f"{path}: {path.stat().st_size} bytes, index.json says {sh['bytes']}; the shard is corrupt, "
                    "rerun `emonet shard --force`"]
        if quick:
            digest = sha256_file(path)
            if digest != sh["sha256"]:
                return [f"{path}: sha256 {digest[:12]}... does not match the index ({sh['sha256'][:12]}...); "
                        "the shard is corrupt, rerun `emonet shard --force`"]
            return []
        items = read_shard(str(path), sh["samples"], sh["sha256"])
    except ShardError as exc:
        return [str(exc)]
    except OSError as exc:
        return [f"{path}: unreadable ({exc})"]
    problems, reported = [], set()
    for pos, item in sorted(items.items()):
        if isinstance(item, ShardReadError):
            if str(item) not in reported:  # a corrupt shard gives every position the same error
                reported.add(str(item))
                problems.append(str(item))
            continue
        try:
            _check_item(item, sh["labels"][pos], index)
        except ShardReadError as exc:
            problems.append(str(exc))
    return problems


def _check_item(item: dict, label: str, index: dict) -> None:
    meta, key = item["meta"], item["sample"]["__key__"]
    if meta["label"] != label:
        raise bad(item["shard"], f"{key}.json", f"label '{meta['label'][:60]}' differs from index.json ('{label}')")
    if meta["corpus"] != index["corpus"]:
        raise bad(item["shard"], f"{key}.json", f"corpus '{meta['corpus'][:60]}' is not '{index['corpus']}'")
    rate = index.get("sample_rate", 16000)
    decode(item["sample"], meta, item["shard"], rate if isinstance(rate, int) and rate > 0 else 16000)
