"""Hooks: code that runs before every request and after every finished call of a ``FlotorchLLM``.

The model is httpx's ``event_hooks``: plain callables in two lists, no framework. Whoever needs to
see every call attaches here instead of wrapping each surface that makes calls — the notebook
session's token budget and usage ledger, a batch run's rate limiter, a test's counter — so
``invoke``, ``ainvoke``, ``stream``, ``astream`` and everything built on them are checked and counted
exactly once, whoever calls them::

    llm = FlotorchLLM()
    llm.hooks.before_request.append(lambda req: print("sending", req.model, req.estimated_tokens))
    llm.hooks.after_call.append(lambda res: print(res.outcome, res.total_tokens, res.source))

``before_request`` hooks run once per call, after the call was validated and right before the first
attempt is sent (for a stream: when iteration starts). One may refuse the call by raising: a
``FlotorchError`` (``BudgetExceededError``, say) reaches the caller as it is, anything else as a
``HookError`` naming the hook. Nothing has been sent then.

``after_call`` hooks run exactly once per call that got past ``before_request``, whatever its outcome:
``"ok"``, ``"error"`` (``.error`` says which; a structured-output failure still carries the
response and its tokens) or ``"stopped"`` (a stream closed or a task cancelled mid-way; the tokens
spent are then estimated). Every hook runs even if an earlier one raised; then a ``HookError`` is
raised that carries the answer (``.response``), so a broken hook never loses a paid-for answer, and
the client stays usable.

Pure and synchronous: hooks run on the caller's thread or event loop, so they must be quick.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._config import whole_or
from .._errors import FlotorchError, HookError
from .._response import Source

if TYPE_CHECKING:
    from .._admission import Gate
    from .._response import LLMResponse, Usage

__all__ = [
    "CallRequest",
    "CallResult",
    "Hooks",
    "Outcome",
    "Source",
    "call_label",
    "current_label",
    "estimate_tokens",
    "output_tokens",
    "prompt_tokens",
]

Outcome = Literal["ok", "error", "stopped"]

#: A rough characters-per-token ratio for English text, used only where the gateway's count is not
#: known yet (before sending) or never will be (a stream stopped before its usage arrived).
CHARS_PER_TOKEN = 4
#: What a call without an output cap (``max_tokens`` / ``max_completion_tokens``) reserves for its
#: answer: a few paragraphs. Only a cap makes a budget exact; an answer longer than this can take a
#: budget past its limit by what the calls in flight spent beyond it (see the README's budgets).
UNCAPPED_OUTPUT_TOKENS = 256
#: Tokens a gateway adds around each message (role, separators), on top of its text.
TOKENS_PER_MESSAGE = 4

# What the prompt estimate counts: a run of ASCII letters, digits and underscores is a token per 4
# characters (rounded up); any other character that is not a space (punctuation, a letter of another
# script, an emoji) is a token of its own. Never below the offline gateway's count (a word up to 8
# characters is one token there, and each 4 more one more; punctuation one each), so a budget checked
# against it holds there; real tokenizers land near it for English and code, see the README.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")

_LABEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("flotorch_call_label", default=None)


@contextlib.contextmanager
def call_label(label: str) -> Iterator[None]:
    """Mark the calls made inside this block (``"magic"``, ``"chat"``, ``"batch"``) for the hooks.

    A context variable, so it follows asyncio tasks created inside the block and never leaks into
    another thread's calls.
    """
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)


def current_label() -> str | None:
    """The ``call_label`` of the block this runs in, else None."""
    return _LABEL.get()


def text_tokens(text: str) -> int:
    """The prompt estimate of ``text`` (see ``_TOKEN_RUN``): about 4 characters a token for English."""
    if text.isascii() and text.isalnum():  # one plain word (the common short prompt piece)
        return -(-len(text) // CHARS_PER_TOKEN)
    return sum(-(-len(run) // CHARS_PER_TOKEN) for run in _TOKEN_RUN.findall(text))


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if isinstance(content, list):  # content parts: count their text
        return sum(_content_tokens(p.get("text")) for p in content if isinstance(p, Mapping))
    if content is None:
        return 0
    return text_tokens(json.dumps(content, default=str))  # arguments given as a dict, say


def _message_tokens(message: Mapping[str, Any]) -> int:
    tokens = TOKENS_PER_MESSAGE + _content_tokens(message.get("content"))
    calls = message.get("tool_calls")
    if isinstance(calls, list):  # an assistant turn that called tools: its calls are prompt too
        for call in calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                tokens += sum(_content_tokens(function.get(k)) for k in ("name", "arguments"))
    return tokens


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The prompt a request may be billed for, estimated on the safe side: every message with its
    framing, plus the tool definitions and the ``response_format`` schema, which gateways (the offline
    one included) bill as prompt tokens too."""
    messages = body.get("messages")
    tokens = (
        sum(_message_tokens(m) for m in messages if isinstance(m, Mapping))
        if isinstance(messages, list)
        else 0
    )
    tools = body.get("tools")
    if tools:
        tokens += text_tokens(json.dumps(tools, default=str))
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") != "text":
        tokens += text_tokens(json.dumps(response_format, default=str))
    return tokens


