"""Pure: ``offline/scripted``, the model whose user message says exactly what to answer.

Tests of the client pin the protocol (a tool call's arguments, the usage numbers, a 429, a stream cut
after three chunks), not the prose of ``offline/assistant``, which may be reworded at any time. The
last user message of a request for ``offline/scripted`` is a JSON object with one key, ``script``::

    {"script": {
        "content": "Hello",                 # the answer's text ("" by default)
        "chunks": ["Hel", "lo"],            # or: a stream's exact content deltas (content = their join)
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"}],
        "finish_reason": "stop",            # default "tool_calls" with tool calls, else "stop"
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},   # or null: the gateway sends "usage": null
        "delay": 0.2,                       # seconds before the first byte
        "token_delay": 0.01,                # seconds between streamed chunks
        "error": {"status": 429, "message": "slow down", "retry_after": "1"},
        "cut_after": 3                      # break the connection after 3 SSE chunks (non-streamed: mid-JSON)
    }}

A conversation that goes on after the scripted message (a tool loop: the assistant's tool calls, the
tool results, the next request; a validation re-ask: the invalid answer and a user message naming the
errors — the script is the last user message that starts with ``{"script"``) scripts each answer in
turn: ``{"script": {"turns": [first, second]}}``
answers with ``turns[k]``, ``k`` the number of assistant messages after that user message.

Every field is optional. ``arguments`` is an object (sent as its JSON text) or a string sent as is, so a
test can script invalid JSON. Usage fields left out are counted as usual (the prompt's tokens, the
answer's tokens). ``max_tokens``, ``stop``, ``tools`` and ``response_format`` do not shape a scripted
answer: script ``finish_reason: "length"`` to pin a cut one, or JSON ``content``. The gateway's
``latency`` and ``token_delay`` do not apply either: the script alone decides the timing. A script that
is not valid is a 400 whose message and ``param`` name the field (``code: invalid_script``).

The effects that are not an answer (delay, error, cut, null usage) become a :class:`Fault`, so they
behave exactly like injected faults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._config import whole_or
from ._faults import Fault
from ._text import count_tokens
from ._validate import MAX_TOKEN_DELAY, ChatRequest, last_user
from ._wire import GatewayError, Plan, ToolCallPlan, between_or, call_id

__all__ = ["SCRIPTED_MODEL", "Script", "parse_script"]

SCRIPTED_MODEL = "offline/scripted"
_FIELDS = (
    "content",
    "chunks",
    "tool_calls",
    "finish_reason",
    "usage",
    "delay",
    "token_delay",
    "error",
    "cut_after",
)
_FINISH = ("stop", "length", "tool_calls", "content_filter")
_MAX_DELAY = 60.0
_EXAMPLE = '{"script": {"content": "Hello"}}'


@dataclass(frozen=True, slots=True)
class Script:
    """A parsed script: the answer, what goes wrong around it (as a fault), and the stream's pacing."""

    plan: Plan
    fault: Fault | None
    token_delay: float


def parse_script(request: ChatRequest) -> Script:
    """Read the script in the last user message of ``request``; ``GatewayError`` (400) if it is invalid."""
    messages = request.messages
    # The last user message holding a script: a client's own later turns (a validation re-ask naming
    # the errors) are part of the conversation the script's ``turns`` answer, not a new script.
    scripts = (
        i
        for i in range(len(messages) - 1, -1, -1)
        if messages[i].role == "user" and messages[i].text.startswith('{"script"')
    )
    index = next(scripts, last_user(messages))
    where = f"messages[{index}].content"
    if index < 0:
        raise _bad(f"offline/scripted needs a user message holding the script, e.g. {_EXAMPLE}.", "messages")
    try:
        outer = json.loads(request.messages[index].text)
    except ValueError:
        outer = None
    if not isinstance(outer, dict) or set(outer) != {"script"} or not isinstance(outer["script"], dict):
        raise _bad(
            f"offline/scripted answers what the last user message scripts: it must be a JSON object "
            f"with one key 'script' holding an object, e.g. {_EXAMPLE}.",
            where,
        )
    script: dict[str, Any] = outer["script"]
    where += ".script"
    if "turns" in script:
        script, where = _turn(script, request, index, where)
    unknown = sorted(set(script) - set(_FIELDS))
    if unknown:
        raise _bad(f"unknown script field(s) {unknown}; known: {list(_FIELDS)}.", f"{where}.{unknown[0]}")
    content, pieces = _content(script, where)
    calls = _tool_calls(script.get("tool_calls", []), f"{where}.tool_calls", request)
    finish = script.get("finish_reason", "tool_calls" if calls else "stop")
    if finish not in _FINISH:
        raise _bad(
            f"'finish_reason' must be one of {list(_FINISH)}, not {finish!r}.", f"{where}.finish_reason"
        )
    usage = script.get("usage", {})
    if usage is not None and not isinstance(usage, dict):
        raise _bad(
            "'usage' must be an object with prompt_tokens/completion_tokens, or null.", f"{where}.usage"
        )
    counted = count_tokens(content) + sum(count_tokens(c.name) + count_tokens(c.arguments) for c in calls)
    plan = Plan(
        model=request.model,
        content=None if calls and not content else content,
        tool_calls=calls,
        finish_reason=finish,
        prompt_tokens=_count(usage or {}, "prompt_tokens", request.prompt_tokens, f"{where}.usage"),
        completion_tokens=_count(usage or {}, "completion_tokens", counted, f"{where}.usage"),
        pieces=pieces,
    )
    effects: dict[str, Any] = {"null_usage": usage is None}
    effects["delay"] = _seconds(script, "delay", _MAX_DELAY, where)
    effects.update(_error(script.get("error"), f"{where}.error"))
    cut = script.get("cut_after")
    if cut is not None:
        if whole_or(cut) is None:
            raise _bad(f"'cut_after' must be a number of chunks >= 0, not {cut!r}.", f"{where}.cut_after")
        effects["cut_after"] = cut
    fault = Fault(**effects)
    return Script(
        plan, None if fault == Fault() else fault, _seconds(script, "token_delay", MAX_TOKEN_DELAY, where)
    )


