"""One call's life around its send loop, as plain functions both shells share: prepared (validated and
encoded into a ``Call`` before any I/O), begun (``before_request`` hooks, the clock), each attempt
admitted by the gates and settled (``_admission``), and ended (``after_call`` hooks, exactly once,
whatever the outcome). ``llm.py`` keeps only the loops."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from . import _config, _logsink
from ._admission import Admitted, Asked, Gate, Spent, gates_of, settle
from ._config import Settings
from ._errors import HookError
from ._hooks import CallRequest, CallResult, Hooks, Outcome
from ._request import build_body, encode_body
from ._response import LLMResponse, Source
from ._transport import Call, headers_for
from .schema import normalize_response_format

__all__ = ["NOT_HELD", "Begun", "Held", "begin", "end", "gating", "prepare", "settle_attempt", "spent"]

logger = logging.getLogger("flotorch_nb")

#: What ``begin`` hands back for ``end``: the hooks' request (None when no hook wants it), the start,
#: and the call (for the call log).
Begun = tuple[CallRequest | None, float, Call]


def prepare(
    settings: Settings,
    messages: object,
    tools: object,
    response_format: object,
    extra_body: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
    *,
    stream: bool,
) -> Call:
    """Validate and encode a call (``kwargs`` may carry ``model`` and ``timeout`` for this call)."""
    if kwargs:
        timeout = kwargs.pop("timeout", None)
        model = kwargs.pop("model", None)
    else:  # the common call: no parameters at all
        timeout = model = None
    if model is None:  # model="" is a mistake to report, not a reason to fall back silently
        model = settings.model_id
    wire_format, model_class = (
        normalize_response_format(response_format) if response_format is not None else (None, None)
    )
    body = build_body(
        model,
        messages,
        tools=tools,
        response_format=wire_format,
        extra_body=extra_body,
        stream=stream,
        params=kwargs,
    )
    return Call(
        url=settings.url,
        body=body,
        content=encode_body(body),
        headers=headers_for(settings.api_key),  # built per call: a dict kept on the client would show
        key=settings.api_key,
        timeout=_config.check_timeout(timeout, "timeout") if timeout is not None else settings.timeout,
        model=model,
        stream=stream,
        model_class=model_class,
    )


def begin(hooks: Hooks, call: Call) -> Begun:
    """Run the ``before_request`` hooks (which may refuse the call); start the call's clock."""
    request = None
    if hooks.before_request or hooks.after_call:
        request = hooks.request(call.model, call.body, stream=call.stream)
        hooks.run_before(request)
    return request, time.perf_counter(), call


def _result(
    request: CallRequest,
    outcome: LLMResponse | BaseException,
    latency_s: float,
    failed_source: Source,
    partial_chars: int,
) -> CallResult:
    """The ``CallResult`` of a call (or of one attempt) that ended with ``outcome``."""
    if not isinstance(outcome, BaseException):
        return CallResult(request, "ok", outcome, None, latency_s, outcome.source)
    from asyncio import CancelledError  # only now: `import flotorch_nb` does without asyncio

    response = getattr(outcome, "response", None)
    state: Outcome = "error" if isinstance(outcome, Exception) else "stopped"
    if isinstance(outcome, CancelledError | GeneratorExit | KeyboardInterrupt):
        state = "stopped"
    return CallResult(
        request,
        state,
        response if isinstance(response, LLMResponse) else None,
        outcome,
        latency_s,
        failed_source,
        partial_chars,
    )


def end(
    hooks: Hooks,
    begun: Begun,
    outcome: LLMResponse | BaseException,
    failed_source: Source,
    partial_chars: int = 0,
) -> None:
    """Run the ``after_call`` hooks once for a finished call (answer, failure or stop).

    After a failure the failure is what the caller must see: a hook that raises then is logged and
    noted on the failure instead of replacing it. ``failed_source`` is where an answer would have
    come from (a failure has no answer to say so).
    """
    request, started, call = begun
    if (sink := _logsink.current) is not None:  # the call log (flotorch_nb.calllog); never raises
        sink.record(call, outcome, time.perf_counter() - started, failed_source, partial_chars)
    if request is None or not hooks.after_call:
        return
    result = _result(request, outcome, time.perf_counter() - started, failed_source, partial_chars)
    if isinstance(outcome, BaseException):
        try:
            hooks.run_after(result)
        except HookError as hook_error:
            logger.warning("%s", hook_error)
            outcome.add_note(f"also: {hook_error}")
        return
    hooks.run_after(result)


