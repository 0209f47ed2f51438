"""Pure validation of a call's messages and parameters, and the JSON body built from them.

Everything here runs before any network I/O, so a typo in a notebook costs no tokens and says
exactly which message or parameter is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._config import check_whole
from ._errors import InvalidRequestError
from ._request_key import CANONICAL, vouches

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

#: name -> (low, high) inclusive bounds of numeric sampling parameters.
_NUMERIC_PARAMS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_INT_PARAMS = ("max_tokens", "max_completion_tokens", "n", "seed")
#: Parameters the client manages itself: passing them through kwargs would break parsing.
_RESERVED = frozenset({"model", "messages", "stream", "stream_options"})
#: Roles whose message needs nothing but a string ``content`` (a tool result also needs its id).
_PLAIN_ROLES = ROLES - {"tool"}

#: The encoder for a body the canonical one (``_request_key.CANONICAL``) cannot write. Made once:
#: ``json.dumps`` with any non-default argument builds a new ``JSONEncoder`` per call, which cost more
#: than encoding a short body. Encoders hold no state between calls: threads and loops share them.
_PLAIN = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _check_content(index: int, role: str, message: Mapping[str, Any]) -> None:
    content = message.get("content")
    if content is None:
        if role == "assistant" and message.get("tool_calls"):
            return
        raise InvalidRequestError(f"messages[{index}] ({role}) has no 'content'")
    if isinstance(content, str):
        return
    if isinstance(content, list) and all(isinstance(p, Mapping) and "type" in p for p in content):
        return
    raise InvalidRequestError(
        f"messages[{index}].content must be a string or a list of content parts, got {type(content).__name__}"
    )


def validate_messages(messages: object) -> list[dict[str, Any]]:
    """Check ``messages`` is a non-empty list of well-formed chat messages; return plain dicts."""
    if type(messages) is list:
        # The common shape, checked with exact types (no ABC checks): plain dicts with a known role
        # other than "tool" and a string content. Anything else takes the full path below, which
        # gives the same result or says what is wrong.
        plain: list[dict[str, Any]] = []
        for message in messages:
            if (
                type(message) is not dict
                or type(message.get("content")) is not str
                or message.get("role") not in _PLAIN_ROLES
            ):
                break
            plain.append(message.copy())
        else:
            if plain:
                return plain
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidRequestError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidRequestError("messages is empty: send at least one {'role': 'user', 'content': ...}")
    checked: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages[{index}] must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequestError(
                f"messages[{index}] has role {role!r}; expected one of {', '.join(sorted(ROLES))}"
            )
        _check_content(index, role, message)
        if role == "tool" and not message.get("tool_call_id"):
            raise InvalidRequestError(f"messages[{index}] is a tool result without 'tool_call_id'")
        checked.append(dict(message))
    return checked


def _check_params(params: Mapping[str, Any]) -> None:
    if not params:  # most calls pass no parameters
        return
    reserved = _RESERVED.intersection(params)
    if reserved:
        raise InvalidRequestError(
            f"{', '.join(sorted(reserved))} cannot be passed as keyword arguments; "
            "use model=/the messages argument, or stream()/astream() for streaming"
        )
    for name, (low, high) in _NUMERIC_PARAMS.items():
        if name not in params or params[name] is None:
            continue
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidRequestError(f"{name} must be a number, got {value!r}")
        if not low <= value <= high:
            raise InvalidRequestError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    for name in _INT_PARAMS:
        value = params.get(name)
        if value is None:
            continue
        if name != "seed":
            check_whole(value, name, 1, InvalidRequestError)
        elif isinstance(value, bool) or not isinstance(value, int):  # any whole number
            raise InvalidRequestError(f"seed must be a whole number, got {value!r:.60}")


def _check_tools(tools: object) -> list[dict[str, Any]]:
    """The tool definitions as plain dicts; a Python function among them becomes its schema here,
    the one place every call path (invoke, streams, batches, comparisons, the tool loop) goes through."""
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes):
        raise InvalidRequestError(f"tools must be a list of tool definitions, got {type(tools).__name__}")
    # A function, or a set of tools such as an MCP server's (``tools._schema.Toolset``, marked so by an
    # attribute: importing the class here would load pydantic on every call).
    if any(
        not isinstance(tool, Mapping) and (callable(tool) or getattr(tool, "flotorch_toolset", False))
        for tool in tools
    ):
        from .tools import wire_tools  # pydantic and the docstring parser: only when functions are given

        tools = wire_tools([tool if not isinstance(tool, Mapping) else dict(tool) for tool in tools])
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not function.get("name"):
            raise InvalidRequestError(
                f"tools[{index}] must look like {{'type': 'function', 'function': {{'name': ..., "
                "'parameters': {...}}}}, or be a Python function"
            )
    return [dict(tool) for tool in tools]


def build_body(
    model: str,
    messages: object,
    *,
    tools: object = None,
    response_format: Mapping[str, Any] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    stream: bool = False,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate a call and build its JSON body; raise ``InvalidRequestError`` on anything malformed."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("model must be a non-empty string")
    params = dict(params) if params else {}
    _check_params(params)
    body: dict[str, Any] = {"model": model, "messages": validate_messages(messages)}
    if tools is not None:
        checked = _check_tools(tools)
        if checked:  # an empty list means "no tools"; OpenAI-style gateways refuse `tools: []`
            body["tools"] = checked
    if response_format is not None:
        body["response_format"] = dict(response_format)
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise InvalidRequestError(f"extra_body must be a dict, got {type(extra_body).__name__}")
    # The seed's FloTorch extension field: always sent (as the released SDK does), never spread.
    body["extra_body"] = dict(extra_body) if extra_body else {}
    if params:
        body.update({k: v for k, v in params.items() if v is not None})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def encode_body(body: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The body as the JSON bytes sent, encoded once, and whether they are the canonical body's own
    text (``_request_key.vouches``): then the request's key is one sha256 over them.

    Compact, key-sorted and UTF-8 (as httpx and the OpenAI SDK send non-ASCII text, and shorter than
    ``\\u`` escapes for most of the world's scripts). A body that cannot be written so is sent as
    the plain encoder writes it: keys of mixed types cannot be sorted, a lone surrogate is not UTF-8.
    A value that is not JSON-serialisable is the caller's mistake.
    """
    try:
        try:
            text = CANONICAL.encode(body)
            return text.encode(), vouches(text)
        except (TypeError, UnicodeEncodeError, RecursionError):  # RecursionError: a circle, or depth
            return _PLAIN.encode(body).encode(), False
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the request is not JSON-serialisable: {exc}") from None
