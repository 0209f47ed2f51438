"""``StoredAnswer``: an ``LLMResponse`` as the answer cache keeps it, compact and rebuilt on demand.

A batch keeps one per item and the cache one per row, so this form matters at 100,000 items: the raw
answer as JSON bytes (the body as it arrived, else ``raw_response`` encoded as ASCII; a cache row
writes it as ASCII, so any text that came in stays writable) plus the few typed fields a response
needs; ``to_response()`` rebuilds an equal ``LLMResponse`` with the same pure parser a live
answer goes through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._records import FIELDS
from ._response import LLMResponse, ResponseInfo, Skipped, Source, ToolCall, Usage, build_response

__all__ = ["StoredAnswer"]

#: One encoder for every stored answer (json.dumps with options builds a new one per call). ASCII
#: escapes keep any text writable, a lone surrogate from a badly encoded file name included.
_RAW = json.JSONEncoder(separators=(",", ":"))


@dataclass(slots=True, eq=False)
class StoredAnswer:
    """An ``LLMResponse`` kept compactly: its text, a few typed fields, and the raw answer as JSON bytes.

    ``to_response()`` rebuilds an equal ``LLMResponse`` (metadata and ``raw_response`` included) with
    the same pure function the client uses, so nothing about an answer is lost by keeping it this way.
    """

    content: str
    raw: bytes
    finish_reason: str | None
    tool_calls: tuple[tuple[str, str, str], ...]
    latency_s: float
    gateway_latency_ms: float | None
    request_id: str | None
    offline: bool
    source: Source
    model: str | None
    #: (input, output, total) tokens as the gateway counted them, or None when it did not say.
    usage: tuple[int, int, int] | None
    parsed: Any = None
    #: The answer's provenance record as its values in ``_provenance.FIELDS`` order: a tuple is a
    #: quarter of the dict at 100,000 items. Not written to a cache row, whose hits are stamped afresh.
    record: tuple[Any, ...] | None = None
    #: ``LLMResponse.summed_usage`` as (input, output, total), for an answer that took several calls
    #: (validation re-asks, fallbacks; their count and the models passed over are in ``record``).
    summed: tuple[int, int, int] | None = None

    @property
    def provenance(self) -> dict[str, Any] | None:
        """The answer's provenance record (``LLMResponse.provenance``), or None."""
        return None if self.record is None else dict(zip(FIELDS, self.record, strict=True))

    @provenance.setter
    def provenance(self, record: dict[str, Any] | None) -> None:
        self.record = None if record is None else tuple(map(record.get, FIELDS))

    @classmethod
    def of(cls, response: LLMResponse) -> StoredAnswer:
        """The compact form of ``response``."""
        raw = response.raw_body  # the body it was parsed from: no second encoding of raw_response
        if raw is None:
            raw = _RAW.encode(response.metadata.get("raw_response") or {}).encode("ascii")
        usage = response.usage
        record = response.provenance
        summed = response.summed_usage
        return cls(
            content=response.content,
            raw=raw,
            finish_reason=response.finish_reason,
            tool_calls=tuple((c.id, c.name, c.arguments) for c in response.tool_calls)
            if response.tool_calls
            else (),
            latency_s=response.latency_s,
            gateway_latency_ms=response.gateway_latency_ms,
            request_id=response.request_id,
            offline=response.offline,
            source=response.source,
            model=response.model,
            usage=(usage.input_tokens, usage.output_tokens, usage.total_tokens) if usage else None,
            parsed=response.parsed,
            record=None if record is None else tuple(map(record.get, FIELDS)),
            summed=(summed.input_tokens, summed.output_tokens, summed.total_tokens) if summed else None,
        )

    def to_response(self) -> LLMResponse:
        """A new ``LLMResponse`` equal to the one this was made from."""
        info = ResponseInfo(self.latency_s, self.request_id, self.gateway_latency_ms, self.offline)
        response = build_response(
            json.loads(self.raw),
            content=self.content,
            tool_calls=[ToolCall(*call) for call in self.tool_calls],
            finish_reason=self.finish_reason,
            info=info,
        )
        response.source = self.source
        response.parsed = self.parsed
        record = response.provenance = self.provenance
        if record is not None and record.get("attempts"):  # what it took, when it took more than one call
            response.attempts = record["attempts"]
            response.fallbacks = [Skipped(*skipped) for skipped in record.get("fallbacks") or ()]
        if self.summed is not None:
            response.summed_usage = Usage(*self.summed)
        return response

    def to_json(self) -> str:
        """The row text: everything but ``parsed``, ``source`` (a row's answer is always a hit) and
        ``provenance`` (a hit gets its own)."""
        return json.dumps(
            {
                "content": self.content,
                "raw": json.loads(self.raw),
                "finish_reason": self.finish_reason,
                "tool_calls": [list(call) for call in self.tool_calls],
                "latency_s": self.latency_s,
                "gateway_latency_ms": self.gateway_latency_ms,
                "request_id": self.request_id,
                "offline": self.offline,
            },
            separators=(",", ":"),  # ASCII escapes: any text that came in stays writable
        )

    @classmethod
    def from_json(cls, text: str, *, latency_s: float) -> StoredAnswer:
        """A row read back as a cache hit (``latency_s``: how long the lookup took)."""
        data = json.loads(text)
        raw = data["raw"] if isinstance(data.get("raw"), Mapping) else {}
        probe = build_response(
            raw, content="", tool_calls=[], finish_reason=None, info=ResponseInfo(0.0)
        )  # the pure parser reads usage and model exactly as for a live answer
        usage = probe.usage
        return cls(
            content=str(data["content"]),
            raw=_RAW.encode(raw).encode("ascii"),
            finish_reason=data.get("finish_reason"),
            tool_calls=tuple((str(a), str(b), str(c)) for a, b, c in data.get("tool_calls") or ()),
            latency_s=latency_s,
            gateway_latency_ms=data.get("gateway_latency_ms"),
            request_id=data.get("request_id"),
            offline=bool(data.get("offline")),
            source="cache",
            model=probe.model,
            usage=(usage.input_tokens, usage.output_tokens, usage.total_tokens) if usage else None,
        )


# -- keys ------------------------------------------------------------------------------------------
