"""Many calls at once on one client: ``batch``/``abatch`` and ``compare``/``acompare``.

A mixin of ``FlotorchLLM`` so that ``llm.py`` keeps only the single call and its two send loops. Each
method is a thin, documented entry point; the work lives in ``flotorch_nb.batch`` and
``flotorch_nb.compare``, imported on first use so ``import flotorch_nb`` stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    from .batch import BatchResult
    from .cache import AnswerCache
    from .compare import Comparison
    from .llm import FlotorchLLM

__all__ = ["ManyCalls"]

_TWIN_LOCK = threading.Lock()


class ManyCalls:
    """``FlotorchLLM``'s batch and comparison methods (see the module docstring)."""

    _batch_twin: FlotorchLLM | None

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
        cache: str | os.PathLike[str] | AnswerCache | bool | None = None,
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
            template=template,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            on_error=on_error,
            progress=progress,
            cache=cache,
            response_format=response_format,
            tools=tools,
            params=params,
        )
        return run_sync(self._self(), inputs, options)

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
        cache: str | os.PathLike[str] | AnswerCache | bool | None = None,
        response_format: Any = None,
        tools: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> BatchResult:
        """``batch`` on the running event loop (same arguments); cancelling it keeps what finished."""
        from .batch import BatchOptions, run_async

        options = BatchOptions.of(
            template=template,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            on_error=on_error,
            progress=progress,
            cache=cache,
            response_format=response_format,
            tools=tools,
            params=params,
        )
        return await run_async(self._self(), inputs, options)

    def compare(
        self, messages: list[dict[str, Any]], models: str | list[str] | tuple[str, ...], **params: Any
    ) -> Comparison:
        """Send ``messages`` to every model in ``models`` at once -> ``Comparison`` (one column per
        model; a model's failure stays in its column). See ``flotorch_nb.compare.compare``."""
        from .compare import compare

        return compare(self._self(), messages, models, **params)

    async def acompare(
        self, messages: list[dict[str, Any]], models: str | list[str] | tuple[str, ...], **params: Any
    ) -> Comparison:
        """Asynchronous ``compare``. See ``flotorch_nb.compare.acompare``."""
        from .compare import acompare

        return await acompare(self._self(), messages, models, **params)

    # -- the client a batch sends with ------------------------------------------------------------
    def _self(self) -> FlotorchLLM:
        from .llm import FlotorchLLM

        assert isinstance(self, FlotorchLLM)
        return self

    def _batch_sender(self) -> FlotorchLLM:
        """The client a batch sends with: this one's settings, pools of its own, the same ``hooks``
        object (so hooks added later still see every item), no retries and no cache, because the batch
        retries each item itself through its shared rate limiter and looks the cache up first."""
        from ._retry import RetryPolicy
        from .llm import FlotorchLLM

        me = self._self()
        with _TWIN_LOCK:
            if self._batch_twin is None:
                self._batch_twin = FlotorchLLM(
                    me.model_id,
                    me._settings.api_key.get_secret_value(),
                    me.base_url,
                    timeout=me.timeout,
                    retry=RetryPolicy(max_retries=0),
                    endpoint=me.endpoint,
                    async_http_client=me._pools.injected_async_client,
                    cache=False,
                )
            self._batch_twin.hooks = me.hooks  # the same lists, even if they were replaced since
            return self._batch_twin

    def _close_batch_sender(self) -> None:
        twin = self._batch_twin
        if twin is not None:  # its pools live on the bridge's loop: close them there
            from . import _bridge

            twin.close()
            _bridge.aclose_on_loop(twin)

    async def _aclose_batch_sender(self) -> None:
        if self._batch_twin is not None:  # its pool on this loop closes here, the others there
            await self._batch_twin.aclose()
