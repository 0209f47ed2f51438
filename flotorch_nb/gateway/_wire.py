"""Pure wire format: OpenAI-style error bodies and the JSON/SSE shapes of an answer.

Builders here turn an answer :class:`Plan` into a ``chat.completion`` body or the SSE events of a
``chat.completion.chunk`` stream. They know nothing about HTTP servers, so they are cheap to call
and easy to test.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from ._text import token_pieces

__all__ = [
    "CHAT_PATH",
    "DONE_EVENT",
    "FINGERPRINT",
    "MALFORMED_EVENT",
    "GatewayError",
    "Plan",
    "ToolCallPlan",
    "between_or",
    "call_id",
    "completion_body",
    "error_body",
    "error_type",
    "html_error_page",
    "inband_error_event",
    "models_body",
    "number_or",
    "stream_events",
]

#: Where chat completions live, as on FloTorch's gateway.
CHAT_PATH = "/api/openai/v1/chat/completions"
FINGERPRINT = "flotorch-offline"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """A request the gateway refuses; carries the HTTP status, the OpenAI-style error fields and any
    headers the refusal sends (a 429's ``Retry-After``). Raised anywhere below a route, it becomes
    the error response (``_asgi.refused``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON error body for this refusal."""
        return error_body(self.message, self.type, param=self.param, code=self.code)


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(
    message: str, type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def html_error_page(status: int, message: str) -> str:
    """The kind of HTML page a proxy or load balancer returns instead of JSON."""
    text = escape(message)
    return (
        f"<!DOCTYPE html>\n<html><head><title>{status} Error</title></head>\n"
        f"<body><h1>{status} Error</h1><p>{text}</p><hr><address>flotorch offline gateway</address>"
        "</body></html>\n"
    )


def number_or(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (booleans are not), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def between_or(value: Any, high: float = math.inf) -> float | None:
    """``value`` as a float when it is a finite JSON number from 0 to ``high``, else None (seconds,
    a temperature)."""
    number = number_or(value)
    return number if number is not None and math.isfinite(number) and 0 <= number <= high else None


def call_id(seed: str) -> str:
    """A tool call's id derived from the request (``seed``), so the same request gets the same id."""
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ToolCallPlan:
    """A tool call the model decided to make; ``arguments`` is a JSON string, as on the wire."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything an answer contains, independent of how it is sent (JSON body or SSE chunks)."""

    model: str
    content: str | None
    tool_calls: tuple[ToolCallPlan, ...]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    #: A stream's exact content deltas (``offline/scripted``); None: one delta per token of ``content``.
    pieces: tuple[str, ...] | None = None

    def usage(self) -> dict[str, int]:
        """OpenAI's usage object; total is the sum of prompt and completion tokens."""
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }


def completion_body(plan: Plan, completion_id: str, created: int, *, usage: str = "normal") -> dict[str, Any]:
    """The ``chat.completion`` JSON; ``usage`` is "normal", "omit" or "null" (fault injection)."""
    message: dict[str, Any] = {"role": "assistant", "content": plan.content, "refusal": None}
    if plan.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in plan.tool_calls
        ]
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": plan.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}],
    }
    if usage != "omit":
        body["usage"] = None if usage == "null" else plan.usage()
    return body


def stream_events(
    plan: Plan, completion_id: str, created: int, *, include_usage: bool, usage: str = "normal"
) -> list[str]:
    """Every SSE event of a streamed answer, ``[DONE]`` excluded: role chunk, one chunk per token,
    the finish chunk and, when asked for, the usage chunk.

    Chunks share a pre-serialised prefix so that a long answer costs one small ``json.dumps`` per
    token rather than one per chunk dictionary.
    """
    head = (
        f'data: {{"id":{json.dumps(completion_id)},"object":"chat.completion.chunk","created":{created},'
        f'"model":{json.dumps(plan.model)},"system_fingerprint":"{FINGERPRINT}","choices":'
    )

    def choice(delta: str, finish: str = "null") -> str:
        return f'{head}[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}\n\n'

    events: list[str] = []
    if plan.tool_calls:
        for index, call in enumerate(plan.tool_calls):
            opening = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if index == 0:
                events.append(
                    choice(json.dumps({"role": "assistant", "content": None, "tool_calls": [opening]}))
                )
            else:
                events.append(choice(json.dumps({"tool_calls": [opening]})))
            for piece in token_pieces(call.arguments):
                fragment = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                events.append(choice(json.dumps(fragment)))
    else:
        events.append(choice('{"role":"assistant","content":""}'))
        pieces = plan.pieces if plan.pieces is not None else token_pieces(plan.content or "")
        for piece in pieces:
            events.append(choice(f'{{"content":{json.dumps(piece)}}}'))
    events.append(choice("{}", json.dumps(plan.finish_reason)))
    if include_usage and usage != "omit":
        usage_json = "null" if usage == "null" else json.dumps(plan.usage())
        events.append(f'{head}[],"usage":{usage_json}}}\n\n')
    return events


DONE_EVENT = "data: [DONE]\n\n"
MALFORMED_EVENT = "data: {not json\n\n"


def inband_error_event(message: str) -> str:
    """The error event some gateways send inside a 200 stream when the upstream fails mid-answer."""
    return f"data: {json.dumps(error_body(message, 'server_error'))}\n\n"


def models_body(models: Sequence[str]) -> dict[str, Any]:
    """``GET /models`` in OpenAI's list format."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "flotorch-offline"} for m in models]
    return {"object": "list", "data": data}
