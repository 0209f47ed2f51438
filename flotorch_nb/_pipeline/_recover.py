"""Recovery over the one call: validation re-asks and fallbacks across models, as a pure plan.

Both features are layers over the client's single call, never a second send loop. :func:`recover`
is a generator that hands out the next ``Call`` to make and is sent what that call ended with (an
``LLMResponse`` or a ``FlotorchError``); each call it hands out goes through the whole pipeline
(answer cache, ``before_request``/``after_call`` hooks, every attempt's gates, the retries of the send
loop), so hooks, the ledger and budgets count every re-ask and every fallback like any other call.
``drive`` (sync) and ``adrive`` (async) run the plan over ``invoke``'s and ``ainvoke``'s one call; a
stream runs it itself, and only until its first delta.

- **Validation retries** (``validation_retries=N`` with a pydantic ``response_format``), as
  instructor re-asks: when an answer does not validate, the invalid answer is appended as the
  assistant's turn, followed by a user message naming the validation errors, up to N times.
- **Fallbacks** (``FlotorchLLM(..., fallbacks=[...])``): when a model's call still fails after the
  send loop's retries with one of :data:`REASONS`, the next model is asked the original messages.
  Any other failure (a bad request, authentication, not found, a budget, a hook) is raised at once.

The final answer says what it took: ``attempts`` (calls made), ``usage_total`` (their usage summed)
and ``fallbacks`` (each skipped model with its reason), also in its provenance record. When every
try fails, the last error is raised with the same three attributes (a ``StructuredOutputError``
keeps the last invalid answer on ``.response`` and ``.content``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._config import check_whole
from .._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    FlotorchError,
    InvalidRequestError,
    RateLimitError,
    StreamError,
    StructuredOutputError,
)
from .._response import LLMResponse, Skipped, Usage

if TYPE_CHECKING:
    from .._transport import Call

__all__ = [
    "REASONS",
    "Skipped",
    "adrive",
    "check_validation_retries",
    "drive",
    "fallback_reason",
    "reask_message",
    "recover",
]

#: Why a model may be skipped for the next one: its call still failed after the send loop's retries
#: with a 429, a 5xx, a timeout or a lost connection; its prompt did not fit its context window; it
#: answered nothing (no text, no tool call); or its structured answer still failed validation.
REASONS = (
    "rate_limited",
    "server_error",
    "timeout",
    "connection_error",
    "context_length",
    "empty_answer",
    "validation_failed",
)

#: What gateways say when a prompt does not fit the model (OpenAI's ``code``, and the usual wording of
#: others that send no code), lower case.
_CONTEXT_CODES = frozenset({"context_length_exceeded", "context_window_exceeded", "string_above_max_length"})
_CONTEXT_WORDS = ("maximum context length", "context length", "context window", "context_length_exceeded")

#: The plan's messages to the shells: the next call to make, fed back what it ended with.
Outcome = LLMResponse | FlotorchError
Plan = Generator["Call", Outcome, LLMResponse]


def check_validation_retries(value: object, model_class: type[Any] | None) -> int:
    """``validation_retries`` as a count, refused before any I/O when it cannot mean anything: not a
    whole number >= 0, or without a pydantic class as ``response_format`` (nothing to validate)."""
    retries = check_whole(value, "validation_retries", 0, InvalidRequestError)
    if model_class is None:
        raise InvalidRequestError(
            "validation_retries needs response_format=<a pydantic BaseModel class>: only an answer "
            "parsed into a class can fail validation and be asked again"
        )
    return retries


def fallback_reason(outcome: Outcome) -> str | None:
    """Why ``outcome`` lets the next model be asked (one of ``REASONS``), or None: it is the answer, or
    a failure another model would meet too (a bad request, authentication, not found, a budget...)."""
    if isinstance(outcome, LLMResponse):
        return None if outcome.content.strip() or outcome.tool_calls else "empty_answer"
    if isinstance(outcome, StructuredOutputError):
        return "validation_failed"
    if isinstance(outcome, StreamError):  # broken before its first delta: the connection was lost
        return "connection_error" if isinstance(outcome.__cause__, APIConnectionError) else None
    if isinstance(outcome, APITimeoutError):
        return "timeout"
    if isinstance(outcome, APIConnectionError):
        return "connection_error"
    if isinstance(outcome, RateLimitError):
        return "rate_limited"
    if isinstance(outcome, APIStatusError):
        if outcome.status_code >= 500:
            return "server_error"
        if outcome.status_code == 408:
            return "timeout"
        if outcome.status_code in (400, 413, 422) and _context_length(outcome):
            return "context_length"
    return None


def _context_length(error: APIStatusError) -> bool:
    """Whether a 4xx says the prompt is too long for the model (a shorter window is model-specific)."""
    body = error.body.get("error", error.body) if isinstance(error.body, Mapping) else None
    code = body.get("code") if isinstance(body, Mapping) else None
    if isinstance(code, str) and code.lower() in _CONTEXT_CODES:
        return True
    message = (error.message or "").lower()
    return any(words in message for words in _CONTEXT_WORDS)


def reask_message(error: StructuredOutputError) -> dict[str, str]:
    """The user turn that asks the model again, naming what failed (instructor's re-ask)."""
    return {
        "role": "user",
        "content": f"Your answer was not valid: {error.problems}. Answer again with only the "
        "JSON object the schema asks for, with these errors fixed.",
    }


class _Tally:
    """Calls made and the usage they reported, summed."""

    __slots__ = ("attempts", "input_tokens", "known", "output_tokens", "total_tokens")

    def __init__(self) -> None:
        self.attempts = 0
        self.known = False
        self.input_tokens = self.output_tokens = self.total_tokens = 0

    def add(self, outcome: Outcome) -> None:
        self.attempts += 1
        response = outcome if isinstance(outcome, LLMResponse) else getattr(outcome, "response", None)
        usage = response.usage if isinstance(response, LLMResponse) else None
        if usage is not None:
            self.known = True
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.total_tokens += usage.total_tokens

    def usage(self) -> Usage | None:
        """The summed usage (None when no call reported any)."""
        return Usage(self.input_tokens, self.output_tokens, self.total_tokens) if self.known else None


def recover(
    first: Call,
    messages: Sequence[Mapping[str, Any]],
    validation_retries: int,
    fallbacks: Sequence[str],
    ask: Callable[[list[dict[str, Any]], str], Call],
) -> Plan:
    """The plan of one recovering call: yields each ``Call`` to make (``first``, then re-asks built by
    ``ask(messages, model)``), is sent what it ended with, and returns the final answer or raises the
    last error, both marked with ``attempts``, ``usage_total`` and ``fallbacks``."""
    tally, skipped = _Tally(), list[Skipped]()
    # check_fallbacks refused repeats; a call's own model= may still be one of them: asked once.
    models = [first.model, *(m for m in fallbacks or () if m != first.model)]
    for index, model in enumerate(models):
        # The conversation is copied only when it grows (a re-ask) or goes to another model: nearly
        # every call is answered validly the first time, and a batch makes thousands of them.
        conversation: list[dict[str, Any]] | None = None
        call = first if index == 0 else ask([dict(m) for m in messages], model)
        for retry in range(validation_retries + 1):
            outcome = yield call
            tally.add(outcome)
            if not isinstance(outcome, StructuredOutputError) or retry == validation_retries:
                break
            if conversation is None:
                conversation = [dict(m) for m in messages]
            conversation += [{"role": "assistant", "content": outcome.content}, reask_message(outcome)]
            call = ask(conversation, model)
        reason = fallback_reason(outcome) if index + 1 < len(models) else None
        if reason is None:
            return _marked(outcome, tally, skipped)
        skipped.append(Skipped(model, reason))
    raise AssertionError("unreachable: the last model's outcome is always returned or raised")


def _marked(outcome: Outcome, tally: _Tally, skipped: list[Skipped]) -> LLMResponse:
    """``outcome`` with what it took; an error is raised, an answer returned."""
    if isinstance(outcome, LLMResponse):
        outcome.attempts, outcome.summed_usage = tally.attempts, tally.usage()
        outcome.fallbacks = list(skipped)
        if outcome.provenance is not None:
            outcome.provenance["attempts"] = tally.attempts
            outcome.provenance["fallbacks"] = [list(s) for s in skipped]
        return outcome
    outcome.attempts, outcome.usage_total, outcome.fallbacks = tally.attempts, tally.usage(), list(skipped)
    if skipped:
        tried = ", ".join(f"{s.model} ({s.reason})" for s in skipped)
        outcome.add_note(f"asked before it, and passed over: {tried}")
    raise outcome


def drive(plan: Plan, once: Callable[[Call], LLMResponse]) -> LLMResponse:
    """Run ``plan`` with ``once`` (the pipeline's one call) for each call it asks for."""
    call = next(plan)
    while True:
        try:
            outcome: Outcome = once(call)
        except FlotorchError as error:
            outcome = error
        try:
            call = plan.send(outcome)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def adrive(plan: Plan, once: Callable[[Call], Awaitable[LLMResponse]]) -> LLMResponse:
    """The async twin of ``drive``."""
    call = next(plan)
    while True:
        try:
            outcome: Outcome = await once(call)
        except FlotorchError as error:
            outcome = error
        try:
            call = plan.send(outcome)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
