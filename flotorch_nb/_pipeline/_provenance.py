"""Provenance made: the record of where an answer came from, stamped on it where its call finishes.

:func:`stamp` sets ``LLMResponse.provenance`` (an answer read whole or streamed, and an answer-cache
hit), the one place a record is made; every surface reads ``response.provenance``. What a record
holds, and how a notebook keeps it, is ``flotorch_nb._records``.
"""

from __future__ import annotations

import functools
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._records import safe_gateway_url
from .._version import __version__

if TYPE_CHECKING:
    from .._config import Settings
    from .._response import LLMResponse
    from .._transport import Call

__all__ = ["gateway_of", "stamp"]


@functools.lru_cache(maxsize=64)
def gateway_of(base_url: str) -> str | None:
    """``safe_gateway_url`` of a client's base URL, worked out once per URL rather than per answer,
    and interned: one string for a batch's 100,000 records."""
    gateway = safe_gateway_url(base_url)
    return sys.intern(gateway) if gateway else None


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware (UTC), not a naive datetime")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp(
    response: LLMResponse, call: Call, settings: Settings, *, at: datetime | None = None
) -> dict[str, Any]:
    """Set ``response.provenance``: the record of this answer to ``call`` (see the module docstring),
    dated ``at`` (default: now, when the answer arrived or the cache answered). The one place a
    record is made; return it."""
    usage = response.usage
    record = {
        "model": response.model or call.model,
        "gateway": gateway_of(settings.base_url),
        "request_id": response.request_id,
        "timestamp": _utc(at if at is not None else datetime.now(UTC)),
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "total_tokens": usage.total_tokens if usage else None,
        "latency_ms": round(response.latency_s * 1000, 3),
        "source": response.source,
        "flotorch_nb_version": __version__,
        "request_hash": call.request_hash(),
        # What the answer took: calls (validation re-asks, models passed over) and the models passed
        # over as [model, reason]; the recovery layer (_recover) updates both on the final answer.
        "attempts": response.attempts,
        "fallbacks": [list(skipped) for skipped in response.fallbacks],
    }
    response.provenance = record
    return record
