"""Errors a user can act on.

Every error that reaches the CLI is an :class:`EmonetError`; the CLI prints its message on one line and exits
with status 2 instead of showing a traceback. Messages say what went wrong, where, and how to fix it.
"""


class EmonetError(Exception):
    """Base class for user-facing errors (bad input, bad config, refused operations)."""


class ConfigError(EmonetError):
    """A config key is unknown, has the wrong type, or holds an invalid value."""


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
