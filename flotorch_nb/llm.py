"""``FlotorchLLM``: the seed's client (``invoke``/``ainvoke``) on a production transport, plus streaming.

This module is the face: configuration, ``copy``, the public methods and the lifecycle. Every call
goes down the client's ``Pipeline`` (``flotorch_nb._pipeline``): the one send loop, and the steps
around it (answer cache, hooks, gates, retries, recovery, provenance), written once for every path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _config
from . import cache as _cache
from ._errors import ConfigurationError
from ._many import ManyCalls
from ._pipeline import _logsink
from ._pipeline._hooks import Hooks
from ._pipeline._loop import Pipeline
from ._pipeline._stream import AsyncChatStream, ChatStream
from ._response import LLMResponse
from ._retry import RetryPolicy
from ._text import non_empty
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
    structured answer that does not validate (``flotorch_nb._pipeline._recover``; the answer's ``fallbacks``
    and provenance say which models were passed over and why).
    Many calls at once: ``batch``/``abatch`` and ``compare``/``acompare`` (``flotorch_nb._many``).
    """

    #: Where every call of this client lives: the one send loop and the steps around it.
    _pipeline: Pipeline

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
        self._injected = (http_client, async_http_client)  # shared by copies; their owner closes them
        pools = Pools(settings, http_client, async_http_client)
        self._pipeline = Pipeline(settings, pools, retry, hooks, cache, fallbacks)

    @property
    def _settings(self) -> _config.Settings:
        return self._pipeline.settings

    @property
    def _pools(self) -> Pools:
        return self._pipeline.pools

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
        return self._pipeline.fallbacks

    @property
    def retry(self) -> RetryPolicy:
        """How failed attempts are retried (``flotorch_nb.RetryPolicy``); replaceable, from the next call."""
        return self._pipeline.retry

    @retry.setter
    def retry(self, retry: RetryPolicy) -> None:
        self._pipeline.retry = retry

    @property
    def hooks(self) -> Hooks:
        """Code run before every request and after every finished call (``flotorch_nb.Hooks``)."""
        return self._pipeline.hooks

    @hooks.setter
    def hooks(self, hooks: Hooks) -> None:
        self._pipeline.hooks = hooks

    @property
    def cache(self) -> _cache.AnswerCache | None:
        """Answers kept in a SQLite file (``flotorch_nb.cache``), or None: a hit sends nothing."""
        return self._pipeline.cache

    @cache.setter
    def cache(self, cache: _cache.AnswerCache | None) -> None:
        self._pipeline.cache = cache

    @property
    def offline(self) -> bool | None:
        """Whether the last answer came from an offline gateway (None until a call has answered)."""
        return self._pipeline.offline

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
            fallbacks = [m for m in self.fallbacks if m != settings.model_id]
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
        self._pipeline.plan(messages, tools, response_format, extra_body, kwargs, stream=False).close()

    # -- the calls: each goes down the pipeline (flotorch_nb._pipeline) -----------------------------
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
        validation errors (``flotorch_nb._pipeline._recover``; the answer's ``attempts`` and
        ``usage_total`` say what it took).
        """
        return self._pipeline.invoke(messages, tools, response_format, extra_body, kwargs)

    async def ainvoke(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """Asynchronous ``invoke`` (the seed's ``ainvoke``); safe to run from many tasks at once."""
        return await self._pipeline.ainvoke(messages, tools, response_format, extra_body, kwargs)

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
        return self._pipeline.stream(messages, tools, response_format, extra_body, kwargs)

    def astream(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncChatStream:
        """Asynchronous ``stream``: ``async for delta in llm.astream(...)``, then ``.response``."""
        return self._pipeline.astream(messages, tools, response_format, extra_body, kwargs)

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
