"""Pure request validation: an OpenAI-style chat-completion body in, a :class:`ChatRequest` out.

Validation mirrors what OpenAI-compatible gateways reject, and every refusal says how to fix the
request (OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``). Token counts for
the prompt are taken here, once, because the request is already being walked. Schemas (tool
parameters, ``response_format``) asking for more than ``_schema_fill.MAX_SIZE`` items, characters or
properties are refused here (``code: schema_too_large``), before any planning.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._config import whole_or
from ._schema_fill import MAX_SIZE, oversized_keyword
from ._text import count_tokens
from ._wire import GatewayError, between_or

__all__ = ["MAX_TOKEN_DELAY", "ROLES", "ChatRequest", "Message", "Tool", "last_user", "parse_request"]

ROLES = ("system", "developer", "user", "assistant", "tool")
#: A per-request (or scripted) token delay above this is surely a typo, and would hang a benchmark.
MAX_TOKEN_DELAY = 5.0


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message reduced to what the offline models read."""

    role: str
    text: str
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    tool_call_id: str | None = None


def last_user(messages: Sequence[Message]) -> int:
    """The index of the last user message (what the models answer), or -1 when there is none."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), -1)


@dataclass(frozen=True, slots=True)
class Tool:
    """A function tool the model may call."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat-completion request."""

    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # "auto" | "none" | "required" | "function:<name>"
    response_format: Mapping[str, Any] | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    token_delay: float | None = None
    prompt_tokens: int = 0
    parallel_tool_calls: bool = True


# The optional plain fields: what each must be (as the refusal says it), and the test.
_OPTIONS: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("max_completion_tokens", "an integer >= 1", lambda value: whole_or(value, 1) is not None),
    ("max_tokens", "an integer >= 1", lambda value: whole_or(value, 1) is not None),
    ("temperature", "a number between 0 and 2", lambda value: between_or(value, 2) is not None),
    ("top_p", "a number between 0 and 1", lambda value: between_or(value, 1) is not None),
    ("stream", "a boolean", lambda value: isinstance(value, bool)),
    ("parallel_tool_calls", "a boolean", lambda value: isinstance(value, bool)),
    ("stream_options", "an object", lambda value: isinstance(value, Mapping)),
    ("extra_body", "an object", lambda value: isinstance(value, Mapping)),
)


def _bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def _check_size(schema: Any, param: str) -> None:
    """Refuse a schema that asks for more items/characters/properties than the offline models make."""
    found = oversized_keyword(schema)
    if found is not None:
        pointer, size = found
        keyword = pointer.rsplit("/", 1)[1]
        shown = size if isinstance(size, int) else f"{size:g}"
        raise _bad(
            f"Invalid '{param}': {keyword} {shown} at {pointer} is above the offline gateway's limit of "
            f"{MAX_SIZE}. Ask for at most {MAX_SIZE}.",
            param,
            "schema_too_large",
        )


def parse_request(body: Any, models: Collection[str]) -> ChatRequest:
    """Validate a decoded JSON body; raise :class:`GatewayError` (400/404) with a helpful message."""
    if not isinstance(body, Mapping):
        raise _bad(f"The request body must be a JSON object, not {type(body).__name__}.", code=None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad(
            f"You must provide a model parameter (a string); available: {', '.join(models)}.",
            "model",
            "missing_required_parameter",
        )
    messages = _parse_messages(body.get("messages"))
    tools = _parse_tools(body.get("tools"))
    tool_choice = _parse_tool_choice(body.get("tool_choice"), tools)
    response_format = _parse_response_format(body.get("response_format"))
    for name, expected, accepts in _OPTIONS:
        value = body.get(name)
        if value is not None and not accepts(value):
            raise _bad(f"Invalid '{name}': expected {expected}, got {value!r}.", name)
    options = body.get("stream_options")
    if model not in models:
        raise GatewayError(
            404,
            f"The model '{model}' does not exist on the offline gateway; available: {', '.join(models)}",
            param="model",
            code="model_not_found",
        )
    prompt_tokens = sum(_message_tokens(m) for m in messages)
    if tools:
        prompt_tokens += count_tokens(json.dumps(body.get("tools")))
    if response_format is not None and response_format.get("type") != "text":
        prompt_tokens += count_tokens(json.dumps(response_format))
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format
        if response_format and response_format.get("type") != "text"
        else None,
        max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        stop=_parse_stop(body.get("stop")),
        stream=bool(body.get("stream")),
        include_usage=bool(options and options.get("include_usage")),
        token_delay=_parse_token_delay(body),
        prompt_tokens=prompt_tokens,
    )