# -- gates: each attempt admitted before it is sent, settled after (see _admission) ----------------
class Asking:
    """What the gates are asked with when no hook needed a ``CallRequest``: the same fields, with the
    token estimate worked out only if a gate reads it (a rate limit without ``tpm`` never does)."""

    __slots__ = ("_call", "_hooks", "_request")

    def __init__(self, hooks: Hooks, call: Call) -> None:
        self._hooks, self._call = hooks, call
        self._request: CallRequest | None = None

    def full(self) -> CallRequest:
        """The ``CallRequest`` itself (made once, on first use)."""
        if self._request is None:
            call = self._call
            self._request = self._hooks.request(call.model, call.body, stream=call.stream)
        return self._request

    @property
    def model(self) -> str:
        return self._call.model

    @property
    def body(self) -> Mapping[str, Any]:
        return self._call.body

    @property
    def stream(self) -> bool:
        return self._call.stream

    @property
    def estimated_tokens(self) -> int:
        return self.full().estimated_tokens

    @property
    def label(self) -> str | None:
        return self.full().label


def gating(hooks: Hooks, call: Call, request: CallRequest | None) -> tuple[tuple[Gate, ...], Asked | None]:
    """The gates this call's attempts pass (the client's, then ``gated`` blocks'), and what they are
    asked with; no gates (the common case) costs nothing more."""
    gates = gates_of(hooks.gates)
    if gates and request is None:
        return gates, Asking(hooks, call)
    return gates, request


def spent(request: Asked, outcome: LLMResponse | BaseException, partial_chars: int = 0) -> Spent:
    """What an attempt spent, by the rule ``CallResult.total_tokens`` states: the gateway's count,
    else an estimate; 0 for an attempt that failed without reaching a model."""
    if isinstance(outcome, LLMResponse) and outcome.usage is not None:  # the common end: counted
        return Spent(request, outcome, None, outcome.usage.total_tokens, True)
    full = request.full() if isinstance(request, Asking) else cast("CallRequest", request)
    result = _result(full, outcome, 0.0, "live", partial_chars)
    return Spent(request, result.response, result.error, result.total_tokens, result.usage_known)


def settle_attempt(
    admitted: Admitted, request: Asked | None, outcome: LLMResponse | BaseException, partial: int = 0
) -> None:
    """Settle one attempt's tickets with what it spent (nothing to do when no gate admitted it)."""
    if admitted and request is not None:
        settle(admitted, spent(request, outcome, partial))


class Held:
    """The tickets of the attempt that answered, held until its call ends and then settled once.

    The send loop hands one back with the reply; ``invoke`` settles it once the answer is parsed, a
    stream once it ends (done, failed, closed, cancelled). Dropped unsettled (a stream collected
    after its event loop was gone), it settles as stopped, so no reservation leaks.
    """

    __slots__ = ("_admitted", "_request")

    def __init__(self, admitted: Admitted, request: Asked | None) -> None:
        self._admitted = admitted
        self._request = request

    def settle(self, outcome: LLMResponse | BaseException, partial_chars: int = 0) -> None:
        """Settle with how the call ended; later calls do nothing."""
        admitted, self._admitted = self._admitted, ()
        settle_attempt(admitted, self._request, outcome, partial_chars)

    def __del__(self) -> None:
        if self._admitted:
            self.settle(GeneratorExit("dropped before it ended"))


#: What the send loop hands back when no gate admitted the attempt (no object per call).
NOT_HELD = Held((), None)
