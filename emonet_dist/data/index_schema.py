"""The schema of a corpus's ``index.json``, checked whenever an index is loaded.

An index comes from whoever writes the bucket. Readers take shard paths, sample counts, hashes and labels from
it, so a malformed index must fail here, with the field's dotted position, and not later as a ``KeyError`` in
a data-loader worker. Paths must be ``<partition>/shard-NNNNNN.tar`` under the partition that lists them.
"""

from __future__ import annotations

import re

from ..errors import ShardError
from .remote import check_name, check_relpath, short

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _fail(where: str, key: str, what: str) -> ShardError:
    return ShardError(f"{where}: {key} {what}; the index is corrupt or not an emonet index "
                      "(rewrite it with `emonet shard --force`)")


def _need(cond: bool, where: str, key: str, what: str) -> None:
    if not cond:
        raise _fail(where, key, what)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _strings(x) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) and s for s in x)


def check_index(index, corpus: str, where: str) -> dict:
    """Return ``index`` if it is a usable index of ``corpus``; raise :class:`ShardError` otherwise."""
    _need(isinstance(index, dict), where, "index", "is not a JSON object")
    _need(index.get("format_version") == 1, where, "format_version",
          f"is {short(repr(index.get('format_version')))}, this version reads 1")
    _need(index.get("corpus") == corpus, where, "corpus", f"is '{short(index.get('corpus'))}', expected '{corpus}'")
    for key in ("classes", "speakers"):
        _need(_strings(index.get(key)) and index[key], where, key, "must be a non-empty list of names")
    rate = index.get("sample_rate")
    _need(_is_int(rate) and rate >= 1000, where, "sample_rate", "must be an integer >= 1000 (Hz)")
    classes = set(index["classes"])
    parts = index.get("partitions")
    _need(isinstance(parts, dict) and parts, where, "partitions", "must be a non-empty object")
    for part, info in parts.items():
        check_name(part, f"{where}: partition")
        _need(isinstance(info, dict) and isinstance(info.get("shards"), list), where, f"partitions.{part}",
              "must be an object with a 'shards' list")
        _need(_is_int(info.get("utterances", 0)), where, f"partitions.{part}.utterances", "must be an integer >= 0")
        for i, sh in enumerate(info["shards"]):
            _check_shard(sh, part, classes, where, f"partitions.{part}.shards[{i}]")
    return index


def _check_shard(sh, part: str, classes: set, where: str, key: str) -> None:
    _need(isinstance(sh, dict), where, key, "is not an object")
    check_relpath(sh.get("path"), f"{where}: {key}.path")
    _need(sh["path"].split("/")[0] == part, where, f"{key}.path", f"is not under partition '{part}'")
    _need(_is_int(sh.get("samples")), where, f"{key}.samples", "must be an integer >= 0")
    _need(_is_int(sh.get("bytes")), where, f"{key}.bytes", "must be an integer >= 0")
    _need(isinstance(sh.get("sha256"), str) and bool(_SHA256.match(sh["sha256"])), where, f"{key}.sha256",
          "must be 64 lowercase hex digits")
    labels = sh.get("labels")
    _need(_strings(labels) and len(labels) == sh["samples"], where, f"{key}.labels",
          "must list one class name per sample")
    unknown = sorted(set(labels) - classes)
    _need(not unknown, where, f"{key}.labels", f"holds '{short(unknown[0]) if unknown else ''}', not in classes")
