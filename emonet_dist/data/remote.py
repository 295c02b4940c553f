"""Shard addresses and how they are opened: local paths, ``file://``, ``http(s)://`` and ``pipe:`` templates.

Whoever writes a bucket also writes its ``index.json``, so nothing from an index may reach a shell or escape the
shard root:

* index paths are checked by :func:`check_relpath` (``<partition>/shard-NNNNNN.tar``, no ``..``);
* a ``pipe:`` template is a plain command with arguments, split with :mod:`shlex` into an argv list; ``{path}``
  is substituted inside one argv element and the command runs without a shell. Shell syntax in a template
  (``| || & && ; < > ( ) $ `` ` `` and newlines, quoted or not) is refused with a :class:`ShardError`, because
  without a shell it would silently become an argument. To tolerate a command's exit status, wrap the command
  in a script of your own.
* ``http(s)://`` reads have a connect/read timeout and bounded retries with exponential backoff; a server that
  accepts and never answers is a :class:`ShardError` after ``(retries + 1) * timeout_s`` plus the backoff.
  The same read timeout applies to a ``pipe:`` command's output.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import select
import shlex
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ShardError
from ..names import is_name

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\n\r]")
"""Corpus and partition names as they appear in shard paths."""
SHARD_FILE = re.compile(r"^shard-\d{6}\.tar$")


def short(text: str, n: int = 60) -> str:
    """At most ``n`` characters of a value that came from input, for error messages."""
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


@dataclass(frozen=True)
class UrlPolicy:
    """Network settings of shard reads (``data.url_timeout_s``, ``data.url_retries``)."""

    timeout_s: float = 30.0
    """Connect and per-read timeout of ``http(s)://`` reads and of a ``pipe:`` command's output, in seconds."""
    retries: int = 3
    """Extra attempts to open an ``http(s)://`` address after a timeout, connection error or 5xx."""
    backoff_s: float = 1.0
    """Wait before the first retry; doubles after each."""

    @classmethod
    def from_config(cls, data) -> UrlPolicy:
        return cls(timeout_s=data.url_timeout_s, retries=data.url_retries)


# ---------------------------------------------------------------------------------------------------------------
# addresses
# ---------------------------------------------------------------------------------------------------------------
def check_name(name: str, what: str) -> str:
    if not is_name(name):  # the project's one naming rule (emonet_dist.names), raised as a shard error here
        raise ShardError(f"{what} '{short(name)}' is not a name (letters, digits, _ . and -; no separators); "
                         f"the index or config is corrupt or hostile")
    return name


def check_relpath(path, where: str) -> str:
    """An index shard path: ``<partition>/shard-NNNNNN.tar``, relative, no ``..``, no metacharacters."""
    parts = path.split("/") if isinstance(path, str) else []
    if len(parts) != 2 or not is_name(parts[0]) or not SHARD_FILE.match(parts[1]):
        raise ShardError(f"{where}: shard path '{short(path)}' is not <partition>/shard-NNNNNN.tar; the index is "
                         f"corrupt or hostile (rewrite it with `emonet shard --force`)")
    return path


def pipe_argv(template: str) -> list[str]:
    """The argv of a ``pipe:`` template (with ``{path}`` still in it); refuses shell syntax."""
    body = template[len("pipe:"):]
    bad = _SHELL_SYNTAX.search(body)
    if bad:
        raise ShardError(f"pipe: template '{short(template)}' contains shell syntax {bad.group(0)!r}; a pipe: "
                         "template is one plain command with arguments (it runs without a shell), e.g. "
                         "pipe:aws s3 cp s3://bucket/shards/{path} -")
    try:
        argv = shlex.split(body)
    except ValueError as exc:
        raise ShardError(f"pipe: template '{short(template)}' cannot be split into arguments ({exc})") from None
    if not argv:
        raise ShardError("pipe: template is empty; give a command, e.g. pipe:cat /data/shards/{path}")
    return argv


def shard_url(root: str, relpath: str) -> str:
    """Address of ``relpath`` under a shard root: a directory, an ``http(s)://``/``file://`` prefix, or a
    ``pipe:`` command template containing ``{path}`` (e.g. ``pipe:aws s3 cp s3://b/shards/{path} -``).

    ``relpath`` must be ``<corpus>/index.json`` or ``<corpus>/<partition>/shard-NNNNNN.tar``. For ``pipe:`` the
    result is ``pipe:`` plus the shell-quoted argv (what :func:`open_url` runs, readable in messages)."""
    parts = relpath.split("/")
    check_name(parts[0], "corpus")
    if parts[1:] != ["index.json"]:
        check_relpath("/".join(parts[1:]), f"corpus '{parts[0]}'")
    if root.startswith("pipe:"):
        if root.count("{path}") != 1:
            raise ShardError(f"pipe: template '{short(root)}' must contain {{path}} exactly once")
        argv = [a.replace("{path}", relpath) for a in pipe_argv(root)]
        return "pipe:" + shlex.join(argv)
    if "{path}" in root:
        return root.replace("{path}", relpath)
    if _SCHEME.match(root):
        return root.rstrip("/") + "/" + relpath
    return str(Path(root) / relpath)


