"""How many times each distinct chat request reached the gateway, keyed by replay's request hash.

Tests of batching, caching and retries ask "was this request sent once, or three times?". The key is
``flotorch_nb.replay.request_key`` of the canonical request (method, endpoint path, JSON body with
canonical numbers; not headers, host or key), so a count can be matched with a recording or an answer
cache entry. The counts are a dict of ints, kept whether or not request bodies are recorded: a
kernel's gateway answering hundreds of turns holds one small entry per distinct request.
"""

from __future__ import annotations

import functools
import threading

from ..replay._match import canonical_request, request_key

__all__ = ["RequestCounts", "key_of"]

_CACHEABLE = 8 * 1024  # as for planning (see _app): long chat bodies never repeat, so are not kept


def _key(method: str, target: str, raw: bytes) -> str:
    return request_key(canonical_request(raw, target, method=method))


# A benchmark or a retry sends the same bytes again: hash them once.
_cached_key = functools.lru_cache(maxsize=256)(_key)


def key_of(method: str, path: str, query: bytes, raw: bytes) -> str:
    """The replay key of a received request (``path`` as the client sent it, ``query`` raw)."""
    target = f"{path}?{query.decode('latin-1')}" if query else path
    return _cached_key(method, target, raw) if len(raw) <= _CACHEABLE else _key(method, target, raw)


class RequestCounts:
    """Received requests per replay key; the server thread adds, any thread reads a snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, key: str) -> None:
        """Count one more arrival of the request with this key."""
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> dict[str, int]:
        """A copy: key -> how many times that request was received."""
        with self._lock:
            return dict(self._counts)

    def clear(self) -> int:
        """Forget every count; return how many distinct requests there were."""
        with self._lock:
            count = len(self._counts)
            self._counts.clear()
            return count