def _turn(script: Mapping[str, Any], request: ChatRequest, index: int, where: str) -> tuple[Any, str]:
    """The script of this turn: one per assistant message after the scripted user message."""
    turns = script["turns"]
    if set(script) != {"turns"} or not isinstance(turns, list) or not turns:
        raise _bad("'turns' must be a non-empty list of scripts, alone in the script.", f"{where}.turns")
    turn = sum(1 for message in request.messages[index + 1 :] if message.role == "assistant")
    if turn >= len(turns):
        raise _bad(f"the script has {len(turns)} turn(s); this request is turn {turn + 1}.", f"{where}.turns")
    if not isinstance(turns[turn], dict):
        raise _bad("each turn must be a script object.", f"{where}.turns[{turn}]")
    return turns[turn], f"{where}.turns[{turn}]"


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, f"Invalid script: {message}", param=param, code="invalid_script")


def _content(script: Mapping[str, Any], where: str) -> tuple[str, tuple[str, ...] | None]:
    content, chunks = script.get("content", ""), script.get("chunks")
    if not isinstance(content, str):
        raise _bad(f"'content' must be a string, not {type(content).__name__}.", f"{where}.content")
    if chunks is None:
        return content, None
    if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
        raise _bad("'chunks' must be a list of strings (a stream's content deltas).", f"{where}.chunks")
    if "content" in script and content != "".join(chunks):
        raise _bad("'content' and 'chunks' disagree: give one of them.", f"{where}.chunks")
    return "".join(chunks), tuple(chunks)


def _tool_calls(raw: Any, where: str, request: ChatRequest) -> tuple[ToolCallPlan, ...]:
    if not isinstance(raw, list):
        raise _bad("'tool_calls' must be a list of {name, arguments, id?} objects.", where)
    calls = []
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise _bad("a tool call needs a 'name' string (and 'arguments', an object or a string).", here)
        extra = sorted(set(item) - {"name", "arguments", "id"})
        if extra:
            raise _bad(f"unknown tool call field(s) {extra}; known: ['arguments', 'id', 'name'].", here)
        arguments = item.get("arguments", {})
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        elif not isinstance(arguments, str):
            raise _bad("'arguments' must be an object or a string.", f"{here}.arguments")
        made_id = item.get("id", call_id(f"{len(request.messages)}|{index}|{item['name']}|{arguments}"))
        if not isinstance(made_id, str) or not made_id:
            raise _bad("'id' must be a non-empty string.", f"{here}.id")
        calls.append(ToolCallPlan(made_id, item["name"], arguments))
    return tuple(calls)


def _count(usage: Mapping[str, Any], name: str, default: int, where: str) -> int:
    unknown = sorted(set(usage) - {"prompt_tokens", "completion_tokens"})
    if unknown:
        raise _bad(f"unknown usage field(s) {unknown}; known: ['completion_tokens', 'prompt_tokens'].", where)
    value = whole_or(usage.get(name, default))
    if value is None:
        raise _bad(f"'{name}' must be an integer >= 0, not {usage[name]!r}.", f"{where}.{name}")
    return value


def _seconds(script: Mapping[str, Any], name: str, high: float, where: str) -> float:
    seconds = between_or(script.get(name, 0), high)
    if seconds is None:
        raise _bad(
            f"'{name}' must be seconds between 0 and {high:g}, not {script[name]!r}.", f"{where}.{name}"
        )
    return seconds


def _error(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or whole_or(raw.get("status"), 400) is None or raw["status"] > 599:
        raise _bad(
            "'error' must be an object with an HTTP 'status' from 400 to 599 (and a 'message').", where
        )
    extra = sorted(set(raw) - {"status", "message", "retry_after"})
    if extra:
        raise _bad(f"unknown error field(s) {extra}; known: ['message', 'retry_after', 'status'].", where)
    message, retry_after = raw.get("message"), raw.get("retry_after")
    if message is not None and not isinstance(message, str):
        raise _bad("'message' must be a string.", f"{where}.message")
    if retry_after is not None and not isinstance(retry_after, str):
        raise _bad("'retry_after' must be a string (seconds or an HTTP date).", f"{where}.retry_after")
    message = (
        message if message is not None else f"Scripted error: HTTP {raw['status']} from offline/scripted."
    )
    return {"status": raw["status"], "message": message, "retry_after": retry_after}
