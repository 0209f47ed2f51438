"""Pure: what identifies a request for replay, and its key.

The rule itself (``canonical_request``, ``request_key``, ``endpoint_path``) lives in
``flotorch_nb._request_key``, the leaf that the call pipeline, the answer cache and provenance share;
it is re-exported here for replay's own modules and its public names (the gateway imports the leaf).
What only replay needs stays here: the last user message of a canonical request, which names a file.
No httpx2 here: ``flotorch_nb.replay`` imports this at once and the rest on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._request_key import KNOWN_ENDPOINTS, canonical_request, endpoint_path, request_key

__all__ = ["KNOWN_ENDPOINTS", "canonical_request", "endpoint_path", "last_user_text", "request_key"]


def last_user_text(canonical: Mapping[str, Any]) -> str:
    """The last user message of a canonical chat request ("" when there is none)."""
    body = canonical.get("body")
    messages = body.get("messages") if isinstance(body, Mapping) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # multimodal parts: keep the text ones
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            return str(content or "")
    return ""
