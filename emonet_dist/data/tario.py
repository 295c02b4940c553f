"""A lean reader for WebDataset tar shards (the format WebDataset writes and reads).

Python's ``tarfile`` in stream mode costs about 0.3 ms per member, a quarter of the FLAC decoding it feeds,
so the loader parses the 512-byte tar headers itself: regular members, ustar name prefixes, and GNU/pax long
names. Streams are opened with WebDataset's ``gopen`` (local paths, ``http(s)://``, ``pipe:`` commands), and
members are grouped into samples by the same key rule as ``webdataset.tariterators.base_plus_ext`` (the key is
everything before the first dot of the file name). ``tests/data/test_tario.py`` checks it against WebDataset.
"""

from __future__ import annotations

import re
from typing import BinaryIO, Iterator

_BLOCK = 512
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def _num(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU) for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").strip()
    return int(text, 8) if text else 0


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise EOFError(f"tar stream ended inside a member ({len(data)} of {n} bytes)")
        data += more
    return data


def iter_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of every regular file in a tar stream, in order."""
    long_name: str | None = None
    while True:
        header = stream.read(_BLOCK)
        if len(header) < _BLOCK or header == b"\0" * _BLOCK:
            return
        size = _num(header[124:136])
        kind = header[156:157]
        data = _read_exact(stream, size)
        pad = (-size) % _BLOCK
        if pad:
            _read_exact(stream, pad)
        if kind == b"L":  # GNU long name for the next member
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind in (b"x", b"g"):  # pax header: take its path, ignore the rest
            m = re.search(rb"\d+ path=([^\n]*)\n", data)
            long_name = m.group(1).decode("utf-8") if m else long_name
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None
            continue
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[0:100].rstrip(b"\0").decode("utf-8")
            if header[257:262] == b"ustar":
                prefix = header[345:500].rstrip(b"\0").decode("utf-8")
                if prefix:
                    name = f"{prefix}/{name}"
        yield name, data


def iter_samples(stream: BinaryIO) -> Iterator[dict]:
    """Group consecutive members by key into samples ``{"__key__": key, ext: bytes, ...}``."""
    current: dict | None = None
    for name, data in iter_members(stream):
        m = _KEY.match(name)
        if not m:
            continue
        key, ext = m.group(1), m.group(2).lower()
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key}
        if ext in current:
            raise ValueError(f"{name}: duplicate member in sample {key}")
        current[ext] = data
    if current is not None:
        yield current


def open_shard(url: str) -> BinaryIO:
    import webdataset as wds

    return wds.gopen(url, "rb")
