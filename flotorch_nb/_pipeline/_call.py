"""One call's life around its send loop, as plain functions both shells and both streams share, in
the order a call lives it: prepared (validated and encoded into a ``Call`` before any I/O), answered
from the answer cache if it can be (``answered``), begun (``before_request`` hooks, the clock), each
attempt admitted by the gates and settled (``_admission``), its answer finished (``completed`` /
``finished``: provenance stamped, structured output parsed, the answer stored in the cache), and
ended (``after_call`` hooks, exactly once, whatever the outcome). ``_loop.Pipeline`` keeps only the
loops; a stream (``_stream``) finishes its answer here too, so every answer leaves by the same steps."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .. import _config
from .._admission import Admitted, Asked, Gate, Spent, gates_of, settle
from .._config import Settings
from .._errors import FlotorchError, HookError, StructuredOutputError
from .._request import build_body, encode_body
from .._response import LLMResponse, Source, parse_completion, parse_structured
from .._transport import Call, headers_for, rate_headers, response_info, scrub
from ..schema import normalize_response_format
from . import _logsink
from ._hooks import CallRequest, CallResult, Hooks, Outcome
from ._provenance import stamp

if TYPE_CHECKING:
    from ..cache import AnswerCache

__all__ = [
    "NOT_HELD",
    "Begun",
    "Held",
    "answered",
    "begin",
    "completed",
    "end",
    "finished",
    "gating",
    "prepare",
    "settle_attempt",
    "source_of",
    "spent",
]

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
    content, canonical = encode_body(body)
    return Call(
        url=settings.url,
        body=body,
        content=content,
        canonical=canonical,
        headers=headers_for(settings.api_key),  # built per call: a dict kept on the client would show
        key=settings.api_key,
        timeout=_config.check_timeout(timeout, "timeout") if timeout is not None else settings.timeout,
        model=model,
        stream=stream,
        model_class=model_class,
        endpoint=settings.endpoint,
    )


def source_of(settings: Settings, response: LLMResponse | None = None) -> Source:
    """Where an answer came from (``replay``, ``offline``, ``live``); with no answer, where a failed
    call's would have come from."""
    if settings.cassette_mode == "replay":
        return "replay"
    return "offline" if response is not None and response.offline else "live"


def answered(cache: AnswerCache, call: Call, settings: Settings) -> LLMResponse | None:
    """The answer cache's answer to ``call``, if it has one (then nothing is sent and no hook runs),
    parsed as ``finished`` parses a new one (``AnswerCache.lookup``: a row that does not parse as
    ``call``'s class is a miss, and counted as one), with its provenance: ``source="cache"``, dated
    now, the request's hash."""
    hit = cache.lookup(call)
    if hit is None:
        return None
    stamp(hit, call, settings)
    _logsink.cached(call, hit)  # the call log records a hit too (no hook does)
    return hit


def finished(response: LLMResponse, call: Call, settings: Settings, cache: AnswerCache | None) -> LLMResponse:
    """An answer's last steps, whether it was read whole or streamed: its source and provenance, the
    structured output parsed (a failure carries the answer), and the answer kept in the cache."""
    response.source = source_of(settings, response)
    stamp(response, call, settings)  # provenance travels on the answer
    if call.model_class is not None:
        try:
            response.parsed = parse_structured(call.model_class, response.content)
        except StructuredOutputError as error:
            error.response = response
            raise
    if cache is not None:  # invoke's and a stream's answer alike; never an error
        cache.store(call, response)
    if logger.isEnabledFor(logging.DEBUG):
        tokens = response.usage.total_tokens if response.usage else "unknown"
        logger.debug("%s answered in %.1f ms: %s tokens", call.model, response.latency_s * 1000, tokens)
    return response


def completed(
    headers: Mapping[str, str],
    started: float,
    body: bytes,
    call: Call,
    settings: Settings,
    cache: AnswerCache | None,
    held: Held,
) -> LLMResponse:
    """A whole (non-streamed) 2xx body as the finished answer; the gates that admitted its attempt
    settled with it (or with the failure: a structured-output error still carries its usage)."""
    try:
        info = response_info(headers, time.perf_counter() - started)
        response = finished(parse_completion(body, info), call, settings, cache)
    except BaseException as exc:
        if isinstance(exc, FlotorchError):
            scrub(exc, settings.api_key)
        held.settle(exc)
        raise
    held.settle(response)
    return response


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
    latency_s = time.perf_counter() - started
    if (sink := _logsink.current) is not None:  # the call log (flotorch_nb.calllog); never raises
        sink.record(call, outcome, latency_s, failed_source, partial_chars)
    if request is None or not hooks.after_call:
        return
    result = _result(request, outcome, latency_s, failed_source, partial_chars)
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


def spent(
    request: Asked,
    outcome: LLMResponse | BaseException,
    partial_chars: int = 0,
    headers: Mapping[str, str] | None = None,
) -> Spent:
    """What an attempt spent, by the rule ``CallResult.total_tokens`` states: the gateway's count,
    else an estimate; 0 for an attempt that failed without reaching a model. With the rate-limit
    headers of its answer (``headers``: the 2xx reply's; an error status carries its own)."""
    if isinstance(outcome, LLMResponse) and outcome.usage is not None:  # the common end: counted
        return Spent(request, outcome, None, outcome.usage.total_tokens, True, rate_headers(headers))
    full = request.full() if isinstance(request, Asking) else cast("CallRequest", request)
    result = _result(full, outcome, 0.0, "live", partial_chars)
    limits = rate_headers(headers) if headers is not None else getattr(outcome, "rate_headers", None)
    return Spent(request, result.response, result.error, result.total_tokens, result.usage_known, limits)


def settle_attempt(
    admitted: Admitted,
    request: Asked | None,
    outcome: LLMResponse | BaseException,
    partial: int = 0,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Settle one attempt's tickets with what it spent (nothing to do when no gate admitted it)."""
    if admitted and request is not None:
        settle(admitted, spent(request, outcome, partial, headers))


class Held:
    """The tickets of the attempt that answered, held until its call ends and then settled once.

    The send loop hands one back with the reply; ``invoke`` settles it once the answer is parsed, a
    stream once it ends (done, failed, closed, cancelled). Dropped unsettled (a stream collected
    after its event loop was gone), it settles as stopped, so no reservation leaks.
    """

    __slots__ = ("_admitted", "_headers", "_request")

    def __init__(
        self, admitted: Admitted, request: Asked | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self._admitted = admitted
        self._request = request
        self._headers = headers  # the reply's: its rate-limit headers are read at settle time

    def settle(self, outcome: LLMResponse | BaseException, partial_chars: int = 0) -> None:
        """Settle with how the call ended; later calls do nothing."""
        admitted, self._admitted = self._admitted, ()
        settle_attempt(admitted, self._request, outcome, partial_chars, self._headers)

    def __del__(self) -> None:
        if self._admitted:
            self.settle(GeneratorExit("dropped before it ended"))


#: What the send loop hands back when no gate admitted the attempt (no object per call).
NOT_HELD = Held((), None)
