"""``Pipeline``: a client's one send loop and the call around it, sync and async written side by side.

A ``FlotorchLLM`` is the face people use; its ``Pipeline`` is where every call lives, whichever door
it came in by (``invoke``, ``ainvoke``, ``stream``, ``astream``, and through them batch, compare, the
tool loop, evaluations): prepared (``_call.prepare``), planned when it may be asked again
(``_recover``), answered from the answer cache if it can be, begun (hooks), sent (each attempt
admitted by the gates, retried by the ``RetryPolicy``, same-origin redirects followed), finished
(provenance, structured output, the cache) and ended (hooks, the call log). The steps are the plain
functions of ``_call``; this class only owns the loops and what they share. A stream (``_stream``)
rides the same loop through its ``StreamLink``, which a ``Pipeline`` is.

The sync path never touches asyncio (``asyncio.run`` breaks inside Jupyter's running loop). The pools
live in ``_transport._pools``: an httpx2 client for sync calls and, per event loop, an aiohttp pool
for async ones (a connection belongs to the loop that opened it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import _config
from .._admission import Asked, aadmit, admit
from .._errors import FlotorchError, InvalidRequestError
from .._transport import (
    AsyncReply,
    Call,
    Reply,
    closed_error,
    is_event_stream,
    redirect_target,
    status_failure,
)
from .._transport._httpx import open_sync
from ._call import (
    NOT_HELD,
    Begun,
    Held,
    answered,
    begin,
    completed,
    end,
    finished,
    gating,
    prepare,
    settle_attempt,
    source_of,
)
from ._recover import Plan, adrive, check_validation_retries, drive, recover
from ._stream import AsyncChatStream, ChatStream

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .._response import LLMResponse
    from .._retry import RetryPolicy
    from .._transport import AsyncPool
    from .._transport._pools import Pools
    from ..cache import AnswerCache
    from ._hooks import CallRequest, Hooks

__all__ = ["Pipeline"]

#: A call's ``extra_body`` and its other keyword arguments, as the client's methods hand them on.
Extra = Mapping[str, Any] | None
Params = dict[str, Any]

logger = logging.getLogger("flotorch_nb")


class Pipeline:
    """One client's call pipeline: its settings, pools, retry policy, hooks, answer cache and fallbacks.

    The client reads and replaces ``retry``, ``hooks`` and ``cache`` here (a call reads them when it
    starts, so a replacement counts from the next call); ``offline`` says whether the last answer
    came from an offline gateway (None until one has).
    """

    __slots__ = ("cache", "fallbacks", "hooks", "offline", "pools", "retry", "settings")

    def __init__(
        self,
        settings: _config.Settings,
        pools: Pools,
        retry: RetryPolicy,
        hooks: Hooks,
        cache: AnswerCache | None,
        fallbacks: tuple[str, ...],
    ) -> None:
        self.settings, self.pools, self.retry = settings, pools, retry
        self.hooks, self.cache, self.fallbacks = hooks, cache, fallbacks
        self.offline: bool | None = None

    # -- the doors: each call prepared (and planned, when it may be asked again) before any I/O -----
    def invoke(self, messages: Any, tools: Any, fmt: Any, extra: Extra, kw: Params) -> LLMResponse:
        """``FlotorchLLM.invoke``: one call, or a recovery plan driven over it."""
        if self._recovering(kw):
            return drive(self.plan(messages, tools, fmt, extra, kw, stream=False), self.one)
        return self.one(self.prepare(messages, tools, fmt, extra, kw, stream=False))

    async def ainvoke(self, messages: Any, tools: Any, fmt: Any, extra: Extra, kw: Params) -> LLMResponse:
        """The async twin of ``invoke``."""
        if self._recovering(kw):
            return await adrive(self.plan(messages, tools, fmt, extra, kw, stream=False), self.aone)
        return await self.aone(self.prepare(messages, tools, fmt, extra, kw, stream=False))

    def stream(self, messages: Any, tools: Any, fmt: Any, extra: Extra, kw: Params) -> ChatStream:
        """``FlotorchLLM.stream``: with a plan, a model failing before the first delta is passed over."""
        call, plan = self._first_streamed(messages, tools, fmt, extra, kw)
        return ChatStream(self, call, answered=self.cached(call), plan=plan)

    def astream(self, messages: Any, tools: Any, fmt: Any, extra: Extra, kw: Params) -> AsyncChatStream:
        """The async twin of ``stream``."""
        call, plan = self._first_streamed(messages, tools, fmt, extra, kw)
        return AsyncChatStream(self, call, answered=self.cached(call), plan=plan)

    def _first_streamed(
        self, messages: Any, tools: Any, fmt: Any, extra: Extra, kw: Params
    ) -> tuple[Call, Plan | None]:
        """A stream's first call, with the recovery plan that may replace it before its first delta."""
        if self._recovering(kw):
            plan = self.plan(messages, tools, fmt, extra, kw, stream=True)
            return next(plan), plan
        return self.prepare(messages, tools, fmt, extra, kw, stream=True), None

    def prepare(self, messages: Any, tools: Any, fmt: Any, extra: Extra, kw: Params, *, stream: bool) -> Call:
        """One call validated and encoded (``_call.prepare``): every mistake refused before any I/O."""
        return prepare(self.settings, messages, tools, fmt, extra, kw, stream=stream)

    def _recovering(self, kw: Params) -> bool:
        """Whether a call needs the recovery layer (``_recover``): fallbacks, or validation retries."""
        return bool(self.fallbacks) or "validation_retries" in kw

    def plan(self, messages: Any, tools: Any, fmt: Any, extra: Extra, kw: Params, *, stream: bool) -> Plan:
        """The recovery plan of one call (``_recover.recover``), everything refused before any I/O:
        its first call prepared, ``validation_retries`` checked (a stream refuses it: its text has
        been shown by the time the answer can be validated)."""
        retries = kw.pop("validation_retries", None)
        first = self.prepare(messages, tools, fmt, extra, dict(kw), stream=stream)
        if retries is not None:
            check_validation_retries(retries, first.model_class)
            if stream:
                raise InvalidRequestError(
                    "validation_retries does not apply to a stream: its text is shown before the "
                    "answer can be validated; use invoke()/ainvoke() to re-ask on invalid answers"
                )

        def ask(conversation: list[dict[str, Any]], model: str) -> Call:
            again = {**kw, "model": model}
            return self.prepare(conversation, tools, fmt, extra, again, stream=stream)

        return recover(first, messages, retries or 0, self.fallbacks, ask)

    # -- the steps a stream takes through its StreamLink (the same as invoke's) ----------------------
    def cached(self, call: Call) -> LLMResponse | None:
        """The answer cache's answer to ``call`` (``_call.answered``), or None: a stream sends nothing."""
        return answered(self.cache, call, self.settings) if self.cache is not None else None

    def begin(self, call: Call) -> Begun:
        return begin(self.hooks, call)  # self.hooks is read now: it may have been replaced

    def end(self, begun: Begun, outcome: LLMResponse | BaseException, partial_chars: int = 0) -> None:
        end(self.hooks, begun, outcome, source_of(self.settings), partial_chars)

    def finish(self, response: LLMResponse, call: Call) -> LLMResponse:
        """A stream's answer through the same last steps as invoke's (``_call.finished``)."""
        self.offline = response.offline
        return finished(response, call, self.settings, self.cache)

    def tracked(self) -> AbstractContextManager[Any]:
        """Counts a stream as a call in flight while it is open."""
        return self.pools.tracked()

    # -- the sync shell ------------------------------------------------------------------------------
    def send(self, call: Call, request: CallRequest | None = None) -> tuple[Reply, float, bytes, Held]:
        """POST with retries, following same-origin 307/308 redirects. Returns the 2xx reply, when
        its attempt began, its body read within ``call.timeout`` (a stream's is left unread), and the
        tickets of the gates that admitted that attempt, for the caller to settle when the call ends.
        Every other attempt is admitted before it is sent and settled here (``_admission``)."""
        client = self.pools.sync()
        gates, asked = gating(self.hooks, call, request)
        for attempt in range(self.retry.max_retries + 1):
            admitted = admit(gates, asked) if asked is not None else ()  # may wait, or refuse
            started = time.perf_counter()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("POST %s model=%s attempt=%d", call.display_url, call.model, attempt + 1)
            url, hops = call.url, 0
            error: FlotorchError
            try:
                reply = open_sync(client, call, url, started)
                while (target := redirect_target(reply.status_code, reply.headers, url, hops)) is not None:
                    _log_redirect(reply.status_code, target)
                    reply.read()  # drained, so its connection can carry the next request
                    url, hops = target, hops + 1
                    reply = open_sync(client, call, url, started)
                _log_status(reply.status_code, started)
                if reply.status_code < 300 and call.stream and is_event_stream(reply.headers):
                    return reply, started, b"", _held(admitted, asked, reply.headers)  # ChatStream reads on
                body = reply.read()
                if reply.status_code < 300:
                    return reply, started, body, _held(admitted, asked, reply.headers)
                error = status_failure(reply.status_code, reply.headers, body, call, url, hops)
            except FlotorchError as exc:
                error = exc
            except BaseException as exc:  # interrupted mid-attempt: its reservation is settled too
                settle_attempt(admitted, asked, exc)
                raise
            settle_attempt(admitted, asked, error)
            if client.is_closed:  # close() under this call: a retry would only meet a closed pool
                raise closed_error(call, error) from error
            if not self.retry.should_retry(error, attempt):
                raise self.retry.gave_up(error, attempt)
            delay = self.retry.delay_for(error, attempt)
            logger.info("retrying %s in %.2f s after: %s", call.model, delay, error)
            time.sleep(delay)
        raise AssertionError("unreachable: the retry loop always returns or raises")

    def one(self, call: Call) -> LLMResponse:
        """One call, whole: the answer cache, the hooks, the send loop, the answer finished."""
        settings, cache, hooks = self.settings, self.cache, self.hooks
        if cache is not None and (hit := answered(cache, call, settings)) is not None:
            return hit  # answer cache: nothing sent, no hook runs
        begun = begin(hooks, call)  # before_request hooks: may refuse the call, nothing sent yet
        try:
            with self.pools.tracked():
                http, started, body, held = self.send(call, begun[0])
            response = completed(http.headers, started, body, call, settings, cache, held)
        except BaseException as exc:
            end(hooks, begun, exc, source_of(settings))
            raise
        self.offline = response.offline
        end(hooks, begun, response, source_of(settings))
        return response

    # -- the async shell -----------------------------------------------------------------------------
    async def asend(
        self, call: Call, request: CallRequest | None = None
    ) -> tuple[AsyncReply, float, bytes, Held]:
        """The async twin of ``send``: same decisions, ``await asyncio.sleep`` between tries."""
        import asyncio  # here, not at the top: `import flotorch_nb` stays without it (~half its cost)

        pool: AsyncPool = self.pools.for_loop()
        gates, asked = gating(self.hooks, call, request)
        for attempt in range(self.retry.max_retries + 1):
            admitted = await aadmit(gates, asked) if asked is not None else ()
            started = time.perf_counter()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("POST %s model=%s attempt=%d", call.display_url, call.model, attempt + 1)
            url, hops = call.url, 0
            error: FlotorchError
            try:
                reply = await pool.open(call, url, started)
                while (target := redirect_target(reply.status_code, reply.headers, url, hops)) is not None:
                    _log_redirect(reply.status_code, target)
                    await reply.read()
                    url, hops = target, hops + 1
                    reply = await pool.open(call, url, started)
                _log_status(reply.status_code, started)
                if reply.status_code < 300 and call.stream and is_event_stream(reply.headers):
                    return reply, started, b"", _held(admitted, asked, reply.headers)  # its stream reads on
                body = await reply.read()
                if reply.status_code < 300:
                    return reply, started, body, _held(admitted, asked, reply.headers)
                error = status_failure(reply.status_code, reply.headers, body, call, url, hops)
            except FlotorchError as exc:
                error = exc
            except BaseException as exc:  # cancelled mid-attempt: its reservation is settled too
                settle_attempt(admitted, asked, exc)
                raise
            settle_attempt(admitted, asked, error)
            if pool.is_closed:  # aclose() under this call: a retry would only meet a closed pool
                raise closed_error(call, error) from error
            if not self.retry.should_retry(error, attempt):
                raise self.retry.gave_up(error, attempt)
            delay = self.retry.delay_for(error, attempt)
            logger.info("retrying %s in %.2f s after: %s", call.model, delay, error)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the retry loop always returns or raises")

    async def aone(self, call: Call) -> LLMResponse:
        """The async twin of ``one``."""
        settings, cache, hooks = self.settings, self.cache, self.hooks
        if cache is not None and (hit := answered(cache, call, settings)) is not None:
            return hit  # answer cache: nothing sent, no hook runs
        begun = begin(hooks, call)  # before_request hooks: may refuse the call, nothing sent yet
        try:
            with self.pools.tracked():
                http, started, body, held = await self.asend(call, begun[0])
            response = completed(http.headers, started, body, call, settings, cache, held)
        except BaseException as exc:
            end(hooks, begun, exc, source_of(settings))
            raise
        self.offline = response.offline
        end(hooks, begun, response, source_of(settings))
        return response


def _held(admitted: tuple[Any, ...], request: Asked | None, headers: Mapping[str, str]) -> Held:
    return Held(admitted, request, headers) if admitted else NOT_HELD


def _log_redirect(status: int, target: str) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("HTTP %d: following it to %s", status, _config.display_url(target))


def _log_status(status: int, started: float) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("HTTP %d in %.1f ms", status, 1000 * (time.perf_counter() - started))
