"""Names are identifiers, not paths.

Corpus names, partition names, run names and step ids all become directory names (``SHARDS/<corpus>/<partition>/``,
``runs/<run>/``), and some directories get deleted (``emonet shard --force``). A name therefore must be one plain
path component: letters, digits, ``_ . -``, starting with a letter or digit (so never ``.``, ``..``, a hidden
file or an option-looking ``-x``), at most :data:`MAX_LEN` characters. Derived keys such as the model domain
``ravdess:arousal`` are built from checked names and are not names themselves.

:func:`inside` is the second line of defence wherever a path built from input is about to be written or deleted:
it resolves symlinks and ``..`` and refuses anything that is not under the given root.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError

MAX_LEN = 100
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_LEN - 1}}}")
_SHOWN = 40  # characters of a rejected value quoted in an error


def shown(value: object) -> str:
    """A short, printable prefix of an input value for an error message."""
    text = repr(str(value))
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "...'"


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a valid name, else raise a one-line :class:`ConfigError`.

    Args:
        value: the candidate name (anything; non-strings are refused).
        what: what the name is, for the message (e.g. ``"corpus name"``, ``"--name"``).
    """
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    raise ConfigError(f"{what} {shown(value)} is not a valid name: use 1-{MAX_LEN} letters, digits, '_', '.' or '-', "
                      "starting with a letter or digit (no '/', no '..')")


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def inside(root: str | Path, *parts: str) -> Path:
    """``root/parts...`` resolved, refusing it unless it lies strictly inside the resolved ``root``.

    Raises:
        ConfigError: the path escapes ``root`` (an absolute part, ``..``, or a symlink pointing elsewhere).
    """
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path == base or base not in path.parents:
        raise ConfigError(f"{shown('/'.join(map(str, parts)))} does not stay inside {shown(base)}; refusing to "
                          "write or delete there (use a plain name)")
    return path
