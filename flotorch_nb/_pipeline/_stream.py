"""Streamed answers: ``ChatStream`` and ``AsyncChatStream``, twins written side by side.

Each stream object sends its request once, on first iteration, and feeds the SSE events to the pure
``StreamAccumulator``; iterating again, or reading ``.response`` after a ``break``, resumes the same
answer rather than paying for a second one. ``data: [DONE]`` ends the answer: the response is returned
at once and the connection let go, whatever the gateway does with it afterwards. A connection that
breaks mid-answer becomes a ``StreamError`` (a stall, an ``APITimeoutError``), never a silently short
answer. A stream reaches its pipeline only through a ``StreamLink``: the send loops, the hooks and the
in-flight count, nothing else. Given a recovery ``Plan`` (a client with ``fallbacks``), a stream that
fails before its first delta, or ends with no answer at all, asks the plan's next model (each one a
call of its own for the hooks and gates); once a delta has been shown, the stream is that model's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, cast

from .._errors import APIConnectionError, APITimeoutError, FlotorchError, StreamError
from .._response import LLMResponse, parse_completion
from .._sse import StreamAccumulator
from .._transport import AsyncReply, Call, Reply, is_event_stream, response_info, scrub
from .._transport._httpx import transport_error

if TYPE_CHECKING:
    from ._call import Begun, Held
    from ._hooks import CallRequest
    from ._recover import Plan

__all__ = ["AsyncChatStream", "ChatStream", "StreamLink"]


class StreamLink(Protocol):
    """What a stream may ask of the pipeline that made it (``_loop.Pipeline`` is one): the steps
    ``invoke`` takes, one by one, and nothing else."""

    def send(self, call: Call, request: CallRequest | None, /) -> tuple[Reply, float, bytes, Held]:
        """The send loop: retries and redirects done, a 2xx reply open (its body read if it is not
        SSE), and the gates' tickets of the attempt that answered, settled when the stream ends."""

    async def asend(
        self, call: Call, request: CallRequest | None, /
    ) -> tuple[AsyncReply, float, bytes, Held]:
        """The async send loop."""

    def begin(self, call: Call, /) -> Begun:
        """``before_request`` hooks (which may refuse the call)."""

    def end(self, begun: Begun, outcome: LLMResponse | BaseException, partial_chars: int, /) -> None:
        """``after_call`` hooks, once per call."""

    def finish(self, response: LLMResponse, call: Call, /) -> LLMResponse:
        """The finished answer's last steps (provenance, structured output, the cache)."""

    def tracked(self) -> AbstractContextManager[Any]:
        """Counts the stream as a call in flight while it is open."""

    def cached(self, call: Call, /) -> LLMResponse | None:
        """The answer cache's answer to a call (parsed and stamped), or None: asked for each model's call."""


def _stream_failure(exc: Exception, call: Call, chunks: str) -> FlotorchError | None:
    """What a broken stream means for the caller: a timeout, or a ``StreamError`` naming the damage
    (None: not a failure of the exchange but a bug, to be raised as it is)."""
    error = transport_error(exc, call)  # ours already, or httpx2's SSE parser refusing the answer
    if isinstance(error, APIConnectionError) and not isinstance(error, APITimeoutError):
        broken = StreamError(f"the stream broke after {len(chunks)} characters of the answer: {error}")
        broken.__cause__ = error
        return broken
    return error