def _parse_messages(raw: Any) -> tuple[Message, ...]:
    if raw is None:
        raise _bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(raw, list):
        raise _bad(
            f"Invalid 'messages': expected an array of messages, got {type(raw).__name__}.", "messages"
        )
    if not raw:
        raise _bad(
            "Invalid 'messages': empty array. Expected at least one message.", "messages", "empty_array"
        )
    out = []
    for index, item in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(item, Mapping):
            raise _bad(f"Invalid '{where}': expected an object with 'role' and 'content'.", where)
        role = item.get("role")
        if role not in ROLES:
            allowed = ", ".join(f"'{r}'" for r in ROLES)
            raise _bad(
                f"Invalid value for '{where}.role': {role!r}. Supported values are: {allowed}.",
                where + ".role",
            )
        tool_calls = item.get("tool_calls") or ()
        if tool_calls and (role != "assistant" or not isinstance(tool_calls, list)):
            raise _bad(
                f"Invalid '{where}.tool_calls': only assistant messages carry a list of tool calls.", where
            )
        content = item.get("content")
        if content is None and not (role == "assistant" and tool_calls):
            raise _bad(f"Missing '{where}.content': a {role} message needs content.", where + ".content")
        tool_call_id = item.get("tool_call_id")
        if role == "tool" and not isinstance(tool_call_id, str):
            raise _bad(f"Missing '{where}.tool_call_id': a tool message must answer a tool call.", where)
        calls = tuple(c for c in tool_calls if isinstance(c, Mapping))
        out.append(Message(role, _content_text(content, where), calls, tool_call_id))
    return tuple(out)


def _content_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                raise _bad(f"Invalid '{where}.content': every part needs a 'type'.", where + ".content")
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise _bad(f"Invalid '{where}.content': a text part needs a 'text' string.", where)
                texts.append(part["text"])
        return "\n".join(texts)
    raise _bad(f"Invalid '{where}.content': expected a string or an array of parts.", where + ".content")


def _message_tokens(message: Message) -> int:
    tokens = count_tokens(message.text)
    for call in message.tool_calls:
        function = call.get("function")
        if isinstance(function, Mapping):
            tokens += count_tokens(f"{function.get('name', '')} {function.get('arguments', '')}")
    return tokens


def _parse_tools(raw: Any) -> tuple[Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad("Invalid 'tools': expected an array of function tools.", "tools")
    tools = []
    for index, item in enumerate(raw):
        where = f"tools[{index}]"
        function = item.get("function") if isinstance(item, Mapping) else None
        if (
            not isinstance(item, Mapping)
            or item.get("type") != "function"
            or not isinstance(function, Mapping)
        ):
            raise _bad(f'Invalid \'{where}\': expected {{"type": "function", "function": {{...}}}}.', where)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"Missing '{where}.function.name'.", where + ".function.name")
        params = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, Mapping):
            raise _bad(f"Invalid '{where}.function.parameters': expected a JSON schema object.", where)
        _check_size(params, f"{where}.function.parameters")
        description = function.get("description")
        tools.append(Tool(name, description if isinstance(description, str) else "", params))
    return tuple(tools)


def _parse_tool_choice(raw: Any, tools: Sequence[Tool]) -> str:
    if raw is None:
        return "auto" if tools else "none"
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise _bad("tool_choice 'required' needs at least one tool in 'tools'.", "tool_choice")
        return str(raw)
    if (
        isinstance(raw, Mapping)
        and raw.get("type") == "function"
        and isinstance(raw.get("function"), Mapping)
    ):
        name = raw["function"].get("name")
        if not any(tool.name == name for tool in tools):
            known = ", ".join(tool.name for tool in tools) or "none"
            raise _bad(
                f"tool_choice names function {name!r}, which is not in 'tools' (known: {known}).",
                "tool_choice",
            )
        return f"function:{name}"
    raise _bad(
        "Invalid 'tool_choice': expected 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}.',
        "tool_choice",
    )


def _parse_response_format(raw: Any) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind in ("text", "json_object"):
        return raw  # type: ignore[no-any-return]
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise _bad(
                "Invalid 'response_format': type 'json_schema' needs "
                '{"json_schema": {"name": ..., "schema": {...}}}.',
                "response_format.json_schema",
            )
        _check_size(spec["schema"], "response_format.json_schema.schema")
        return raw  # type: ignore[no-any-return]
    raise _bad(
        "Invalid 'response_format': expected type 'text', 'json_object' or 'json_schema'.", "response_format"
    )


def _parse_stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,) if raw else ()
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw) and len(raw) <= 4:
        return tuple(s for s in raw if s)
    raise _bad("Invalid 'stop': expected a string or an array of up to 4 strings.", "stop")


def _parse_token_delay(body: Mapping[str, Any]) -> float | None:
    """``extra_body.offline.token_delay`` (or a top-level ``offline`` object, for merged extra_body)."""
    for holder in (body.get("extra_body"), body):
        offline = holder.get("offline") if isinstance(holder, Mapping) else None
        if isinstance(offline, Mapping) and "token_delay" in offline:
            delay = between_or(offline["token_delay"], MAX_TOKEN_DELAY)
            if delay is None:
                raise _bad(
                    f"Invalid 'offline.token_delay': expected seconds between 0 and {MAX_TOKEN_DELAY:g}.",
                    "extra_body.offline.token_delay",
                )
            return delay
    return None
