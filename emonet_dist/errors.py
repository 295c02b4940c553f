"""Errors a user can act on.

Every error that reaches the CLI is an :class:`EmonetError`; the CLI prints its message on one line and exits
with status 2 instead of showing a traceback. Messages say what went wrong, where, and how to fix it.
"""

import itertools
import reprlib
from collections.abc import Iterable


class EmonetError(Exception):
    """Base class for user-facing errors (bad input, bad config, refused operations)."""


class ConfigError(EmonetError):
    """A config key is unknown, has the wrong type, or holds an invalid value.

    ``key`` is set when the message starts with the name of the field it is about, so that the loader can
    replace that name with the full dotted key (``batch_size ...`` -> ``data.batch_size ...``).
    """

    def __init__(self, message: str = "", key: str = "") -> None:
        super().__init__(message)
        self.key = key


class CorpusError(EmonetError):
    """A corpus directory, manifest or recipe input cannot be used as given."""


class SpeakerLeakageError(CorpusError):
    """Two partitions share a speaker, which would inflate every reported score."""


class ShardError(EmonetError):
    """A shard set is missing, inconsistent or corrupt."""


class ShardReadError(ShardError):
    """One sample of a shard (or the rest of a shard) cannot be read.

    ``shard``, ``member`` and ``reason`` say which and why, so a reader that skips bad samples can count them.
    The message is the only positional argument: torch's DataLoader re-creates worker errors from it alone.
    """

    def __init__(self, message: str, shard: str = "", member: str = "", reason: str = ""):
        super().__init__(message)
        self.shard, self.member, self.reason = shard, member, reason


def short(value: object, n: int = 60) -> str:
    """At most about ``n`` characters of ``value`` for an error message, on one line, ``...`` marking a cut.

    Strings are quoted (``repr``) so that empty and blank values stay visible; an exception gives its message
    (or its type when the message is empty). Values that came from input can be huge (a 10,000-character
    string, a YAML alias bomb that expands to 10**8 items): only a bounded prefix is ever formatted, so this
    is cheap for any size.
    """
    if isinstance(value, BaseException):
        text = " ".join(str(value).split()) or type(value).__name__
    elif isinstance(value, str):
        text = repr(value[:n]) + ("..." if len(value) > n else "")
    else:
        text = " ".join(_REPR.repr(value).split())
    return text if len(text) <= n + 5 else text[:n] + "..."


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # repr that stops after a few items and levels (a nested value never expands fully)
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, 40, 40, 40
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 4
    return r


_REPR = _bounded_repr()


def short_name(value: object) -> str:
    """A name from input (a key, an id, a group) for a message: as is when short and printable, else ``short``."""
    return value if isinstance(value, str) and len(value) <= 60 and value.isprintable() else short(value)


def short_list(values: Iterable, n: int = 8) -> str:
    """Up to ``n`` names of ``values``, comma-separated (each through :func:`short_name`), ``...`` if more."""
    items = list(itertools.islice(values, n + 1))
    return ", ".join(short_name(v) for v in items[:n]) + (", ..." if len(items) > n else "")