class _Watched:
    """The reply as ``EventSource`` reads it (headers, request, text), plus a stall check.

    A read timeout is reset by any byte, so a gateway that sends only keep-alive comments (``: ping``)
    would keep a stream open for ever. Events are what count: once we have waited on the gateway
    longer than the call's timeout in all since the last event, the next chunk raises
    ``APITimeoutError``. Only time spent waiting counts: the caller may take as long as it likes
    between deltas (the data then waits in buffers, it is not a stall).
    """

    request = None  # EventSource attaches it to httpx2 errors; we map those ourselves

    def __init__(self, reply: Reply | AsyncReply, call: Call) -> None:
        self._reply: Any = reply  # a Reply for iter_text, an AsyncReply for aiter_text
        self._call = call
        self.headers = reply.headers
        self._waited = 0.0
        self._texts: AsyncGenerator[str, None] | None = None

    def saw_event(self) -> None:
        self._waited = 0.0

    def _waited_for(self, began: float) -> None:
        self._waited += time.perf_counter() - began
        if self._waited > self._call.timeout:
            raise APITimeoutError(
                f"{self._call.display_url} sent no stream data for {self._call.timeout:g} s (only "
                "keep-alive bytes); pass timeout=... to allow longer"
            )

    def iter_text(self) -> Iterator[str]:
        with contextlib.closing(self._reply.iter_text()) as chunks:
            while True:
                began = time.perf_counter()
                chunk = next(chunks, None)
                if chunk is None:
                    return
                self._waited_for(began)
                yield chunk

    def aiter_text(self) -> AsyncIterator[str]:
        self._texts = self._aiter_text()
        return self._texts

    async def _aiter_text(self) -> AsyncGenerator[str, None]:
        async with contextlib.aclosing(self._reply.aiter_text()) as chunks:
            while True:
                began = time.perf_counter()
                chunk = await anext(chunks, None)
                if chunk is None:
                    return
                self._waited_for(began)
                yield chunk

    async def aclose(self) -> None:
        """Close what ``aiter_text`` handed out now, rather than leave an async generator for the
        loop's finalizer (a wake-up per stream, or a warning once the loop is gone)."""
        if self._texts is not None:
            await self._texts.aclose()


class _Recovering:
    """What both streams do with a recovery plan (``_recover``) between one model's call and the next."""

    _link: StreamLink
    _call: Call
    _plan: Plan | None
    _response: LLMResponse | None
    #: The answer cache's answer to ``_call``, not yet given out (then nothing is sent for it).
    _answered: LLMResponse | None
    #: Whether the plan moved on to another model (an answer then carries what it took).
    _fell_back: bool
    accumulator: StreamAccumulator

    def _take_hit(self) -> LLMResponse | None:
        hit, self._answered = self._answered, None
        return hit

    def _done_with_hit(self, hit: LLMResponse) -> bool:
        """A cache hit was given out as ``_call``'s answer: True when the stream ends with it (after a
        fall-back, marked by the plan like any answer), False when the plan asks yet another model."""
        self._response = hit
        return not self._fell_back or not self._restart(hit)

    def _may_fall_back(self, error: BaseException) -> bool:
        """Whether the plan may still be asked: a failure of ours, and nothing shown yet."""
        return self._plan is not None and isinstance(error, FlotorchError) and not self.accumulator.text

    def _restart(self, outcome: LLMResponse | FlotorchError) -> bool:
        """Tell the plan how the call ended: True and ready for its next call, False when this answer
        is final (then marked with what it took); a failure it gives up on is raised."""
        assert self._plan is not None
        try:
            self._call = self._plan.send(outcome)
        except StopIteration as done:
            self._response = done.value
            return False
        self._response, self.accumulator, self._fell_back = None, StreamAccumulator(), True
        self._answered = self._link.cached(self._call)  # every model's call asks the cache first
        return True