def output_cap(body: Mapping[str, Any]) -> int | None:
    """The most the answer may hold: ``max_completion_tokens`` or ``max_tokens`` (the larger, if both),
    times ``n`` answers; None when the request sets no cap."""
    caps = [c for c in (whole_or(body.get(name), 1) for name in ("max_completion_tokens", "max_tokens")) if c]
    if not caps:
        return None
    return max(caps) * (whole_or(body.get("n"), 1) or 1)


def output_tokens(body: Mapping[str, Any]) -> int:
    """What a request reserves for its answer: its cap, else ``UNCAPPED_OUTPUT_TOKENS`` (per answer)."""
    cap = output_cap(body)
    return cap if cap is not None else UNCAPPED_OUTPUT_TOKENS * (whole_or(body.get("n"), 1) or 1)


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """The most a request may cost in tokens, before the gateway says: ``prompt_tokens`` (on the safe
    side) plus ``output_tokens`` (its cap, or ``UNCAPPED_OUTPUT_TOKENS``). What every budget and rate
    limit reserves for it."""
    return prompt_tokens(body) + output_tokens(body)


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A call about to be sent: what ``before_request`` hooks see (and ``CallResult.request``)."""

    model: str
    #: The JSON body (read-only by convention: it is what will be sent).
    body: Mapping[str, Any] = field(repr=False)
    stream: bool
    #: ``estimate_tokens(body)``: what a budget or rate limit can check before anything is spent.
    estimated_tokens: int
    #: Set by ``call_label`` around the call (which surface made it), else None.
    label: str | None = None

    @property
    def output_tokens(self) -> int:
        """The part of ``estimated_tokens`` held for the answer: its cap, or the uncapped estimate."""
        return output_tokens(self.body)

    @property
    def prompt_tokens(self) -> int:
        """The part of ``estimated_tokens`` that is the prompt (tools and schema included)."""
        return max(0, self.estimated_tokens - self.output_tokens)

    @property
    def capped(self) -> bool:
        """Whether the answer has a cap, so that ``estimated_tokens`` is a true most."""
        return output_cap(self.body) is not None


@dataclass(frozen=True, slots=True)
class CallResult:
    """A finished call: what ``after_call`` hooks see, once per call."""

    request: CallRequest
    outcome: Outcome
    response: LLMResponse | None
    error: BaseException | None
    latency_s: float
    source: Source
    #: Characters of answer received before a stream stopped or failed (for the token estimate).
    partial_chars: int = 0

    @property
    def model(self) -> str:
        """The model that answered (the gateway's name for it), else the one asked for."""
        return (self.response.model if self.response else None) or self.request.model

    @property
    def usage(self) -> Usage | None:
        """The gateway's token counts, when it sent them."""
        return self.response.usage if self.response else None

    @property
    def usage_known(self) -> bool:
        """Whether ``total_tokens`` is the gateway's count rather than an estimate."""
        return self.usage is not None

    @property
    def total_tokens(self) -> int:
        """Tokens this call spent: the gateway's count, else an estimate — the prompt plus the answer
        (or what had arrived of it, for a call that was stopped or broke after sending); 0 for one that
        never reached a model (refused, unreachable, a 4xx/5xx)."""
        if self.usage is not None:
            return self.usage.total_tokens
        answered = len(self.response.content) if self.response is not None else self.partial_chars
        if self.response is not None or answered or self.outcome == "stopped":
            return self.request.prompt_tokens + math.ceil(answered / CHARS_PER_TOKEN)
        return 0


BeforeHook = Callable[[CallRequest], None]
AfterHook = Callable[[CallResult], None]


@dataclass(slots=True)
class Hooks:
    """The two hook lists of one client; append, remove or replace entries at any time."""

    before_request: list[BeforeHook] = field(default_factory=list)
    after_call: list[AfterHook] = field(default_factory=list)
    #: Limits every attempt passes before it is sent and settles after (``flotorch_nb._admission``).
    gates: list[Gate] = field(default_factory=list)

    def copy(self) -> Hooks:
        """New lists holding the same hooks (``with_model`` clients start with their parent's)."""
        return Hooks(list(self.before_request), list(self.after_call), list(self.gates))

    def request(self, model: str, body: Mapping[str, Any], *, stream: bool) -> CallRequest:
        """The ``CallRequest`` for a prepared call (the label comes from ``call_label``)."""
        return CallRequest(model, body, stream, estimate_tokens(body), _LABEL.get())

    def run_before(self, request: CallRequest) -> None:
        """Run ``before_request`` hooks in order; the first that raises refuses the call."""
        for hook in list(self.before_request):
            try:
                hook(request)
            except FlotorchError:
                raise
            except Exception as exc:
                raise HookError(
                    f"before_request hook {_name(hook)} failed, so the call was not sent: "
                    f"{type(exc).__name__}: {exc}",
                    hook=_name(hook),
                ) from exc

    def run_after(self, result: CallResult) -> None:
        """Run every ``after_call`` hook; if any raised, raise one ``HookError`` carrying the answer."""
        failures: list[tuple[str, Exception]] = []
        for hook in list(self.after_call):
            try:
                hook(result)
            except Exception as exc:
                failures.append((_name(hook), exc))
        if failures:
            name, first = failures[0]
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            error = HookError(
                f"after_call hook {name} failed{more}: {type(first).__name__}: {first}; "
                "the answer is kept on this error's .response",
                hook=name,
                response=result.response,
            )
            raise error from first


def _name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)
