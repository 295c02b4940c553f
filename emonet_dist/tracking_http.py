"""Calls to an ``http(s)`` MLflow tracking server, bounded in time.

MLflow's defaults (a 120 s timeout per request, 7 retries with backoff 2) make one call to a server that has gone
away block for about 250 s. Here: a short reachability probe (:func:`probe_tracking_server`) before anything that
needs the server starts, and MLflow's own per-request timeout and retries capped (:data:`HTTP_LIMITS`) for every
call made through :class:`BoundedClient` (what :func:`emonet_dist.tracking.client` returns for ``http(s)`` URIs) or
inside :func:`http_limits`. Local stores (``sqlite:``, files) are not probed.
"""

from __future__ import annotations

import functools
import http.client
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from .errors import EmonetError

PROBE_SECONDS = 5.0
"""How long an http(s) MLflow tracking server has to answer the reachability probe."""
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
"""MLflow's per-request timeout (s) and retries for every call we make (its defaults: 120 s, 7 retries with
backoff 2); values the user set in the environment win."""


def is_http(uri: str | None) -> bool:
    return bool(uri) and urlparse(uri).scheme in ("http", "https")


def server_of(uri: str) -> str:
    """``scheme://host:port`` of a server's URI, for messages (no credentials, no path); a local store's URI as it
    is (cut at 80 characters)."""
    parsed = urlparse(uri)
    if not parsed.netloc:
        return uri[:80]
    return f"{parsed.scheme}://{parsed.netloc.rsplit('@', 1)[-1]}"[:80]


def probe_tracking_server(uri: str, timeout: float = PROBE_SECONDS,
                          hint: str = "start it, fix tracking.uri / MLFLOW_TRACKING_URI, or set "
                                      "tracking.enabled=false") -> None:
    """Fail within ``timeout`` seconds if an ``http(s)`` tracking server does not answer; other stores are local.

    Any HTTP answer (even 401 or 404: auth, a proxy, no ``/health`` route) counts as reachable; a refused
    connection, a timeout or a socket that accepts but never answers does not. ``hint`` ends the error message.
    """
    if not is_http(uri):
        return
    parsed = urlparse(uri)
    try:
        with urllib.request.urlopen(f"{server_of(uri)}{parsed.path.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        raise EmonetError(f"MLflow tracking server {server_of(uri)} does not answer within {timeout:g} s "
                          f"({str(reason)[:60]}); {hint}") from None


def reachable(uri: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether :func:`probe_tracking_server` passes (always True for local stores)."""
    try:
        probe_tracking_server(uri, timeout)
        return True
    except EmonetError:
        return False


class _Limits:
    """The environment holds :data:`HTTP_LIMITS` while at least one bounded call runs in this process (MLflow reads
    them per request), and is restored when the last one ends: counted, so that concurrent calls (the background
    sender and the main thread) cannot restore it under each other."""

    lock = threading.Lock()
    users = 0
    saved: dict[str, str | None] = {}


@contextmanager
def http_limits() -> Iterator[None]:
    """MLflow's HTTP timeout and retries bounded (:data:`HTTP_LIMITS`) for the calls made inside the block."""
    with _Limits.lock:
        if _Limits.users == 0:
            _Limits.saved = {k: os.environ.get(k) for k in HTTP_LIMITS}
            for k, v in HTTP_LIMITS.items():
                os.environ.setdefault(k, v)
        _Limits.users += 1
    try:
        yield
    finally:
        with _Limits.lock:
            _Limits.users -= 1
            if _Limits.users == 0:
                for k, v in _Limits.saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


class BoundedClient:
    """An ``MlflowClient`` whose every method call runs under :func:`http_limits`."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def bounded(*args, **kwargs):
            with http_limits():
                return attr(*args, **kwargs)

        return bounded
