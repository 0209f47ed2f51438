"""What the gateway remembers of the requests it received: how often each arrived, and (on request)
what they were, with every secret masked.

Tests of batching, caching and retries ask "was this request sent once, or three times?".
``RequestCounts`` keys arrivals by ``flotorch_nb.replay.request_key`` of the canonical request (method,
endpoint path, JSON body with canonical numbers; not headers, host or key), so a count can be matched
with a recording or an answer cache entry. Counts are a dict of ints, always kept: a kernel's gateway
answering hundreds of turns holds one small entry per distinct request.

``OfflineGateway.requests`` lets client tests assert what was sent (model, messages, headers). The
API key must never be kept: the Authorization header becomes ``Bearer ***`` (or ``***`` if it is not
a Bearer header), other credential headers become ``***``, and the token is masked in the body too,
in case a client put it there.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["RecordedRequest", "RequestCounts", "redacted"]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """What the gateway received: method, path, headers (secrets replaced by ``***``) and JSON body.

    Subscriptable too (``rec["body"]``, ``rec["json"]``, ``rec["headers"]``) for tests written either way.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    request_id: str

    def __getitem__(self, key: str) -> Any:
        return getattr(self, "body" if key == "json" else key)


def redacted(
    method: str, path: str, headers: Iterable[tuple[str, str]], raw: bytes | None, request_id: str
) -> RecordedRequest:
    """A :class:`RecordedRequest` with secrets masked; ``raw`` is decoded as JSON when it is JSON."""
    pairs = [(name.lower(), value) for name, value in headers]
    kept = {name: ("***" if name in _SECRET_HEADERS else value) for name, value in pairs}
    auth = dict(pairs).get("authorization", "")
    if auth:
        kept["authorization"] = "Bearer ***" if auth.lower().startswith("bearer ") else "***"
    token = auth.partition(" ")[2].strip().encode()
    if raw and token and token in raw:  # a client that put its key in the body must not leak it here
        raw = raw.replace(token, b"***")
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse: kept as text
        body = raw.decode("utf-8", "replace") if raw else None
    return RecordedRequest(method, path, kept, body, request_id)


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
