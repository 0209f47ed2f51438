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
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._errors import FlotorchError, HookError
from ._response import Source

if TYPE_CHECKING:
    from ._admission import Gate
    from ._response import LLMResponse, Usage

__all__ = [
    "CallRequest",
    "CallResult",
    "Hooks",
    "Outcome",
    "Source",
    "call_label",
    "estimate_tokens",
]

Outcome = Literal["ok", "error", "stopped"]

#: A rough characters-per-token ratio for English text, used only where the gateway's count is not
#: known yet (before sending) or never will be (a stream stopped before its usage arrived).
CHARS_PER_TOKEN = 4

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


def _text_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: count their text
        return sum(len(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return 0


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Tokens a request may cost before the gateway says: its prompt (about 4 characters a token,
    rounded up) plus the most it allows the answer (``max_tokens``), so a limit checked with it errs
    on the safe side."""
    chars = sum(_text_chars(m.get("content")) for m in body.get("messages", ()) if isinstance(m, Mapping))
    prompt = math.ceil(chars / CHARS_PER_TOKEN) + 4 * len(body.get("messages", ()))
    cap = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return prompt + (cap if isinstance(cap, int) else 0)


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
            prompt = self.request.estimated_tokens - _cap(self.request.body)
            return prompt + math.ceil(answered / CHARS_PER_TOKEN)
        return 0


def _cap(body: Mapping[str, Any]) -> int:
    cap = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return cap if isinstance(cap, int) else 0


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
