"""``FlotorchLLM``: the seed's client (``invoke``/``ainvoke``) on a production transport, plus streaming.

Every decision is made by pure functions (``_request``, ``_response``, ``_sse``, ``_retry``,
``_transport``); this module only owns the two send loops, sync and async, written side by side so a
reader can see they match (the streams in ``_stream`` use them through a ``StreamLink``). The sync
path never touches asyncio (``asyncio.run`` breaks inside Jupyter's running loop). The pools live in
``_pools``: an httpx2 client for sync calls, and per event loop an aiohttp pool for async ones (a
connection belongs to the loop that opened it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _config, _logsink
from . import cache as _cache
from ._admission import Asked, aadmit, admit
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
from ._errors import ConfigurationError, FlotorchError, InvalidRequestError
from ._hooks import CallRequest, Hooks
from ._many import ManyCalls
from ._recover import Plan, adrive, check_validation_retries, drive, recover
from ._response import LLMResponse
from ._retry import RetryPolicy
from ._stream import AsyncChatStream, ChatStream, StreamLink
from ._text import non_empty
from ._transport import (
    AsyncReply,
    Call,
    Reply,
    closed_error,
    is_event_stream,
    redirect_target,
    status_failure,
)
from ._transport._httpx import open_sync
from ._transport._pools import Pools
from ._transport._pools import forget_closed_loops as forget_closed_loops
from .schema import convert_pydantic_to_custom_json_schema

if TYPE_CHECKING:
    import asyncio

    import httpx2

    from ._transport import AsyncPool

__all__ = [
    "AsyncChatStream",
    "ChatStream",
    "FlotorchLLM",
    "LLMResponse",
    "convert_pydantic_to_custom_json_schema",
]

logger = logging.getLogger("flotorch_nb")

#: What ``copy()`` may change: these go through ``_config.derive``, the rest are the client's own.
_SETTINGS = ("model_id", "api_key", "base_url", "endpoint", "timeout", "max_retries")
_COPYABLE = frozenset(
    (*_SETTINGS, "retry", "hooks", "cache", "fallbacks", "http_client", "async_http_client")
)


class FlotorchLLM(ManyCalls):
    """A client bound to one FloTorch model and gateway, as in the seed SDK.

    ``FlotorchLLM(model_id, api_key, base_url)`` works exactly as documented; any of the three may be
    omitted and is then read from ``FLOTORCH_MODEL_ID`` / ``FLOTORCH_API_KEY`` / ``FLOTORCH_BASE_URL``.
    Keyword-only extras: ``timeout`` (seconds, per request), ``max_retries`` or a full ``retry`` policy,
    ``endpoint``, injected ``http_client`` / ``async_http_client`` (which we then never close),
    ``hooks`` run before every request and after every call (``flotorch_nb.Hooks``), and an answer
    ``cache`` (a SQLite file path, else ``FLOTORCH_CACHE``; ``False`` for none: see ``flotorch_nb.cache``),
    and ``fallbacks``: other model ids to ask, in order, when a call still fails after its retries on
    a 429, a 5xx, a timeout, a lost connection, a prompt too long for the model, an empty answer or a
    structured answer that does not validate (``flotorch_nb._recover``; the answer's ``fallbacks``
    and provenance say which models were passed over and why).
    Many calls at once: ``batch``/``abatch`` and ``compare``/``acompare`` (``flotorch_nb._many``).
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
        fallbacks: Sequence[str] | None = None,
    ) -> None:
        settings = _config.resolve(
            model_id, api_key, base_url, endpoint=endpoint, timeout=timeout, max_retries=max_retries
        )
        retry = retry if retry is not None else RetryPolicy(max_retries=settings.max_retries)
        hooks = hooks if hooks is not None else Hooks()
        if (os.environ.get(_logsink.ENV_LOG) or None) != _logsink.env_seen:  # FLOTORCH_LOG changed
            from .calllog import from_env

            from_env()  # FLOTORCH_LOG=calls.sqlite: the process's calls are logged from now on
        chain = _config.check_fallbacks(fallbacks, settings.model_id)
        self._setup(
            settings, retry, http_client, async_http_client, hooks, _cache.resolve_cache(cache), chain
        )

    def _setup(
        self,
        settings: _config.Settings,
        retry: RetryPolicy,
        http_client: httpx2.Client | None,
        async_http_client: httpx2.AsyncClient | None,
        hooks: Hooks,
        cache: _cache.AnswerCache | None,
        fallbacks: tuple[str, ...] = (),
    ) -> None:
        self._settings = settings
        self._fallbacks = fallbacks
        self.retry = retry
        self._injected = (http_client, async_http_client)  # shared by copies; their owner closes them
        self._pools = Pools(settings, http_client, async_http_client)
        #: Whether the last answer came from an offline gateway (None until a call has answered).
        self.offline: bool | None = None
        #: Code run before every request and after every finished call (see ``flotorch_nb._hooks``).
        self.hooks = hooks
        #: Answers kept in a SQLite file (``flotorch_nb.cache``), or None: a hit sends nothing.
        self.cache: _cache.AnswerCache | None = cache

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
    def gateway_key(self) -> str:
        """Which gateway and key this client calls, without the key: the base URL and the key's
        fingerprint (what ``concurrency="auto"`` keeps one window per)."""
        return f"{self._settings.base_url}#{self._settings.api_key.fingerprint()}"

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
    def fallbacks(self) -> tuple[str, ...]:
        """The models asked, in order, when a call to this client's model fails in a way another model
        may not (empty: none). A call's ``model=`` is asked first; a fallback equal to it is skipped."""
        return self._fallbacks

    @property
    def mode(self) -> str:
        """``live``, ``record`` or ``replay`` (from ``FLOTORCH_RECORD`` / ``FLOTORCH_REPLAY``)."""
        return self._settings.cassette_mode or "live"

    def __repr__(self) -> str:
        base_url = _config.display_url(self.base_url)
        return f"FlotorchLLM(model_id={self.model_id!r}, base_url={base_url!r}, api_key='***')"

    def copy(self, **overrides: Any) -> FlotorchLLM:
        """A client like this one with some options replaced: ``model_id``, ``api_key``, ``base_url``,
        ``timeout``, ``max_retries`` or ``retry``, ``endpoint``, ``hooks``, ``cache`` (False: none),
        ``fallbacks`` (``[]``: none), ``http_client`` / ``async_http_client``.

        Fallbacks are kept, except the new ``model_id`` when it was one of them (``with_model`` on a
        fallback asks that model first, then the others).

        The copy keeps this client's key (never unwrapped: see ``_config.derive``), options, cache
        and injected HTTP clients, and starts with copies of its hook and gate lists, so adding a
        hook to one never changes the other. It has connection pools of its own: closing one
        client never closes the other's (injected HTTP clients are left to their owner, as always).
        """
        unknown = sorted(set(overrides) - _COPYABLE)
        if unknown:
            raise ConfigurationError(
                f"copy() cannot change {', '.join(unknown)}; it takes {', '.join(sorted(_COPYABLE))}"
            )
        named = {k: overrides[k] for k in _SETTINGS if overrides.get(k) is not None}
        settings = _config.derive(self._settings, **named)
        retry = overrides.get("retry")
        if retry is None:
            retry = RetryPolicy(max_retries=settings.max_retries) if "max_retries" in named else self.retry
        hooks = overrides.get("hooks")
        cache = overrides.get("cache")
        fallbacks = overrides.get("fallbacks")
        if fallbacks is None:
            fallbacks = [m for m in self._fallbacks if m != settings.model_id]
        chain = _config.check_fallbacks(fallbacks, settings.model_id)
        http_client, async_http_client = self._injected
        copied = FlotorchLLM.__new__(FlotorchLLM)
        copied._setup(
            settings,
            retry,
            overrides.get("http_client", http_client),
            overrides.get("async_http_client", async_http_client),
            hooks if hooks is not None else self.hooks.copy(),
            self.cache if cache is None else _cache.resolve_cache(cache),
            chain,
        )
        return copied

    def with_model(self, model_id: str) -> FlotorchLLM:
        """``copy(model_id=model_id)``: the same gateway, key, options and hooks for another model."""
        return self.copy(model_id=non_empty(model_id, "model_id"))

    # -- preparing a call (see _call) ---------------------------------------------------------------
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
        return prepare(self._settings, messages, tools, response_format, extra_body, kwargs, stream=stream)

    def check(
        self,
        messages: Any,
        tools: Any = None,
        response_format: Any = None,
        extra_body: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Refuse a call as ``invoke`` would (``InvalidRequestError``, ``ConfigurationError``), without
        sending anything: a batch checks its shared parameters once, up front."""
        self._plan(messages, tools, response_format, extra_body, kwargs, stream=False).close()

    def _recovering(self, kwargs: dict[str, Any]) -> bool:
        """Whether a call needs the recovery layer (``_recover``): fallbacks, or validation retries."""
        return bool(self._fallbacks) or "validation_retries" in kwargs

    def _plan(
        self,
        messages: Any,
        tools: Any,
        response_format: Any,
        extra_body: Mapping[str, Any] | None,
        kwargs: dict[str, Any],
        *,
        stream: bool,
    ) -> Plan:
        """The recovery plan of one call (``_recover.recover``), everything refused before any I/O:
        its first call prepared, ``validation_retries`` checked (a stream refuses it: its text has
        been shown by the time the answer can be validated)."""
        retries = kwargs.pop("validation_retries", None)
        first = self._prepare(messages, tools, response_format, extra_body, dict(kwargs), stream=stream)
        if retries is not None:
            check_validation_retries(retries, first.model_class)
            if stream:
                raise InvalidRequestError(
                    "validation_retries does not apply to a stream: its text is shown before the "
                    "answer can be validated; use invoke()/ainvoke() to re-ask on invalid answers"
                )

        def ask(conversation: list[dict[str, Any]], model: str) -> Call:
            again = {**kwargs, "model": model}
            return self._prepare(conversation, tools, response_format, extra_body, again, stream=stream)

        return recover(first, messages, retries or 0, self._fallbacks, ask)

    # -- what a stream uses of its client (the steps are _call's, as for invoke) -------------------
    def _finish(self, response: LLMResponse, call: Call) -> LLMResponse:
        """A stream's answer through the same last steps as invoke's (``_call.finished``)."""
        self.offline = response.offline
        return finished(response, call, self._settings, self.cache)

    def _stream_link(self) -> StreamLink:
        """All a stream may use of this client (made per stream: a client holding it would be a cycle)."""
        return StreamLink(
            self._send,
            self._asend,
            self._before,
            self._after,
            self._finish,
            self._pools.tracked,
            self._cached,
        )

    def _cached(self, call: Call) -> LLMResponse | None:
        """The answer cache's answer to ``call`` (``_call.answered``), or None: a stream sends nothing."""
        return answered(self.cache, call, self._settings) if self.cache is not None else None

    def _before(self, call: Call) -> Begun:
        return begin(self.hooks, call)  # self.hooks is read now: it may have been replaced

    def _after(self, begun: Begun, outcome: LLMResponse | BaseException, partial_chars: int = 0) -> None:
        end(self.hooks, begun, outcome, source_of(self._settings), partial_chars)

    # -- the sync shell ------------------------------------------------------------------------
    def _send(self, call: Call, request: CallRequest | None = None) -> tuple[Reply, float, bytes, Held]:
        """POST with retries, following same-origin 307/308 redirects. Returns the 2xx reply, when
        its attempt began, its body read within ``call.timeout`` (a stream's is left unread), and the
        tickets of the gates that admitted that attempt, for the caller to settle when the call ends.
        Every other attempt is admitted before it is sent and settled here (``_admission``)."""
        client = self._pools.sync()
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

    def invoke(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """Send a chat completion and wait for the whole answer (the seed's ``invoke``).

        ``kwargs`` are OpenAI parameters (``temperature``, ``max_tokens``, ``top_p``...), plus ``model``
        to override the model and ``timeout`` (seconds) for this call only, and
        ``validation_retries=N`` with a pydantic ``response_format``: re-ask up to N times with the
        validation errors (``flotorch_nb._recover``; the answer's ``attempts`` and ``usage_total``
        say what it took).
        """
        if self._recovering(kwargs):
            plan = self._plan(messages, tools, response_format, extra_body, kwargs, stream=False)
            return drive(plan, self._invoke)
        return self._invoke(self._prepare(messages, tools, response_format, extra_body, kwargs, stream=False))

    def _invoke(self, call: Call) -> LLMResponse:
        """One call, whole, down the pipeline (``_call``): the answer cache, the hooks, the send loop,
        the answer finished."""
        settings, cache, hooks = self._settings, self.cache, self.hooks
        if cache is not None and (hit := answered(cache, call, settings)) is not None:
            return hit  # answer cache: nothing sent, no hook runs
        begun = begin(hooks, call)  # before_request hooks: may refuse the call, nothing sent yet
        try:
            with self._pools.tracked():
                http, started, body, held = self._send(call, begun[0])
            response = completed(http.headers, started, body, call, settings, cache, held)
        except BaseException as exc:
            end(hooks, begun, exc, source_of(settings))
            raise
        self.offline = response.offline
        end(hooks, begun, response, source_of(settings))
        return response

    def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChatStream:
        """Like ``invoke``, but iterate the returned ``ChatStream`` for text as it arrives;
        ``.response`` then holds the complete ``LLMResponse`` (token counts included). With
        ``fallbacks``, a model that fails before the first delta is passed over for the next;
        ``validation_retries`` is refused (the text is shown before it can be validated)."""
        if self._recovering(kwargs):
            plan = self._plan(messages, tools, response_format, extra_body, kwargs, stream=True)
            call = next(plan)
            return ChatStream(self._stream_link(), call, answered=self._cached(call), plan=plan)
        call = self._prepare(messages, tools, response_format, extra_body, kwargs, stream=True)
        return ChatStream(self._stream_link(), call, answered=self._cached(call))

    # -- the async shell -----------------------------------------------------------------------
    async def _asend(
        self, call: Call, request: CallRequest | None = None
    ) -> tuple[AsyncReply, float, bytes, Held]:
        """The async twin of ``_send``: same decisions, ``await asyncio.sleep`` between tries."""
        import asyncio  # here, not at the top: `import flotorch_nb` stays without it (~half its cost)

        pool: AsyncPool = self._pools.for_loop()
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

    async def ainvoke(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """Asynchronous ``invoke`` (the seed's ``ainvoke``); safe to run from many tasks at once."""
        if self._recovering(kwargs):
            plan = self._plan(messages, tools, response_format, extra_body, kwargs, stream=False)
            return await adrive(plan, self._ainvoke)
        call = self._prepare(messages, tools, response_format, extra_body, kwargs, stream=False)
        return await self._ainvoke(call)

    async def _ainvoke(self, call: Call) -> LLMResponse:
        """The async twin of ``_invoke``."""
        settings, cache, hooks = self._settings, self.cache, self.hooks
        if cache is not None and (hit := answered(cache, call, settings)) is not None:
            return hit  # answer cache: nothing sent, no hook runs
        begun = begin(hooks, call)  # before_request hooks: may refuse the call, nothing sent yet
        try:
            with self._pools.tracked():
                http, started, body, held = await self._asend(call, begun[0])
            response = completed(http.headers, started, body, call, settings, cache, held)
        except BaseException as exc:
            end(hooks, begun, exc, source_of(settings))
            raise
        self.offline = response.offline
        end(hooks, begun, response, source_of(settings))
        return response

    def astream(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncChatStream:
        """Asynchronous ``stream``: ``async for delta in llm.astream(...)``, then ``.response``."""
        if self._recovering(kwargs):
            plan = self._plan(messages, tools, response_format, extra_body, kwargs, stream=True)
            call = next(plan)
            return AsyncChatStream(self._stream_link(), call, answered=self._cached(call), plan=plan)
        call = self._prepare(messages, tools, response_format, extra_body, kwargs, stream=True)
        return AsyncChatStream(self._stream_link(), call, answered=self._cached(call))

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Calls under way now: from the first send (retry pauses included) until the answer is read,
        or for a stream until it ends, fails, is closed or is dropped."""
        return self._pools.in_flight

    @property
    def _client(self) -> httpx2.Client | None:
        """The sync pool, if one is open (for tests and the notebook session)."""
        return self._pools.client

    @property
    def _async_clients(self) -> dict[asyncio.AbstractEventLoop, AsyncPool]:
        """The async pools we opened, by event loop."""
        return self._pools.by_loop

    def close_when_idle(self) -> None:
        """Close the pools now if no call is in flight, else as soon as the last one ends.

        For an owner that replaces this client (the notebook session on ``%flotorch model``) while a
        chat-panel stream may still be using it. Later calls still work; each time the client falls
        idle again its pools are closed again. The sync pool closes on the spot; with an event loop
        running in this thread (a kernel's), the async pools are closed there too.
        """
        self._pools.close_when_idle()

    def close(self) -> None:
        """Close the sync connection pool (an injected client is left to its owner). A call in flight
        on it fails with ``APIConnectionError``; the next call opens a new pool."""
        self._pools.close()
        self._close_elsewhere()

    async def aclose(self) -> None:
        """Close every pool this client opened (the sync one too)."""
        await self._pools.aclose()

    def _close_elsewhere(self, timeout: float = 5.0) -> None:
        """Close the async pools this client has on event loops running in other threads (the
        background loop of ``batch()`` and Dask partitions), each on its own loop."""
        if not self._pools.by_loop:
            return
        import asyncio

        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, pool in list(self._pools.by_loop.items()):
            if loop is current or not loop.is_running():
                continue  # this thread's loop: aclose() there; a stopped loop cannot be reached
            self._pools.by_loop.pop(loop, None)
            closing = asyncio.run_coroutine_threadsafe(pool.aclose(), loop)
            with contextlib.suppress(Exception):  # a pool that will not close must not hang close()
                closing.result(timeout)

    def __enter__(self) -> FlotorchLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> FlotorchLLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _held(admitted: tuple[Any, ...], request: Asked | None, headers: Mapping[str, str]) -> Held:
    return Held(admitted, request, headers) if admitted else NOT_HELD


def _log_redirect(status: int, target: str) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("HTTP %d: following it to %s", status, _config.display_url(target))


def _log_status(status: int, started: float) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("HTTP %d in %.1f ms", status, 1000 * (time.perf_counter() - started))
