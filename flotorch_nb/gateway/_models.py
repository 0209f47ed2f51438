"""Pure: the offline models. A validated request goes in, an answer :class:`Plan` comes out.

``PROFILES`` lists them (``OFFLINE_MODELS`` is their names), each with what it answers and how fast:

- ``offline/assistant`` (the default) answers in text (see ``_assistant``), calls the best-matching
  tool with arguments valid against the tool's JSON schema, answers from tool results, and fills
  ``response_format`` schemas (JSON mode honours the keys the prompt names).
- ``offline/echo`` repeats the last user message verbatim, which lets tests send arbitrary payloads
  (markup, XSS strings, long text) back through the whole client.
- ``offline/concise`` is the assistant cut to its core (one sentence, three list items, the code
  block; see ``_phrasing``): fewer tokens, and half the gateway's latency and token delay.
- ``offline/verbose`` is the assistant plus context and caveats: more tokens, 1.5x the latency and
  twice the token delay, like a larger, slower model.
- ``offline/scripted`` answers exactly what its last user message scripts (content, tool calls,
  usage, delays, an error, a cut stream; see ``_scripted``), so tests pin the protocol, not prose.

Timing factors scale the gateway's ``latency`` (before the first byte) and ``token_delay`` (between
streamed chunks); both default to 0, so tests and benchmarks get instant answers from every model,
and a comparison started with, say, ``OfflineGateway(latency=0.2, token_delay=0.01)`` sees the models
differ as real ones do.

Same request, same plan: nothing here reads the clock, randomness or the network; even tool-call ids
are derived from the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._assistant import answer, tool_followup
from ._json_mode import json_object
from ._judge import grade_of, graded_json, graded_text
from ._phrasing import concise, verbose
from ._schema_fill import SchemaTooLargeError, fill_schema
from ._scripted import SCRIPTED_MODEL
from ._text import Hints, count_tokens, hints_from, truncate_tokens
from ._tool_calls import ToolCallAsk, phase_of, planned_calls
from ._validate import ChatRequest, Message, last_user
from ._wire import GatewayError, Plan, ToolCallPlan, call_id

__all__ = ["DEFAULT_MODEL", "OFFLINE_MODELS", "PROFILES", "ModelProfile", "plan_completion", "profile"]


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """One offline model: its name, what it does, and its timing relative to the gateway's settings."""

    name: str
    description: str
    latency_factor: float = 1.0
    token_delay_factor: float = 1.0


DEFAULT_MODEL = "offline/assistant"
ECHO_MODEL = "offline/echo"
CONCISE_MODEL = "offline/concise"
VERBOSE_MODEL = "offline/verbose"
PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(DEFAULT_MODEL, "answers from the prompt, calls tools, fills JSON schemas"),
        ModelProfile(ECHO_MODEL, "repeats the last user message verbatim"),
        ModelProfile(CONCISE_MODEL, "short answers; half the latency and token delay", 0.5, 0.5),
        ModelProfile(VERBOSE_MODEL, "longer answers; 1.5x the latency, twice the token delay", 1.5, 2.0),
        # The script alone decides its timing (see _scripted): the gateway's delays do not apply.
        ModelProfile(SCRIPTED_MODEL, "answers what the user message scripts (tests pin the protocol)", 0, 0),
    )
}
OFFLINE_MODELS: tuple[str, ...] = tuple(PROFILES)


def profile(model: str) -> ModelProfile:
    """The profile of an offline model (a model the gateway does not know times like the default)."""
    return PROFILES.get(model) or PROFILES[DEFAULT_MODEL]