class ChatStream(_Recovering):
    """Text deltas of one streamed answer; ``.response`` is the full ``LLMResponse`` after the end.

    Use it as ``for delta in llm.stream(...)`` or in a ``with`` block, which also closes the
    connection when you stop early.
    """

    def __init__(
        self, link: StreamLink, call: Call, *, answered: LLMResponse | None = None, plan: Plan | None = None
    ) -> None:
        self._link = link
        self._call = call
        #: Already answered (by the answer cache): iterating yields it at once and sends nothing.
        self._answered = answered
        self._fell_back = False
        #: The recovery plan (``_recover``) to ask for another model before the first delta, or None.
        self._plan = plan
        self._response: LLMResponse | None = None
        self._http: Reply | None = None
        self._deltas: Generator[str, None, None] | None = None
        self.accumulator = StreamAccumulator()

    @property
    def response(self) -> LLMResponse:
        """The complete answer; reading it before the stream ended drains the stream first."""
        if self._response is None:
            for _ in self:
                pass
        if self._response is None:
            raise StreamError("the stream was closed or failed before it finished: there is no answer")
        return self._response

    def __iter__(self) -> Generator[str, None, None]:
        # One request per stream: iterating again, or reading .response after a break, resumes the
        # same answer instead of sending the request a second time.
        if self._deltas is None:
            self._deltas = self._iterate()
        return self._deltas

    def _iterate(self) -> Generator[str, None, None]:
        while True:  # once, unless a recovery plan asks another model before the first delta
            if (hit := self._take_hit()) is not None:  # the whole answer at once; no request, no hook
                if hit.content:
                    yield hit.content
                if self._done_with_hit(hit):
                    return
                continue
            begun = self._link.begin(self._call)  # may refuse the call: nothing sent yet
            try:
                yield from self._deltas_of_one_request(begun[0])
            except BaseException as exc:  # GeneratorExit: closed mid-way, reported as "stopped"
                self._link.end(begun, exc, len(self.accumulator.text))
                if not self._may_fall_back(exc):
                    raise
                self._restart(cast("FlotorchError", exc))  # the next model's call, or exc raised
                continue
            assert self._response is not None
            self._link.end(begun, self._response, 0)
            if self._plan is None or not self._restart(self._response):
                return

    def _deltas_of_one_request(self, request: CallRequest | None) -> Generator[str, None, None]:
        import httpx2  # for EventSource: httpx-sse's parser, over our duck-typed reply

        link, call, accumulator = self._link, self._call, self.accumulator
        with link.tracked():  # a stream is in flight until it ends, fails or is closed
            http, started, body, held = link.send(call, request)
            self._http = http
            ended: LLMResponse | BaseException | None = None
            try:
                if not is_event_stream(http.headers):  # a gateway that ignored stream=true: one delta
                    info = response_info(http.headers, time.perf_counter() - started)
                    self._response = link.finish(parse_completion(body, info), call)
                    if self._response.content:
                        yield self._response.content
                    return
                watched = _Watched(http, call)
                try:
                    # A generator left by `break` is closed as soon as it is dropped (refcounting).
                    for event in httpx2.EventSource(watched):  # type: ignore[arg-type]
                        watched.saw_event()
                        delta = accumulator.feed(event.data)
                        if delta:
                            yield delta
                        if accumulator.done:  # the answer is complete: do not wait for more
                            break
                except Exception as exc:
                    error = _stream_failure(exc, call, accumulator.text)
                    if error is None or error is exc:
                        raise
                    raise error from exc
                info = response_info(http.headers, time.perf_counter() - started)
                self._response = link.finish(accumulator.finish(info), call)
            except BaseException as exc:  # GeneratorExit too: closed, or collected, mid-answer
                ended = exc
                if isinstance(exc, FlotorchError):
                    scrub(exc, call.key)
                raise
            finally:
                held.settle(ended or self._response or GeneratorExit(), len(accumulator.text))
                http.close()

    def close(self) -> None:
        """Stop reading and release the connection (also from another thread, to stop a reader)."""
        if self._deltas is None:
            self._deltas = self._iterate()  # closed before it started: it will never send a request
        if not getattr(self._deltas, "gi_running", False):  # another thread is in it: closing _http stops it
            self._deltas.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncChatStream(_Recovering):
    """The async twin of ``ChatStream``: ``async for delta in stream``, then ``stream.response``.

    Cancelling the task that iterates it (the chat panel's Stop) closes the HTTP stream at once.
    """

    def __init__(
        self, link: StreamLink, call: Call, *, answered: LLMResponse | None = None, plan: Plan | None = None
    ) -> None:
        self._link = link
        self._call = call
        self._answered = answered  # as in ChatStream
        self._fell_back = False
        self._plan = plan
        self._response: LLMResponse | None = None
        self._http: AsyncReply | None = None
        self._deltas: AsyncGenerator[str, None] | None = None
        self.accumulator = StreamAccumulator()

    @property
    def response(self) -> LLMResponse:
        """The complete answer; only available once iteration has finished."""
        if self._response is None:
            raise StreamError("the stream has not finished yet: iterate it to the end first")
        return self._response

    async def get_response(self) -> LLMResponse:
        """Drain the stream (if not yet done) and return the complete answer."""
        if self._response is None:
            async for _ in self:
                pass
        return self.response

    def __aiter__(self) -> AsyncGenerator[str, None]:
        # One request per stream, as in ChatStream: get_response() after a break resumes this answer.
        if self._deltas is None:
            self._deltas = self._iterate()
        return self._deltas

    async def _iterate(self) -> AsyncGenerator[str, None]:
        while True:  # as in ChatStream
            if (hit := self._take_hit()) is not None:
                if hit.content:
                    yield hit.content
                if self._done_with_hit(hit):
                    return
                continue
            begun = self._link.begin(self._call)  # may refuse the call: nothing sent yet
            try:  # aclosing: a stop closes the HTTP stream now, not when the generator is collected
                async with contextlib.aclosing(self._deltas_of_one_request(begun[0])) as deltas:
                    async for delta in deltas:
                        yield delta
            except BaseException as exc:  # GeneratorExit (closed) and CancelledError (Stop): "stopped"
                self._link.end(begun, exc, len(self.accumulator.text))
                if not self._may_fall_back(exc):
                    raise
                self._restart(cast("FlotorchError", exc))
                continue
            assert self._response is not None
            self._link.end(begun, self._response, 0)
            if self._plan is None or not self._restart(self._response):
                return

    async def _deltas_of_one_request(self, request: CallRequest | None) -> AsyncGenerator[str, None]:
        import httpx2

        link, call, accumulator = self._link, self._call, self.accumulator
        with link.tracked():  # in flight until it ends, fails, is closed or cancelled
            http, started, body, held = await link.asend(call, request)
            self._http = http
            watched = _Watched(http, call)
            ended: LLMResponse | BaseException | None = None
            try:
                if not is_event_stream(http.headers):
                    info = response_info(http.headers, time.perf_counter() - started)
                    self._response = link.finish(parse_completion(body, info), call)
                    if self._response.content:
                        yield self._response.content
                    return
                try:
                    source = httpx2.EventSource(watched)  # type: ignore[arg-type]
                    async with contextlib.aclosing(source.__aiter__()) as events:  # type: ignore[type-var]
                        async for event in events:
                            watched.saw_event()
                            delta = accumulator.feed(event.data)
                            if delta:
                                yield delta
                            if accumulator.done:  # the answer is complete: do not wait for more
                                break
                except Exception as exc:
                    error = _stream_failure(exc, call, accumulator.text)
                    if error is None or error is exc:
                        raise
                    raise error from exc
                info = response_info(http.headers, time.perf_counter() - started)
                self._response = link.finish(accumulator.finish(info), call)
            except BaseException as exc:  # GeneratorExit and CancelledError too: stopped mid-answer
                ended = exc
                if isinstance(exc, FlotorchError):
                    scrub(exc, call.key)
                raise
            finally:
                held.settle(ended or self._response or GeneratorExit(), len(accumulator.text))
                await watched.aclose()
                await http.aclose()

    async def aclose(self) -> None:
        """Stop reading and release the connection."""
        if self._deltas is None:
            self._deltas = self._iterate()
        # Another task may be inside the generator right now; closing _http below stops it instead.
        if not getattr(self._deltas, "ag_running", False):
            await self._deltas.aclose()
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
