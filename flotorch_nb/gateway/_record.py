"""Pure: what the gateway remembers of a request, with every secret masked.

``OfflineGateway.requests`` lets client tests assert what was sent (model, messages, headers). The
API key must never be kept: the Authorization header becomes ``Bearer ***`` (or ``***`` if it is not
a Bearer header), other credential headers become ``***``, and the token is masked in the body too,
in case a client put it there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["RecordedRequest", "redacted"]

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

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access with a default."""
        try:
            return self[key]
        except AttributeError:
            return default


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
