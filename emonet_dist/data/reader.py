"""Read one whole shard into checked samples, and count the samples a reader skips.

:func:`read_shard` parses every member, checks the members and metadata of the samples a caller keeps, and
checks the shard's sha256 and sample count against ``index.json`` before returning anything. A shard that fails
its hash, its count or its tar structure is never partly used: each kept position then holds the shard's
:class:`ShardReadError` (byte flips in FLAC frames can decode without an error, so without a matching hash no
sample of the shard can be trusted). In an intact shard each malformed sample holds its own error. Network and
disk failures (timeouts, a ``pipe:`` command's exit status) are a plain :class:`ShardError`: they say nothing
about the data, so no policy skips them.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
from collections import Counter
from collections.abc import Callable

from ..errors import ShardError, ShardReadError
from .remote import UrlPolicy, open_url, short
from .samples import bad, check_members, parse_meta
from .tario import iter_samples

log = logging.getLogger(__name__)
_MAX_TRAILER = 1 << 20
"""Bytes accepted after the end-of-archive blocks (tar pads to 10 KiB records)."""


class _Hashing:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, stream):
        self.stream, self.sha, self.nbytes = stream, hashlib.sha256(), 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.sha.update(data)
        self.nbytes += len(data)
        return data


def read_shard(url: str, count: int, sha256: str | None, keep: Callable[[int], bool] = lambda p: True,
               policy: UrlPolicy = UrlPolicy()) -> dict[int, dict | ShardReadError]:
    """``{position: item}`` for the kept positions of one shard that holds ``count`` samples.

    An item is ``{"sample": {"__key__", "flac", "json"}, "meta": dict, "shard": url}`` or the
    :class:`ShardReadError` that makes it unusable. ``sha256`` None skips the hash check."""
    items: dict[int, dict | ShardReadError] = {}
    try:
        _parse(url, count, sha256, keep, policy, items)
    except ShardReadError as exc:
        return {p: exc for p in range(count) if keep(p)}
    return items


def _parse(url: str, count: int, sha256: str | None, keep, policy: UrlPolicy, items: dict) -> None:
    try:
        stream = open_url(url, policy)
    except FileNotFoundError:
        raise ShardError(f"shard {short(url, 120)} is missing; run `emonet shard verify` or re-shard") from None
    except OSError as exc:
        raise ShardError(f"cannot open shard {short(url, 120)}: {short(str(exc))}") from None
    hashed = _Hashing(stream)
    pos = 0
    try:
        for sample in iter_samples(hashed, url):
            if pos >= count:
                raise bad(url, sample["__key__"], f"the shard holds more than the {count} samples index.json lists")
            if keep(pos):
                items[pos] = check_sample(sample, url)
            pos += 1
        trailer = 0
        while chunk := hashed.read(1 << 16):  # drain: the hash covers every byte (and a pipe exits cleanly)
            trailer += len(chunk)
            if trailer > _MAX_TRAILER:
                raise bad(url, "(end of shard)", f"more than {_MAX_TRAILER} bytes follow the end of the archive")
    except (OSError, http.client.HTTPException) as exc:  # the network or disk, not the data
        raise ShardError(f"cannot read shard {short(url, 120)}: {short(str(exc) or type(exc).__name__)}") from None
    finally:
        stream.close()
    if pos < count:
        raise bad(url, "(end of shard)", f"the shard holds {pos} samples, index.json says {count}")
    if sha256 is not None and hashed.sha.hexdigest() != sha256:
        raise bad(url, "(whole shard)", f"sha256 {hashed.sha.hexdigest()[:12]}... does not match index.json "
                                        f"({sha256[:12]}...); the shard is corrupt")


def check_sample(sample: dict, url: str) -> dict | ShardReadError:
    """The checked item of one sample, or its error."""
    try:
        check_members(sample, url)
        return {"sample": sample, "meta": parse_meta(sample, url), "shard": url}
    except ShardReadError as exc:
        return exc


class SkipLog:
    """Samples skipped under ``data.bad_samples=skip``: a count, counts per reason, the first ``keep`` records.

    A record is ``{"shard": url, "member": name, "reason": text}``."""

    def __init__(self, keep: int = 1000):
        self.count, self.keep = 0, keep
        self.reasons: Counter = Counter()
        self.records: list[dict] = []

    def add(self, records: list[dict]) -> None:
        for r in records:
            self.count += 1
            self.reasons[r["reason"]] += 1
            if len(self.records) < self.keep:
                self.records.append(r)

    def __len__(self) -> int:
        return self.count


def skip_record(exc: ShardReadError, logged: set | None = None) -> dict:
    """The record of a skipped sample; logs a warning unless ``(shard, reason)`` is already in ``logged``."""
    if logged is None or (exc.shard, exc.reason) not in logged:
        log.warning("skipping a bad sample (data.bad_samples=skip): %s", exc)
        if logged is not None and len(logged) < 10000:
            logged.add((exc.shard, exc.reason))
    return {"shard": exc.shard, "member": exc.member, "reason": exc.reason}
