"""Streamed answers: ``ChatStream`` and ``AsyncChatStream``, twins written side by side.

Each stream object sends its request once, on first iteration, and feeds the SSE events to the pure
``StreamAccumulator``; iterating again, or reading ``.response`` after a ``break``, resumes the same
answer rather than paying for a second one. A connection that breaks mid-answer becomes a
``StreamError`` (a stall, an ``APITimeoutError``), never a silently short answer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING

from ._config import Secret
from ._errors import APIConnectionError, APITimeoutError, FlotorchError, StreamError
from ._response import LLMResponse, parse_completion
from ._sse import StreamAccumulator
from ._transport import Call, is_event_stream, is_transport_error, response_info, scrub, transport_error

if TYPE_CHECKING:
    import httpx2

    from .llm import FlotorchLLM

__all__ = ["AsyncChatStream", "ChatStream"]


def _stream_failure(exc: Exception, call: Call, chunks: str, key: Secret) -> FlotorchError:
    """What a broken stream means for the caller: a timeout, or a ``StreamError`` naming the damage."""
    error = transport_error(exc, call, key)
    if isinstance(error, APIConnectionError) and not isinstance(error, APITimeoutError):
        error = StreamError(f"the stream broke after {len(chunks)} characters of the answer: {error}")
    error.__cause__ = exc
    return error


class _Watched:
    """The HTTP response as ``EventSource`` reads it, plus a stall check between chunks.

    httpx2's read timeout is reset by any byte, so a gateway that sends only keep-alive comments
    (``: ping``) would keep a stream open for ever. Events are what count: when none arrived within
    the call's timeout while bytes kept coming, the next chunk raises ``APITimeoutError``.
    """

    def __init__(self, http: httpx2.Response, call: Call) -> None:
        self._http = http
        self._call = call
        self.headers = http.headers
        self.request = http.request
        self._last_event = time.perf_counter()

    def saw_event(self) -> None:
        self._last_event = time.perf_counter()

    def _check(self) -> None:
        if time.perf_counter() - self._last_event > self._call.timeout:
            raise APITimeoutError(
                f"{self._call.display_url} sent no stream data for {self._call.timeout:g} s (only "
                "keep-alive bytes); pass timeout=... to allow longer"
            )

    def iter_text(self) -> Iterator[str]:
        for chunk in self._http.iter_text():
            self._check()
            yield chunk

    async def aiter_text(self) -> AsyncIterator[str]:
        async for chunk in self._http.aiter_text():
            self._check()
            yield chunk


class ChatStream:
    """Text deltas of one streamed answer; ``.response`` is the full ``LLMResponse`` after the end.

    Use it as ``for delta in llm.stream(...)`` or in a ``with`` block, which also closes the
    connection when you stop early.
    """

    def __init__(self, llm: FlotorchLLM, call: Call) -> None:
        self._llm = llm
        self._call = call
        self._response: LLMResponse | None = None
        self._http: httpx2.Response | None = None
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
        begun = self._llm._before(self._call)  # may refuse the call: nothing sent yet
        try:
            yield from self._deltas_of_one_request()
        except BaseException as exc:  # GeneratorExit: closed mid-way, reported as "stopped"
            self._llm._after(begun, exc, len(self.accumulator.text))
            raise
        assert self._response is not None
        self._llm._after(begun, self._response)

    def _deltas_of_one_request(self) -> Generator[str, None, None]:
        import httpx2

        with self._llm._tracked_call():  # a stream is in flight until it ends, fails or is closed
            http, started, body = self._llm._send(self._call)
            self._http = http
            key = self._llm._settings.api_key
            try:
                if not is_event_stream(http):  # a gateway that ignored stream=true: the answer is one delta
                    info = response_info(http.headers, time.perf_counter() - started)
                    self._response = self._llm._finish(parse_completion(body, info), self._call)
                    if self._response.content:
                        yield self._response.content
                    return
                watched = _Watched(http, self._call)
                try:
                    for event in httpx2.EventSource(watched):  # type: ignore[arg-type]
                        watched.saw_event()
                        delta = self.accumulator.feed(event.data)
                        if delta:
                            yield delta
                except Exception as exc:
                    if not is_transport_error(exc):
                        raise
                    raise _stream_failure(exc, self._call, self.accumulator.text, key) from exc
                info = response_info(http.headers, time.perf_counter() - started)
                self._response = self._llm._finish(self.accumulator.finish(info), self._call)
            except FlotorchError as error:
                scrub(error, key)
                raise
            finally:
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


class AsyncChatStream:
    """The async twin of ``ChatStream``: ``async for delta in stream``, then ``stream.response``.

    Cancelling the task that iterates it (the chat panel's Stop) closes the HTTP stream at once.
    """

    def __init__(self, llm: FlotorchLLM, call: Call) -> None:
        self._llm = llm
        self._call = call
        self._response: LLMResponse | None = None
        self._http: httpx2.Response | None = None
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
        begun = self._llm._before(self._call)  # may refuse the call: nothing sent yet
        try:  # aclosing: a stop closes the HTTP stream now, not when the generator is collected
            async with contextlib.aclosing(self._deltas_of_one_request()) as deltas:
                async for delta in deltas:
                    yield delta
        except BaseException as exc:  # GeneratorExit (closed) and CancelledError (Stop) are "stopped"
            self._llm._after(begun, exc, len(self.accumulator.text))
            raise
        assert self._response is not None
        self._llm._after(begun, self._response)

    async def _deltas_of_one_request(self) -> AsyncGenerator[str, None]:
        import httpx2

        with self._llm._tracked_call():  # in flight until it ends, fails, is closed or cancelled
            http, started, body = await self._llm._asend(self._call)
            self._http = http
            key = self._llm._settings.api_key
            try:
                if not is_event_stream(http):
                    info = response_info(http.headers, time.perf_counter() - started)
                    self._response = self._llm._finish(parse_completion(body, info), self._call)
                    if self._response.content:
                        yield self._response.content
                    return
                watched = _Watched(http, self._call)
                try:
                    async for event in httpx2.EventSource(watched):  # type: ignore[arg-type]
                        watched.saw_event()
                        delta = self.accumulator.feed(event.data)
                        if delta:
                            yield delta
                except Exception as exc:
                    if not is_transport_error(exc):
                        raise
                    raise _stream_failure(exc, self._call, self.accumulator.text, key) from exc
                info = response_info(http.headers, time.perf_counter() - started)
                self._response = self._llm._finish(self.accumulator.finish(info), self._call)
            except FlotorchError as error:
                scrub(error, key)
                raise
            finally:
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