# ---------------------------------------------------------------------------------------------------------------
# opening
# ---------------------------------------------------------------------------------------------------------------
def open_url(url: str, policy: UrlPolicy = UrlPolicy()) -> BinaryIO:
    """A readable binary stream of ``url``. Raises :class:`FileNotFoundError` for a missing local file or
    an HTTP 404/410, :class:`ShardError` for any other failure to open."""
    if url.startswith("pipe:"):
        return PipeStream(pipe_argv(url), url, policy.timeout_s)
    if url.startswith(("http://", "https://")):
        return _open_http(url, policy)
    if url.startswith("file://"):
        url = url[len("file://"):]
    elif _SCHEME.match(url):
        raise ShardError(f"unsupported shard address '{short(url)}'; use a path, file://, http(s):// or pipe:")
    return open(url, "rb")


def _open_http(url: str, policy: UrlPolicy):
    delay = policy.backoff_s
    for attempt in range(policy.retries + 1):
        try:
            return urllib.request.urlopen(url, timeout=policy.timeout_s)  # noqa: S310 - scheme checked above
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise FileNotFoundError(url) from None
            if exc.code < 500:  # the request itself is wrong: asking again gives the same answer
                raise ShardError(f"cannot read {short(url, 120)}: HTTP {exc.code}") from None
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt == policy.retries:
            break
        log.warning("reading %s failed (%s); retry %d of %d in %.1f s", url, reason, attempt + 1, policy.retries, delay)
        time.sleep(delay)
        delay *= 2
    raise ShardError(f"cannot read {short(url, 120)} after {policy.retries + 1} attempt(s) with a "
                     f"{policy.timeout_s:g} s timeout ({short(reason)}); check the server or raise "
                     "data.url_timeout_s / data.url_retries")


class PipeStream:
    """stdout of a command run without a shell. ``read`` times out when the command is silent for
    ``timeout_s``; at EOF a nonzero exit status is a :class:`ShardError` quoting the end of its stderr."""

    def __init__(self, argv: list[str], url: str, timeout_s: float):
        self.url, self.timeout_s = url, timeout_s
        self._err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty command cannot block on stderr
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err)
        except OSError as exc:
            self._err.close()
            raise ShardError(f"cannot run {short(url, 120)}: {exc.strerror or exc}") from None
        self._fd = self._proc.stdout.fileno()
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        if self._eof or n == 0:
            return b""
        ready, _, _ = select.select([self._fd], [], [], self.timeout_s)
        if not ready:
            self.close()
            raise ShardError(f"cannot read {short(self.url, 120)}: no output for {self.timeout_s:g} s "
                             "(raise data.url_timeout_s if the command is slow to start)")
        data = os.read(self._fd, n)
        if not data:
            self._eof = True
            self._check_exit()
        return data

    def _check_exit(self) -> None:
        try:
            code = self._proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.close()
            raise ShardError(f"cannot read {short(self.url, 120)}: the command closed its output but did not "
                             f"exit within {self.timeout_s:g} s") from None
        if code != 0:
            self._err.seek(0)
            tail = self._err.read()[-200:].decode("utf-8", "replace").strip().replace("\n", " ")
            raise ShardError(f"cannot read {short(self.url, 120)}: the command exited with status {code}"
                             + (f" ({short(tail, 120)})" if tail else ""))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()  # stopped early (a reader gave up): its status means nothing
            self._proc.wait()
        self._proc.stdout.close()
        self._err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_bytes(url: str, policy: UrlPolicy = UrlPolicy(), limit: int = 64 << 20) -> bytes:
    """A whole (small) file from any shard address; at most ``limit`` bytes."""
    stream = open_url(url, policy)
    try:
        data = _read_upto(stream, limit + 1)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise ShardError(f"cannot read {short(url, 120)}: {short(str(exc) or type(exc).__name__)}") from None
    finally:
        stream.close()
    if len(data) > limit:
        raise ShardError(f"{short(url, 120)} is larger than {limit >> 20} MiB; it is not an index")
    return data


def _read_upto(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(min(1 << 20, n - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)
