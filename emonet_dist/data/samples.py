"""What one shard sample must hold, checked before it is used: the reader and ``emonet shard verify`` share it.

A sample is exactly two members, ``<key>.flac`` (mono FLAC at the shard rate) and ``<key>.json`` (metadata
written by :func:`emonet_dist.data.shards._write_one`). Every way a sample can be malformed is a
:class:`ShardReadError` naming the shard, the member and the reason.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import soundfile as sf

from ..errors import ShardReadError
from .remote import short

MEMBERS = ("flac", "json")
META_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str, "corpus": str, "label": str, "speaker": str, "partition": str, "extra": dict,
    "duration": (int, float), "num_samples": int}
"""Keys every ``.json`` member holds and their types (more keys are allowed)."""
_MAX_JSON = 1 << 20


def bad(shard: str, member: str, reason: str) -> ShardReadError:
    return ShardReadError(f"cannot read shard {short(shard, 120)}: member '{short(member)}': {reason} "
                          "(run `emonet shard verify`)", shard=shard, member=member, reason=reason)


def check_members(sample: dict, shard: str) -> None:
    key = sample["__key__"]
    have = sorted(k for k in sample if k != "__key__")
    if have != sorted(MEMBERS):
        missing = [m for m in MEMBERS if m not in sample]
        extra = [m for m in have if m not in MEMBERS]
        reason = (f"missing member .{missing[0]}" if missing else f"unexpected member .{short(extra[0], 20)}")
        raise bad(shard, f"{key}.{(missing or extra)[0]}", reason)


def _no_constants(name: str):
    raise ValueError(f"{name} is not a number")


def parse_meta(sample: dict, shard: str) -> dict:
    """The checked metadata of a sample (its ``.json`` member)."""
    from .shards import sample_key  # shards imports this module's users; import here to keep layers simple

    member = f"{sample['__key__']}.json"
    data = sample["json"]
    if len(data) > _MAX_JSON:
        raise bad(shard, member, f"metadata is {len(data)} bytes, more than {_MAX_JSON}")
    try:
        meta = json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(shard, member, f"not JSON ({short(str(exc))})") from None
    if not isinstance(meta, dict):
        raise bad(shard, member, "metadata is not a JSON object")
    for k, t in META_TYPES.items():
        v = meta.get(k)
        if not isinstance(v, t) or isinstance(v, bool):
            raise bad(shard, member, f"'{k}' is {type(v).__name__ if k in meta else 'missing'}, "
                                     f"expected {getattr(t, '__name__', 'number')}")
    if not (meta["id"] and meta["label"] and meta["speaker"]):
        raise bad(shard, member, "'id', 'label' and 'speaker' must not be empty")
    if meta["num_samples"] < 0 or not (math.isfinite(meta["duration"]) and meta["duration"] >= 0):
        raise bad(shard, member, "'num_samples' and 'duration' must be >= 0")
    if sample_key(meta["id"]) != sample["__key__"]:
        raise bad(shard, member, f"key does not match the id '{short(meta['id'])}' in the metadata")
    return meta


def decode(sample: dict, meta: dict, shard: str, sample_rate: int, start: int = 0, take: int | None = None
           ) -> np.ndarray:
    """``take`` frames (all when None) from frame ``start`` of the sample's audio as float32 mono ``(T,)``.

    The audio must be at ``sample_rate`` with ``meta["num_samples"]`` frames, and must decode completely."""
    member = f"{sample['__key__']}.flac"
    try:
        with sf.SoundFile(io.BytesIO(sample["flac"])) as f:
            if f.samplerate != sample_rate:
                raise bad(shard, member, f"audio is {f.samplerate} Hz, expected {sample_rate} Hz (re-shard with "
                                         f"shard.sample_rate={sample_rate})")
            if f.frames != meta["num_samples"]:
                raise bad(shard, member, f"audio has {f.frames} frames, metadata says {meta['num_samples']}")
            take = f.frames - start if take is None else take
            if start:
                f.seek(start)
            wave = f.read(take, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise bad(shard, member, f"audio does not decode ({short(str(exc) or type(exc).__name__)})") from None
    if wave.shape[0] != take:
        raise bad(shard, member, f"audio ended after {wave.shape[0]} of {take} frames")
    if not np.isfinite(wave).all():
        raise bad(shard, member, "audio holds NaN or infinite values")
    return wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
