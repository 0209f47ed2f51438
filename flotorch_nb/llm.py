"""``FlotorchLLM``: the seed's client (``invoke``/``ainvoke``) on a production transport, plus streaming.

Every decision is made by pure functions (``_request``, ``_response``, ``_sse``, ``_retry``,
``_transport``); this module only owns the two send loops, sync and async, written side by side so a
reader can see they match (the streamed twins live in ``_stream``). The sync path never touches
asyncio (``asyncio.run`` breaks inside Jupyter's running loop), and each event loop gets its own
pooled async client, because an httpx2 connection belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import _config
from . import cache as _cache
from ._errors import ConfigurationError, FlotorchError, HookError, StructuredOutputError
from ._hooks import CallRequest, CallResult, Hooks, Outcome
from ._request import build_body, encode_body
from ._response import LLMResponse, Source, parse_completion
from ._retry import RetryPolicy
from ._stream import AsyncChatStream, ChatStream
from ._transport import (
    Call,
    deadline_error,
    headers_for,
    is_event_stream,
    is_transport_error,
    make_async_client,
    make_client,
    response_info,
    scrub,
    status_failure,
    transport_error,
)
from .schema import convert_pydantic_to_custom_json_schema, normalize_response_format, parse_structured

if TYPE_CHECKING:
    import os

    import httpx2

    from .batch import BatchResult

__all__ = [
    "AsyncChatStream",
    "ChatStream",
    "FlotorchLLM",
    "LLMResponse",
    "convert_pydantic_to_custom_json_schema",
]

logger = logging.getLogger("flotorch_nb")


class FlotorchLLM:
    """A client bound to one FloTorch model and gateway, as in the seed SDK.

    ``FlotorchLLM(model_id, api_key, base_url)`` works exactly as documented; any of the three may be
    omitted and is then read from ``FLOTORCH_MODEL_ID`` / ``FLOTORCH_API_KEY`` / ``FLOTORCH_BASE_URL``.
    Keyword-only extras: ``timeout`` (seconds, per request), ``max_retries`` or a full ``retry`` policy,
    ``endpoint``, injected ``http_client`` / ``async_http_client`` (which we then never close),
    ``hooks`` run before every request and after every call (``flotorch_nb.Hooks``), and an answer
    ``cache`` (a SQLite file path, else ``FLOTORCH_CACHE``; ``False`` for none: see ``flotorch_nb.cache``).
    """

    def __init__(
        self,
        model_id: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        endpoint: str | None = None,
        http_client: httpx2.Client | None = None,
        async_http_client: httpx2.AsyncClient | None = None,
        hooks: Hooks | None = None,
        cache: str | os.PathLike[str] | _cache.AnswerCache | bool | None = None,
    ) -> None:
        self._settings = _config.resolve(
            model_id, api_key, base_url, endpoint=endpoint, timeout=timeout, max_retries=max_retries
        )
        self.retry = retry if retry is not None else RetryPolicy(max_retries=self._settings.max_retries)
        self._client = http_client
        self._owns_client = http_client is None
        self._user_async_client = async_http_client
        self._async_clients: dict[asyncio.AbstractEventLoop, httpx2.AsyncClient] = {}
        self._lock = threading.Lock()
        self._calls_lock = threading.Lock()
        self._in_flight = 0
        self._close_on_idle = False
        #: Whether the last answer came from an offline gateway (None until a call has answered).
        self.offline: bool | None = None
        #: Code run before every request and after every finished call (see ``flotorch_nb._hooks``).
        self.hooks = hooks if hooks is not None else Hooks()
        #: Answers kept in a SQLite file (``flotorch_nb.cache``), or None: a hit sends nothing.
        self.cache: _cache.AnswerCache | None = _cache.resolve_cache(cache)
        self._batch_twin: FlotorchLLM | None = None

    # -- configuration -------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """The default model of every call (a call's ``model=`` overrides it)."""
        return self._settings.model_id

    @property
    def base_url(self) -> str:
        """The gateway's base URL, without a trailing slash."""
        return self._settings.base_url

    @property
    def endpoint(self) -> str:
        """The chat-completions path, ``/api/openai/v1/chat/completions`` unless configured."""
        return self._settings.endpoint

    @property
    def url(self) -> str:
        """The full URL every call is POSTed to."""
        return self._settings.url

    @property
    def timeout(self) -> float:
        """Seconds a request may take before ``APITimeoutError`` (per attempt)."""
        return self._settings.timeout

    @property
    def mode(self) -> str:
        """``live``, ``record`` or ``replay`` (from ``FLOTORCH_RECORD`` / ``FLOTORCH_REPLAY``)."""
        return self._settings.cassette_mode or "live"

    def __repr__(self) -> str:
        base_url = _config.display_url(self.base_url)
        return f"FlotorchLLM(model_id={self.model_id!r}, base_url={base_url!r}, api_key='***')"

    def with_model(self, model_id: str) -> FlotorchLLM:
        """The same gateway, key, options and hooks for another model (its own pools and hook lists)."""
        if not isinstance(model_id, str) or not model_id.strip():
            raise ConfigurationError("model_id must be a non-empty string")
        return FlotorchLLM(
            model_id,
            self._settings.api_key.get_secret_value(),
            self.base_url,
            timeout=self.timeout,
            retry=self.retry,
            endpoint=self.endpoint,
            hooks=self.hooks.copy(),
            cache=self.cache if self.cache is not None else False,
        )

    # -- the pure part of a call ---------------------------------------------------------------
    def _prepare(
        self,
        messages: object,
        tools: object,
        response_format: object,
        extra_body: Mapping[str, Any] | None,
        kwargs: dict[str, Any],
        *,
        stream: bool,
    ) -> Call:
        timeout = kwargs.pop("timeout", None)
        model = kwargs.pop("model", None)
        if model is None:  # model="" is a mistake to report, not a reason to fall back silently
            model = self.model_id
        wire_format, model_class = normalize_response_format(response_format)
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
            url=self.url,
            body=body,
            content=encode_body(body),
            headers=headers_for(self._settings.api_key),
            timeout=_config.check_timeout(timeout, "timeout") if timeout is not None else self.timeout,
            model=model,
            stream=stream,
            model_class=model_class,
        )

    def _finish(self, response: LLMResponse, call: Call) -> LLMResponse:
        self.offline = response.offline
        response.source = self._source(response)
        if call.model_class is not None:
            try:
                response.parsed = parse_structured(call.model_class, response.content)
            except StructuredOutputError as error:
                error.response = response
                raise
        logger.debug(
            "%s answered in %.1f ms: %s tokens",
            call.model,
            response.latency_s * 1000,
            response.usage.total_tokens if response.usage else "unknown",
        )
        return response

    def _source(self, response: LLMResponse | None) -> Source:
        if self._settings.cassette_mode == "replay":
            return "replay"
        return "offline" if response is not None and response.offline else "live"

    def _complete(self, http: httpx2.Response, started: float, body: bytes, call: Call) -> LLMResponse:
        """A whole (non-streamed) 2xx body as the finished ``LLMResponse``."""
        info = response_info(http.headers, time.perf_counter() - started)
        try:
            return self._finish(parse_completion(body, info), call)
        except FlotorchError as error:
            scrub(error, self._settings.api_key)
            raise

    # -- hooks ---------------------------------------------------------------------------------
    def _before(self, call: Call) -> tuple[CallRequest | None, float]:
        """Run the ``before_request`` hooks (which may refuse the call); start the call's clock."""
        hooks = self.hooks
        request = None
        if hooks.before_request or hooks.after_call:
            request = hooks.request(call.model, call.body, stream=call.stream)
            hooks.run_before(request)
        return request, time.perf_counter()

    def _after(
        self,
        begun: tuple[CallRequest | None, float],
        outcome: LLMResponse | BaseException,
        partial_chars: int = 0,
    ) -> None:
        """Run the ``after_call`` hooks once for a finished call (answer, failure or stop).

        After a failure the failure is what the caller must see: a hook that raises then is logged
        and noted on the failure instead of replacing it.
        """
        request, started = begun
        if request is None or not self.hooks.after_call:
            return
        if isinstance(outcome, BaseException):
            response = getattr(outcome, "response", None)
            state: Outcome = "error" if isinstance(outcome, Exception) else "stopped"
            if isinstance(outcome, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
                state = "stopped"
            result = CallResult(
                request, state, response if isinstance(response, LLMResponse) else None, outcome,
                time.perf_counter() - started, self._source(None), partial_chars,
            )  # fmt: skip
            try:
                self.hooks.run_after(result)
            except HookError as hook_error:
                logger.warning("%s", hook_error)
                outcome.add_note(f"also: {hook_error}")
            return
        self.hooks.run_after(
            CallResult(request, "ok", outcome, None, time.perf_counter() - started, outcome.source)
        )

    # -- the sync shell ------------------------------------------------------------------------
    def _sync_client(self) -> httpx2.Client:
        with self._lock:
            if self._client is None:
                self._client = make_client(self._settings)
            return self._client

    def _send(self, call: Call) -> tuple[httpx2.Response, float, bytes]:
        """POST with retries. Returns the 2xx response, when it was sent, and its body read within
        ``call.timeout`` (a stream is returned open, with an empty body, for ``ChatStream``)."""
        client = self._sync_client()
        for attempt in range(self.retry.max_retries + 1):
            started = time.perf_counter()
            deadline = started + call.timeout
            logger.debug("POST %s model=%s attempt=%d", call.display_url, call.model, attempt + 1)
            try:
                request = client.build_request(
                    "POST", call.url, content=call.content, headers=call.headers, timeout=call.httpx_timeout
                )
                response = client.send(request, stream=True)
                logger.debug(
                    "HTTP %d in %.1f ms", response.status_code, 1000 * (time.perf_counter() - started)
                )
                if response.status_code < 300 and call.stream and is_event_stream(response):
                    return response, started, b""  # left open: ChatStream reads it event by event
                try:  # httpx2 times each read; a body that trickles in must still end by the deadline
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if time.perf_counter() > deadline:
                            raise deadline_error(call)
                finally:
                    response.close()
                if response.status_code < 300:
                    return response, started, bytes(body)
                error: FlotorchError = status_failure(response, bytes(body), self._settings.api_key)
            except Exception as exc:
                if not (isinstance(exc, FlotorchError) or is_transport_error(exc)):
                    raise
                error = transport_error(exc, call, self._settings.api_key)
                if error is not exc:
                    error.__cause__ = exc
            if not self.retry.should_retry(error, attempt):
                raise error
            delay = self.retry.delay_for(error, attempt)
            logger.info("retrying %s in %.2f s after: %s", call.model, delay, error)
            time.sleep(delay)
        raise AssertionError("unreachable: the retry loop always returns or raises")

    def invoke(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """Send a chat completion and wait for the whole answer (the seed's ``invoke``).

        ``kwargs`` are OpenAI parameters (``temperature``, ``max_tokens``, ``top_p``...), plus ``model``
        to override the model and ``timeout`` (seconds) for this call only.
        """
        call = self._prepare(messages, tools, response_format, extra_body, kwargs, stream=False)
        if self.cache is not None and (hit := self.cache.lookup(call)) is not None:
            return hit  # answer cache: nothing sent, no hook runs
        begun = self._before(call)
        try:
            with self._tracked_call():
                http, started, body = self._send(call)
            response = self._complete(http, started, body, call)
        except BaseException as exc:
            self._after(begun, exc)
            raise
        self._after(begun, response)
        if self.cache is not None:
            self.cache.store(call, response)
        return response

    def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChatStream:
        """Like ``invoke``, but iterate the returned ``ChatStream`` for text as it arrives;
        ``.response`` then holds the complete ``LLMResponse`` (token counts included)."""
        call = self._prepare(messages, tools, response_format, extra_body, kwargs, stream=True)
        if self.cache is not None:
            return self.cache.stream(self, call)  # the cached answer, or a stream stored at its end
        return ChatStream(self, call)

    # -- the async shell -----------------------------------------------------------------------
    def _async_client(self) -> httpx2.AsyncClient:
        if self._user_async_client is not None:
            return self._user_async_client
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # Clients of loops that are gone cannot be closed any more; forget them.
            for stale in [lp for lp in self._async_clients if lp.is_closed()]:
                del self._async_clients[stale]
            client = self._async_clients[loop] = make_async_client(self._settings)
            _close_when_loop_ends(loop, client)
        return client

    async def _asend(self, call: Call) -> tuple[httpx2.Response, float, bytes]:
        """The async twin of ``_send``: same decisions, ``await asyncio.sleep`` between tries."""
        client = self._async_client()
        for attempt in range(self.retry.max_retries + 1):
            started = time.perf_counter()
            deadline = started + call.timeout
            logger.debug("POST %s model=%s attempt=%d", call.display_url, call.model, attempt + 1)
            try:
                request = client.build_request(
                    "POST", call.url, content=call.content, headers=call.headers, timeout=call.httpx_timeout
                )
                response = await client.send(request, stream=True)
                logger.debug(
                    "HTTP %d in %.1f ms", response.status_code, 1000 * (time.perf_counter() - started)
                )
                if response.status_code < 300 and call.stream and is_event_stream(response):
                    return response, started, b""  # left open: ChatStream reads it event by event
                try:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if time.perf_counter() > deadline:
                            raise deadline_error(call)
                finally:
                    await response.aclose()
                if response.status_code < 300:
                    return response, started, bytes(body)
                error: FlotorchError = status_failure(response, bytes(body), self._settings.api_key)
            except Exception as exc:
                if not (isinstance(exc, FlotorchError) or is_transport_error(exc)):
                    raise
                error = transport_error(exc, call, self._settings.api_key)
                if error is not exc:
                    error.__cause__ = exc
            if not self.retry.should_retry(error, attempt):
                raise error
            delay = self.retry.delay_for(error, attempt)
            logger.info("retrying %s in %.2f s after: %s", call.model, delay, error)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the retry loop always returns or raises")

    async def ainvoke(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """Asynchronous ``invoke`` (the seed's ``ainvoke``); safe to run from many tasks at once."""
        call = self._prepare(messages, tools, response_format, extra_body, kwargs, stream=False)
        if self.cache is not None and (hit := self.cache.lookup(call)) is not None:
            return hit  # answer cache: nothing sent, no hook runs
        begun = self._before(call)
        try:
            with self._tracked_call():
                http, started, body = await self._asend(call)
            response = self._complete(http, started, body, call)
        except BaseException as exc:
            self._after(begun, exc)
            raise
        self._after(begun, response)
        if self.cache is not None:
            self.cache.store(call, response)
        return response

    def astream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncChatStream:
        """Asynchronous ``stream``: ``async for delta in llm.astream(...)``, then ``.response``."""
        call = self._prepare(messages, tools, response_format, extra_body, kwargs, stream=True)
        if self.cache is not None:
            return self.cache.astream(self, call)
        return AsyncChatStream(self, call)

    # -- many calls at once (flotorch_nb.batch) -------------------------------------------------
    def batch(
        self,
        inputs: Iterable[Any],
        *,
        template: str | None = None,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        on_error: str = "keep",
        progress: bool = True,
        cache: str | os.PathLike[str] | _cache.AnswerCache | bool | None = None,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> BatchResult:
        """Map prompts over a dataset: one answer or typed error per input, in input order.

        ``inputs``: prompts, message lists, a pandas Series, or a DataFrame with ``template=`` (its
        ``{fields}`` are columns). At most ``concurrency`` requests in flight, ``rpm``/``tpm`` held over
        any minute, a 429 pauses the whole batch; ``on_error="raise"`` stops at the first error
        (``BatchError``); ``cache`` (else the client's) answers what was answered before. ``params``
        are call parameters (``temperature``, ``max_tokens``, ``model``...). Blocks until done; an
        interrupt stops it and keeps what finished (``BatchInterrupted.result``). See ``flotorch_nb.batch``.
        """
        from .batch import BatchOptions, run_sync

        options = BatchOptions.of(
            template=template, concurrency=concurrency, rpm=rpm, tpm=tpm, on_error=on_error,
            progress=progress, cache=cache, response_format=response_format, tools=tools, params=params,
        )  # fmt: skip
        return run_sync(self, inputs, options)

    async def abatch(
        self,
        inputs: Iterable[Any],
        *,
        template: str | None = None,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        on_error: str = "keep",
        progress: bool = True,
        cache: str | os.PathLike[str] | _cache.AnswerCache | bool | None = None,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> BatchResult:
        """``batch`` on the running event loop (same arguments); cancelling it keeps what finished."""
        from .batch import BatchOptions, run_async

        options = BatchOptions.of(
            template=template, concurrency=concurrency, rpm=rpm, tpm=tpm, on_error=on_error,
            progress=progress, cache=cache, response_format=response_format, tools=tools, params=params,
        )  # fmt: skip
        return await run_async(self, inputs, options)

    def _batch_sender(self) -> FlotorchLLM:
        """The client a batch sends with: this one's settings, pools of its own, the same ``hooks``
        object (so hooks added later still see every item), no retries and no cache, because the batch
        retries each item itself through its shared rate limiter and looks the cache up first."""
        with self._lock:
            if self._batch_twin is None:
                from ._retry import RetryPolicy

                self._batch_twin = FlotorchLLM(
                    self.model_id,
                    self._settings.api_key.get_secret_value(),
                    self.base_url,
                    timeout=self.timeout,
                    retry=RetryPolicy(max_retries=0),
                    endpoint=self.endpoint,
                    async_http_client=self._user_async_client,
                    cache=False,
                )
            self._batch_twin.hooks = self.hooks  # the same lists, even if they were replaced since
            return self._batch_twin

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Calls under way now: from the first send (retry pauses included) until the answer is read,
        or for a stream until it ends, fails, is closed or is dropped."""
        return self._in_flight

    @contextlib.contextmanager
    def _tracked_call(self) -> Iterator[None]:
        with self._calls_lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._calls_lock:
                self._in_flight -= 1
            self._close_if_idle()

    def close_when_idle(self) -> None:
        """Close the pools now if no call is in flight, else as soon as the last one ends.

        For an owner that replaces this client (the notebook session on ``%flotorch model``) while a
        chat-panel stream may still be using it. Later calls still work; each time the client falls
        idle again its pools are closed again. The sync pool closes on the spot; with an event loop
        running in this thread (a kernel's), the async pools are closed there too.
        """
        with self._calls_lock:
            self._close_on_idle = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        with self._calls_lock:  # no call can begin between the check and the close
            if self._in_flight or not self._close_on_idle:
                return
            self.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # async pools are closed by the end of their own loops
        task = loop.create_task(self._aclose_if_idle())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def _aclose_if_idle(self) -> None:
        # Checked again on the loop: a call begun since is using the pool. From here until aclose()
        # has let go of its pools nothing awaits, so no call on this loop can slip in.
        if not self._in_flight:
            await self.aclose()

    def close(self) -> None:
        """Close the sync connection pool (an injected client is left to its owner)."""
        with self._lock:
            if self._client is not None and self._owns_client:
                self._client.close()
                self._client = None
            twin = self._batch_twin
        if twin is not None:  # its pools live on the batch loop: close them there
            from .batch import close_sender

            close_sender(twin)

    async def aclose(self) -> None:
        """Close every pool this client opened (the sync one too)."""
        if self._batch_twin is not None:  # first: its pool on this loop closes here, the others there
            await self._batch_twin.aclose()
        self.close()
        clients, self._async_clients = self._async_clients, {}
        current = asyncio.get_running_loop()
        for loop, client in clients.items():
            if loop is current:
                await client.aclose()
            elif loop.is_running():  # a pool belongs to its loop: close it there, not from here
                asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            # a closed loop's pool was closed by _close_at_loop_end; a stopped one cannot be reached

    def __enter__(self) -> FlotorchLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> FlotorchLLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- several models at once (flotorch_nb.compare) --------------------------------------------
    def compare(
        self, messages: list[dict[str, Any]], models: str | list[str] | tuple[str, ...], **params: Any
    ) -> Any:
        """Send ``messages`` to every model in ``models`` at once -> ``Comparison`` (one column per
        model; a model's failure stays in its column). See ``flotorch_nb.compare.compare``."""
        from .compare import compare

        return compare(self, messages, models, **params)

    async def acompare(
        self, messages: list[dict[str, Any]], models: str | list[str] | tuple[str, ...], **params: Any
    ) -> Any:
        """Asynchronous ``compare``. See ``flotorch_nb.compare.acompare``."""
        from .compare import acompare

        return await acompare(self, messages, models, **params)


#: close_when_idle()'s scheduled closes, kept referenced until done (asyncio holds tasks weakly).
_CLOSING: set[asyncio.Task[None]] = set()

#: Per event loop: the idle task that closes that loop's pools at its end, and the pools to close.
_LOOP_POOLS: dict[asyncio.AbstractEventLoop, tuple[asyncio.Task[None], weakref.WeakSet[Any]]] = {}


def _close_when_loop_ends(loop: asyncio.AbstractEventLoop, client: httpx2.AsyncClient) -> None:
    """Close ``client`` when ``asyncio.run()`` (or ``anyio.run``) ends its loop.

    Those runners cancel leftover tasks before closing the loop; one idle task per loop uses that
    moment to close the pools opened on it. Without it the seed's ``asyncio.run(main())`` leaves its
    keep-alive sockets open on a dead loop, where they can no longer be closed.
    """
    # A loop closed by hand (without cancelling its tasks) never ran our task's cleanup: forget it.
    for gone in [lp for lp in _LOOP_POOLS if lp.is_closed()]:
        del _LOOP_POOLS[gone]
    entry = _LOOP_POOLS.get(loop)
    if entry is None:
        pools: weakref.WeakSet[Any] = weakref.WeakSet()
        task = loop.create_task(_close_at_loop_end(loop, pools))
        # Such a hand-closed loop would also print "Task was destroyed but it is pending!" for this
        # idle helper; asyncio's own internal helpers silence it the same way.
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        entry = _LOOP_POOLS[loop] = (task, pools)
    entry[1].add(client)


async def _close_at_loop_end(loop: asyncio.AbstractEventLoop, pools: weakref.WeakSet[Any]) -> None:
    try:
        await loop.create_future()  # never set: only the runner's final cancellation ends this wait
    finally:
        _LOOP_POOLS.pop(loop, None)
        for client in list(pools):
            await client.aclose()
