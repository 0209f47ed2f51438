"""``LLMResponse`` and the pure mapping from a gateway answer to a result or a typed error.

The seed's fields (``content``, ``metadata`` with ``inputTokens``/``outputTokens``/``totalTokens``/
``raw_response``) are kept exactly; the typed conveniences beside them (tool calls, finish reason,
latency, offline mark, the answer validated into a ``response_format`` class) are additive. Nothing
here does I/O, so the sync, async and streaming paths all end in the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ._errors import APIStatusError, ResponseError, StructuredOutputError, status_error
from ._text import one_line

if TYPE_CHECKING:
    from datetime import datetime

    from ._render import Footer

OFFLINE_HEADER = "x-flotorch-gateway"
OFFLINE_MODEL_PREFIX = "offline/"

#: Where an answer came from: a real gateway, the embedded offline one, a replay file, the answer cache.
Source = Literal["live", "offline", "replay", "cache"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the gateway reported for one call."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


class Skipped(NamedTuple):
    """A model that was asked and passed over for the next of the client's ``fallbacks``, and why:
    ``rate_limited``, ``server_error``, ``timeout``, ``connection_error``, ``context_length``,
    ``empty_answer`` or ``validation_failed`` (see ``flotorch_nb._pipeline._recover``)."""

    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is the model's raw JSON text."""

    id: str
    name: str
    arguments: str

    @property
    def args(self) -> dict[str, Any]:
        """The arguments parsed as a JSON object (a ``ResponseError`` if the model sent bad JSON)."""
        try:
            value = json.loads(self.arguments or "{}")
        except RecursionError:
            raise ResponseError(f"tool call {self.name!r} has arguments nested too deeply to parse") from None
        except json.JSONDecodeError as exc:
            raise ResponseError(f"tool call {self.name!r} has arguments that are not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ResponseError(f"tool call {self.name!r} has arguments that are not a JSON object")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI wire form, for sending the assistant's turn back in the next request."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What the transport learned besides the body: timing and the gateway's headers."""

    latency_s: float
    request_id: str | None = None
    gateway_latency_ms: float | None = None
    offline_header: bool = False


@dataclass(slots=True, eq=False)
class LLMResponse:
    """The result of one chat completion: the seed's ``content`` and ``metadata``, plus typed extras."""

    content: str
    metadata: dict[str, Any]
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    id: str | None = None
    usage: Usage | None = None
    latency_s: float = 0.0
    gateway_latency_ms: float | None = None
    request_id: str | None = None
    offline: bool = False
    #: The 2xx body as it arrived, whose parse is ``metadata["raw_response"]`` (None for a stream, a
    #: cache hit or a rebuilt answer): a batch item keeps these bytes rather than encode that again.
    raw_body: bytes | None = field(default=None, repr=False)
    parsed: Any = None
    #: Where the answer came from: ``live``, ``offline`` (the embedded gateway), ``replay`` or ``cache``.
    source: Source = "live"
    #: Where this answer came from, as the plain record a notebook saves (``_provenance``: model,
    #: gateway, request id, timestamp, tokens, latency, source, version, request hash). Set where the
    #: call finishes, cache hits included; surfaces read it rather than build their own.
    provenance: dict[str, Any] | None = None
    #: How many calls this answer took: 1, plus each validation re-ask (``validation_retries=``) and
    #: each call to a model passed over for a fallback. Every one was counted by hooks and budgets.
    attempts: int = 1
    #: Set by the recovery layer; read ``usage_total``.
    summed_usage: Usage | None = field(default=None, repr=False)
    #: The models asked before the one that answered, each with why it was passed over (empty when
    #: the first model answered): ``[Skipped(model, reason), ...]``.
    fallbacks: list[Skipped] = field(default_factory=list)

    @property
    def usage_total(self) -> Usage | None:
        """The usage of every call this answer took, summed (``usage`` itself when it took one)."""
        return self.summed_usage if self.summed_usage is not None else self.usage

    @property
    def created_at(self) -> datetime | None:
        """When the answer arrived (UTC, to the millisecond), from its provenance record."""
        from datetime import datetime

        stamp = self.provenance.get("timestamp") if self.provenance else None
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if isinstance(stamp, str) else None

    @property
    def request_hash(self) -> str | None:
        """The canonical hash of the request that asked for this answer (the key replay files use)."""
        digest = self.provenance.get("request_hash") if self.provenance else None
        return digest if isinstance(digest, str) else None

    def assistant_message(self) -> dict[str, Any]:
        """The assistant turn to append to ``messages`` (tool calls included) to continue the chat."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        elif message["content"] is None:
            message["content"] = ""
        return message

    def __repr__(self) -> str:
        content = self.content if len(self.content) <= 60 else self.content[:57] + "..."
        tokens = self.usage.total_tokens if self.usage else "unknown"
        return f"LLMResponse(content={content!r}, model={self.model!r}, total_tokens={tokens})"

    def __str__(self) -> str:
        return self.content

    def footer(self, default_model: str = "unknown model") -> Footer:
        """The line shown under this answer (one place, so the magics, the chat panel, exports and this
        display always show the same footer)."""
        from ._render import Footer

        usage = self.usage
        return Footer(
            model=self.model or default_model,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
            usage_known=usage is not None,
            latency_s=self.latency_s,
            gateway_latency_ms=self.gateway_latency_ms,
            offline=self.offline,
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Plain data for any frontend: sanitized HTML (content as Markdown) and plain text, each with
        a footer. Rendering is imported here so that ``import flotorch_nb`` stays light."""
        return self.mimebundle()

    def mimebundle(self, footer: Footer | None = None) -> dict[str, str]:
        """What ``_repr_mimebundle_`` shows, with another footer if given (``%%flotorch`` adds the
        cost to it). Terminal IPython prints the plain text as ``Out[n]``: its control characters are
        shown as symbols (``_text.terminal_safe``), never obeyed; ``content`` keeps them."""
        from . import _render
        from ._text import terminal_safe

        footer = footer if footer is not None else self.footer()
        text = self.content
        if self.tool_calls:
            calls = "\n".join(f"→ tool call {c.name}({c.arguments})" for c in self.tool_calls)
            text = f"{text}\n{calls}" if text else calls
        return {
            "text/plain": terminal_safe(f"{text}\n\n{_render.footer_text(footer)}"),
            "text/html": _render.answer_html(text, _render.footer_html(footer)),
        }


def _count(value: object) -> int | None:
    # bool is an int subclass: `true` is not a token count, and neither is a negative number.
    if type(value) is int:  # what JSON gives: no subclass checks needed
        return value if value >= 0 else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _usage(raw: object) -> Usage | None:
    if not isinstance(raw, dict) and not isinstance(raw, Mapping):  # dict first: no ABC check
        return None
    prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    total = _count(raw.get("total_tokens"))
    return Usage(prompt, completion, total if total is not None else prompt + completion)


def _text(content: object) -> str:
    if type(content) is str:
        return content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some providers answer with content parts
        return "".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    raise ResponseError(f"the message content is a {type(content).__name__}, not text")


def _tool_calls(raw: object) -> list[ToolCall]:
    if not raw:
        return []
    if not isinstance(raw, list):
        raise ResponseError("'tool_calls' in the answer is not a list")
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ResponseError(f"a tool call in the answer has no function name: {item!r:.200}")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(ToolCall(str(item.get("id") or ""), function["name"], arguments))
    return calls


def build_response(
    raw: Mapping[str, Any],
    *,
    content: str,
    tool_calls: list[ToolCall],
    finish_reason: str | None,
    info: ResponseInfo,
) -> LLMResponse:
    """Assemble an ``LLMResponse`` (shared by the whole-body and the streaming paths)."""
    return _assemble(dict(raw), content, tool_calls, finish_reason, info)


def _assemble(
    raw: dict[str, Any], content: str, tool_calls: list[ToolCall], finish_reason: object, info: ResponseInfo
) -> LLMResponse:
    """``build_response`` for a ``raw`` the response may keep as its ``raw_response`` (not copied)."""
    usage = _usage(raw.get("usage"))
    finish_reason = finish_reason if isinstance(finish_reason, str) else None
    model = raw.get("model")
    if not isinstance(model, str):
        model = None
    offline = info.offline_header or bool(model and model.startswith(OFFLINE_MODEL_PREFIX))
    response_id = raw.get("id")
    metadata: dict[str, Any] = {
        "inputTokens": usage.input_tokens if usage else 0,
        "outputTokens": usage.output_tokens if usage else 0,
        "totalTokens": usage.total_tokens if usage else 0,
        "usageKnown": usage is not None,
        "model": model,
        "finishReason": finish_reason,
        "latencyMs": round(info.latency_s * 1000, 3),
        "gatewayLatencyMs": info.gateway_latency_ms,
        "requestId": info.request_id,
        "offline": offline,
        "raw_response": raw,
    }
    return LLMResponse(
        content=content,
        metadata=metadata,
        tool_calls=tool_calls,
        finish_reason=finish_reason,
        model=model,
        id=response_id if isinstance(response_id, str) else None,
        usage=usage,
        latency_s=info.latency_s,
        gateway_latency_ms=info.gateway_latency_ms,
        request_id=info.request_id,
        offline=offline,
    )


def parse_completion(body: bytes, info: ResponseInfo) -> LLMResponse:
    """Turn a 2xx body into an ``LLMResponse``, or a ``ResponseError`` that says what was wrong."""
    try:
        raw = _loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ResponseError(
            f"the gateway answered 2xx with a body that is not JSON: {excerpt(body)!r}"
            + (f" (request id {info.request_id})" if info.request_id else "")
        ) from None
    # JSON objects parse to dicts (never another Mapping), so exact dict checks suffice here.
    if not isinstance(raw, dict):
        raise ResponseError(f"the gateway's answer is JSON but not an object: {excerpt(body)!r}")
    if "error" in raw and "choices" not in raw:
        raise ResponseError(f"the gateway answered 2xx with an error: {error_message(raw)}")
    choices = raw.get("choices")
    if not isinstance(choices, list):
        raise ResponseError("the gateway's answer has no 'choices' list")
    if not choices:
        raise ResponseError("the gateway's answer has an empty 'choices' list (no completion)")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ResponseError("the gateway's answer has no 'message' in choices[0]")
    tool_calls = message.get("tool_calls")
    response = _assemble(  # ``raw`` is ours alone: the response keeps it without a copy
        raw,
        _text(message.get("content")),
        _tool_calls(tool_calls) if tool_calls else [],
        choice.get("finish_reason"),
        info,
    )
    response.raw_body = body
    return response


#: ``json.loads``' own decoder, called directly for the usual body (see ``_loads``).
_DECODER = json.JSONDecoder()


def _loads(body: bytes) -> Any:
    """``json.loads(body)``, faster for what a gateway sends: UTF-8 that starts with ``{``.

    That skips ``json.loads``' encoding detection and whitespace scans. Anything the fast path does
    not fully accept (other encodings, surrounding whitespace, bad JSON) goes to ``json.loads``
    itself, so the result and the errors are exactly its.
    """
    if body[:1] == b"{":
        try:
            text = body.decode()
            raw, end = _DECODER.raw_decode(text)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            pass
        else:
            if end == len(text):
                return raw
    return json.loads(body)


def excerpt(body: bytes | str, limit: int = 200) -> str:
    """A short plain-text excerpt of a body: an HTML error page becomes its visible text, not markup."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if "<" in text and ">" in text:
        import re

        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.I | re.S)
        text = re.sub(r"<[^>]+>", " ", text)
        if title and title.group(1).strip() and title.group(1).strip() not in text[:limit]:
            text = title.group(1) + " " + text
    return one_line(text, limit)


def error_message(raw: object) -> str:
    """The gateway's own words from an OpenAI-style (or looser) JSON error body."""
    if isinstance(raw, Mapping):
        error = raw.get("error", raw)
        if isinstance(error, Mapping):
            for key in ("message", "detail", "error", "msg"):
                value = error.get(key)
                if isinstance(value, str) and value:
                    return value
            if isinstance(raw.get("detail"), str):
                return str(raw["detail"])
        elif isinstance(error, str) and error:
            return error
    return excerpt(json.dumps(raw))


def parse_error(
    status_code: int, body: bytes, request_id: str | None, retry_after: float | None
) -> APIStatusError:
    """Map a 4xx/5xx answer to the typed error naming the status and the gateway's message."""
    try:
        raw: Any = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raw = None
    message = error_message(raw) if raw is not None else (excerpt(body) or "(empty body)")
    return status_error(status_code, message, request_id=request_id, body=raw, retry_after=retry_after)


def parse_structured(model_class: type[Any], content: str) -> Any:
    """Validate the model's JSON answer into ``model_class``; say clearly when it does not fit."""
    from pydantic import ValidationError

    try:
        return model_class.model_validate_json(content)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise StructuredOutputError(
            f"the model's answer does not validate against {model_class.__name__}: {problems}",
            content=content,
            problems=problems,
        ) from None