def plan_completion(request: ChatRequest) -> Plan:
    """Decide the whole answer to ``request`` (content or tool calls, finish reason, token counts).

    ``offline/scripted`` is not planned here: its script also decides faults and pacing, so the app
    reads it with ``_scripted.parse_script``.

    Raises ``GatewayError`` (400) when a schema asks for a larger answer than the offline models make.
    """
    if request.model == ECHO_MODEL:
        return _text_plan(request, _last_user_text(request.messages))
    messages, fixes = _before_reask(request.messages)
    last_user = _last_user_text(messages)
    if request.tools and request.tool_choice != "none":
        prompt, turn, results = phase_of(messages)
        if messages[-1].role in ("user", "tool") or request.tool_choice != "auto":
            asks = planned_calls(
                request.tools,
                prompt,
                request.tool_choice,
                turn=turn,
                results=results,
                parallel=request.parallel_tool_calls,
            )
            if asks:
                return _tool_plan(request, asks, last_user)
    fmt = request.response_format or {}
    schema = fmt["json_schema"]["schema"] if fmt.get("type") == "json_schema" else None
    # A re-ask's errors come first: a value they state ("only 12 left") wins over the question's.
    hints = hints_from(f"{fixes}\n{last_user}" if fixes else last_user)
    grade = grade_of(messages) if messages[-1].role != "tool" else None
    if grade is not None:
        if schema is not None:
            filled = _filled(schema, hints, grade.explanation, _FORMAT_PARAM)
            return _text_plan(request, json.dumps(graded_json(grade, schema, filled), ensure_ascii=False))
        if fmt.get("type") == "json_object":
            return _text_plan(request, json.dumps(graded_json(grade, None, None), ensure_ascii=False))
        return _text_plan(request, graded_text(grade))
    if messages[-1].role == "tool":
        text = tool_followup(messages, request.tools)
    else:
        text = answer(messages, request.model)
    if request.model == CONCISE_MODEL:
        text = concise(text)
    elif request.model == VERBOSE_MODEL:
        text = verbose(text)
    if schema is not None:
        text = json.dumps(_filled(schema, hints, text, _FORMAT_PARAM), ensure_ascii=False)
    elif fmt.get("type") == "json_object":
        text = json.dumps(json_object(last_user, text), ensure_ascii=False)
    return _text_plan(request, text)


_FORMAT_PARAM = "response_format.json_schema.schema"
# The client's validation re-ask (``reask_message`` in its ``_recover`` module), after an invalid answer.
_REASK = re.compile(r"Your answer was not valid: (.*)\. Answer again with only the JSON object", re.DOTALL)


def _before_reask(messages: Sequence[Message]) -> tuple[Sequence[Message], str]:
    """The conversation before an invalid answer and the re-ask that names its errors, and those errors.

    A re-ask is answered as its question was, with the errors read first: answered from the re-ask's
    own words, the question's facts were lost (the word "JSON" became a name).
    """
    if len(messages) >= 3 and messages[-2].role == "assistant" and messages[-1].role == "user":
        reask = _REASK.match(messages[-1].text)
        if reask is not None:
            return messages[:-2], reask.group(1)
    return messages, ""


def _filled(schema: Any, hints: Hints, answer: str, param: str) -> Any:
    """``fill_schema``, with an answer too large to make refused as a 400 naming ``param``."""
    try:
        return fill_schema(schema, hints, answer=answer)
    except SchemaTooLargeError as exc:
        raise GatewayError(
            400,
            f"Invalid '{param}': {exc}, more than the offline gateway makes in one answer.",
            param=param,
            code="schema_too_large",
        ) from exc


def _last_user_text(messages: Sequence[Message]) -> str:
    index = last_user(messages)
    return messages[index].text if index >= 0 else ""


def _tool_plan(request: ChatRequest, asks: Sequence[ToolCallAsk], last_user: str) -> Plan:
    calls: list[ToolCallPlan] = []
    completion = 0
    cut = False
    budget = request.max_tokens
    for index, ask in enumerate(asks):
        where = f"tools[{ask.tool.name}].function.parameters"
        arguments = json.dumps(_filled(ask.tool.parameters, ask.hints, "", where), ensure_ascii=False)
        made_id = call_id(f"{len(request.messages)}|{index}|{ask.tool.name}|{arguments}|{last_user}")
        if budget is not None:
            # Like a real model, running out of tokens mid-call leaves truncated (invalid) JSON arguments.
            budget -= count_tokens(ask.tool.name)
            arguments, cut = truncate_tokens(arguments, max(budget, 0))
            budget -= count_tokens(arguments)
        calls.append(ToolCallPlan(made_id, ask.tool.name, arguments))
        completion += count_tokens(ask.tool.name) + count_tokens(arguments)
        if cut:
            break
    return Plan(
        model=request.model,
        content=None,
        tool_calls=tuple(calls),
        finish_reason="length" if cut else "tool_calls",
        prompt_tokens=request.prompt_tokens,
        completion_tokens=completion,
    )


def _text_plan(request: ChatRequest, text: str) -> Plan:
    finish = "stop"
    for stop in request.stop:
        index = text.find(stop)
        if index != -1:
            text = text[:index]
    if request.max_tokens is not None:
        text, cut = truncate_tokens(text, request.max_tokens)
        finish = "length" if cut else finish
    return Plan(
        model=request.model,
        content=text,
        tool_calls=(),
        finish_reason=finish,
        prompt_tokens=request.prompt_tokens,
        completion_tokens=count_tokens(text),
    )
