"""Many calls at once on one client: ``batch``/``abatch`` and ``compare``/``acompare``.

The tool loop (``run``/``arun``) is many calls too: one per model turn (``flotorch_nb.tools``).
A mixin of ``FlotorchLLM`` so that ``llm.py`` stays the client's face for a single call. Each
method is a thin, documented entry point; the work lives in ``flotorch_nb.batch`` and
``flotorch_nb.compare``, imported on first use so ``import flotorch_nb`` stays light.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    import os

    from ._client import Client
    from .batch import BatchResult
    from .cache import AnswerCache
    from .compare import Comparison
    from .tools import ToolRun

__all__ = ["ManyCalls"]


class ManyCalls:
    """``FlotorchLLM``'s batch, comparison and tool-loop methods (see the module docstring)."""

    def batch(
        self,
        inputs: Iterable[Any],
        *,
        template: str | None = None,
        concurrency: int | Literal["auto"] = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        on_error: str = "keep",
        progress: bool = True,
        cache: str | os.PathLike[str] | AnswerCache | bool | None = None,
        response_format: Any = None,
        tools: list[Any] | None = None,
        **params: Any,
    ) -> BatchResult:
        """Map prompts over a dataset: one answer or typed error per input, in input order.

        ``inputs``: prompts, message lists, a pandas Series, or a DataFrame with ``template=`` (its
        ``{fields}`` are columns). At most ``concurrency`` requests in flight (``"auto"``: as many
        as the gateway key sustains, found as it runs and shared by every batch on that key),
        ``rpm``/``tpm`` held over any minute, a 429 pauses the whole batch; ``on_error="raise"``
        stops at the first error (``BatchError``); ``cache`` (else the client's) answers what was
        answered before. ``params`` are call parameters (``temperature``, ``max_tokens``,
        ``model``...). Blocks until done; an interrupt stops it and keeps what finished
        (``BatchInterrupted.result``). See ``flotorch_nb.batch``.
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
        return run_sync(cast("Client", self), inputs, options)

    async def abatch(
        self,
        inputs: Iterable[Any],
        *,
        template: str | None = None,
        concurrency: int | Literal["auto"] = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        on_error: str = "keep",
        progress: bool = True,
        cache: str | os.PathLike[str] | AnswerCache | bool | None = None,
        response_format: Any = None,
        tools: list[Any] | None = None,
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
        return await run_async(cast("Client", self), inputs, options)

    def compare(
        self, messages: list[dict[str, Any]], models: str | list[str] | tuple[str, ...], **params: Any
    ) -> Comparison:
        """Send ``messages`` to every model in ``models`` at once -> ``Comparison`` (one column per
        model; a model's failure stays in its column). See ``flotorch_nb.compare.compare``."""
        from .compare import compare

        return compare(cast("Client", self), messages, models, **params)

    async def acompare(
        self, messages: list[dict[str, Any]], models: str | list[str] | tuple[str, ...], **params: Any
    ) -> Comparison:
        """Asynchronous ``compare``. See ``flotorch_nb.compare.acompare``."""
        from .compare import acompare

        return await acompare(cast("Client", self), messages, models, **params)

    async def arun(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any],
        *,
        max_steps: int = 10,
        approve: Any = None,
        parallel: bool = True,
        **params: Any,
    ) -> ToolRun:
        """Let the model call Python functions until it answers -> ``ToolRun`` (``.content``,
        ``.steps``, ``.messages``, ``.usage`` of every step).

        ``tools``: functions (their signature and docstring are the schema; ``@flotorch_nb.tool`` is
        optional) and tool dicts. Each model turn is one ``ainvoke`` (hooks, budgets, cache, replay
        apply); the calls of a turn run concurrently (``parallel=False``: one after the other); bad
        arguments or a tool's exception go back to the model as the result. ``approve``: True (ask a
        person before every call), a set of tool names (before those), or a function of the
        ``ToolCall`` returning True, False or a reason sent back as the denial (a denied call never
        runs); a person is asked on stdin, or awaited in a notebook with an Approve / Deny widget
        (``flotorch_nb.tools._approval``). ``.cost`` sums every step's. More than
        ``max_steps`` turns: ``MaxStepsError`` with ``.run``; cancelled: ``ToolRunCancelled`` with
        ``.run``. ``params`` are call parameters (``temperature``, ``model``...).
        """
        from .tools import arun

        return await arun(
            cast("Client", self),
            messages,
            tools,
            max_steps=max_steps,
            approve=approve,
            parallel=parallel,
            **params,
        )

    def run(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any],
        *,
        max_steps: int = 10,
        approve: Any = None,
        parallel: bool = True,
        **params: Any,
    ) -> ToolRun:
        """``arun`` from sync code, on the process's one background loop (works in a notebook); an
        interrupt stops it and keeps the finished steps (``ToolRunInterrupted.run``)."""
        from . import _bridge
        from .tools import ToolRunCancelled, ToolRunInterrupted, arun, check

        check(tools, max_steps, approve, parallel)  # mistakes raised here, in the caller's thread

        def interrupted(outcome: Any) -> BaseException:
            if isinstance(outcome, ToolRunCancelled):
                return ToolRunInterrupted(outcome.run)
            return KeyboardInterrupt()

        coro = arun(
            cast("Client", self),
            messages,
            tools,
            max_steps=max_steps,
            approve=approve,
            parallel=parallel,
            **params,
        )
        return _bridge.run(coro, interrupted=interrupted)
