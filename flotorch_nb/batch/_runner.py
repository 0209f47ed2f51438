"""The batch engine: bounded workers pulling from the inputs, one shared limiter, input-ordered slots.

``concurrency`` worker tasks each take the next position from one shared iterator, so work is fed in
as capacity frees up (never one coroutine per item) and each finished item is written into its
preallocated slot. Each item is one ``ainvoke`` of the client itself: its answer cache, hooks,
retries and redirects are the client's, in its one send loop. What the batch adds plugs into that
loop as gates (``flotorch_nb._admission``), scoped to the batch's workers by ``gated``: the shared
rate limiter (``LimiterGate``: a grant before each attempt, the tokens spent after, a 429 pauses the
whole batch) and a per-worker counter of the attempts each item made.

Stops: ``on_error="raise"`` cancels the other workers at the first error and raises ``BatchError``;
a ``BudgetExceededError`` from a hook stops launching and every item not sent carries one;
cancellation (``abatch``'s task, or an interrupt of ``batch``) cancels the requests in flight —
closing their connections — and raises ``BatchCancelled`` / ``BatchInterrupted`` with the partial
result. Every finished answer is in that result, and in the cache when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from .. import _bridge
from .._admission import Asked, AsyncGate, Gate, Spent, Ticket, gated, remote
from .._errors import (
    APIStatusError,
    BudgetExceededError,
    ConfigurationError,
    FlotorchError,
    InvalidRequestError,
)
from .._pipeline._hooks import call_label
from ..cache import AnswerCache, StoredAnswer, resolve_cache
from ._auto import controller_for
from ._inputs import Inputs
from ._limits import Limiter, LimiterGate, RateLimiter, pause_after
from ._options import AUTO, AutoWindow, BatchOptions
from ._progress import TICK_S, Progress
from ._result import BatchError, BatchItem, BatchResult, BatchStats, ItemCancelledError, Rerun

if TYPE_CHECKING:
    from .._client import Client

__all__ = ["BatchCancelled", "BatchInterrupted", "run_async", "run_sync"]

_PROBE = [{"role": "user", "content": "probe"}]


class BatchInterrupted(KeyboardInterrupt):
    """``batch()`` was interrupted (Ctrl-C, a kernel interrupt); ``.result`` holds what finished."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__(f"batch interrupted: {len(result.ok)} of {len(result)} items answered (see .result)")
        self.result = result


class BatchCancelled(asyncio.CancelledError):
    """``abatch()``'s task was cancelled; ``.result`` holds what finished."""

    def __init__(self, result: BatchResult) -> None:
        super().__init__(f"batch cancelled: {len(result.ok)} of {len(result)} items answered (see .result)")
        self.result = result


class _Stop(Exception):
    """on_error="raise": the first error, carried out of a worker."""

    def __init__(self, error: FlotorchError) -> None:
        super().__init__(str(error))
        self.error = error


def _bare(error: BaseException) -> None:
    """Drop the tracebacks of an error and its causes: they hold whole frames, per item."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


class _WorkerGate:
    """A worker's gate: the batch's shared limit, and a count of each attempt its current item sent
    (and of the 429s among them).

    One per worker (the worker's calls are its item's), so the count needs no lookup. Settled with
    ``None`` an attempt was never sent (a later gate said "not now"): not counted.
    """

    __slots__ = ("_settled", "item", "limit", "stats")

    def __init__(self, limit: Gate, stats: BatchStats) -> None:
        self.limit, self.stats = limit, stats
        self.item: BatchItem | None = None
        # The batch's own limiter (every local batch) says whether it paused for the attempt: its
        # 429 is read once, for the pause and the count alike. Another limit is settled, then read.
        self._settled: Callable[[Ticket, Spent | None], float | None] = (
            limit.settled if isinstance(limit, LimiterGate) else functools.partial(_settled, limit)
        )

    def admit(self, request: Asked) -> Ticket | float:
        return self.limit.admit(request)

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        paused = self._settled(ticket, spent)
        item = self.item
        if spent is None or item is None:
            return
        item.attempts += 1
        stats = self.stats
        stats.requests += 1
        if paused is not None:
            stats.rate_limited += 1


def _settled(limit: Gate, ticket: Ticket, spent: Spent | None) -> float | None:
    """``LimiterGate.settled`` for any gate: settle it, then whether the attempt met a 429."""
    limit.settle(ticket, spent)
    return pause_after(spent, _no_pause)


class _RemoteWorkerGate(_WorkerGate):
    """A worker's gate on a limit asked over the network (the Dask scheduler's): asked by awaiting."""

    __slots__ = ()

    async def aadmit(self, request: Asked) -> Ticket | float:
        return await cast("AsyncGate", self.limit).aadmit(request)


def _worker_gate(limit: Gate, stats: BatchStats) -> _WorkerGate:
    return (_RemoteWorkerGate if remote(limit) else _WorkerGate)(limit, stats)


#: ``BatchOptions.slots`` unset: the run's own workers are its only bound.
_UNSHARED = contextlib.nullcontext()


def _no_pause(error: APIStatusError) -> float:
    return 0.0


class _Run:
    """One run over some positions of the inputs, writing into ``items``."""

    def __init__(
        self,
        llm: Client,
        inputs: Inputs,
        options: BatchOptions,
        items: list[BatchItem],
        positions: Sequence[int],
        cache: AnswerCache | None,
        progress: Progress,
    ) -> None:
        self.llm, self.inputs, self.options, self.items = llm, inputs, options, items
        self.positions, self.cache, self.progress = positions, cache, progress
        self.limiter: Limiter = options.limiter or RateLimiter(options.rpm, options.tpm)
        #: ``concurrency="auto"``: the window of the client's gateway key (or the cluster's).
        self.window: AutoWindow | None = None
        if options.concurrency == AUTO:
            self.window = options.window or controller_for(llm.gateway_key)
        self.stats = BatchStats()
        self.budget_error: BudgetExceededError | None = None
        self.params = dict(options.params)
        self.extra_body = self.params.pop("extra_body", None)

    def result(self) -> BatchResult:
        return BatchResult(self.items, self.stats, self.llm, self.inputs, self.options, RERUN)

    def _pause_for(self, error: APIStatusError) -> float:
        return self.llm.retry.delay(0, error.retry_after)

    async def run(self) -> BatchResult:
        started = time.perf_counter()
        # The client that sends: the given one, or a copy of it with the batch's own answer cache.
        sender = self.llm
        if self.cache is not self.llm.cache:  # (an AnswerCache is falsy when empty: compare with None)
            sender = self.llm.copy(cache=self.cache if self.cache is not None else False)
        writes_failed = self.cache.write_failures if self.cache is not None else 0
        queue = iter(self.positions)
        window, rpm = self.window, self.options.rpm
        # With "auto" the window honours a 429's Retry-After for the whole key; the limiter's own
        # pause (a fixed back-off without one) would only idle the batch on top of the window's cut.
        limit = self.limiter.gate(self._pause_for if window is None else _no_pause)
        extra = (window.gate(rpm / 60 if rpm is not None else None),) if window is not None else ()
        concurrency = window.ceiling if window is not None else self.options.concurrency
        workers = []
        for _ in range(min(cast("int", concurrency), len(self.positions))):
            gate = _worker_gate(limit, self.stats)
            with gated(*extra, gate):  # the task copies the context: these gates are its calls'
                workers.append(asyncio.create_task(self._worker(sender, queue, gate)))
        try:
            await asyncio.gather(*workers)
        except BaseException as exc:
            for worker in workers:
                worker.cancel()
            # Wait for the cancelled requests to close their connections before reporting.
            await asyncio.gather(*workers, return_exceptions=True)
            self.stats.wall_s = time.perf_counter() - started
            if isinstance(exc, _Stop):
                self._fill_unfinished(f"the batch stopped at another item's error: {exc.error}")
                raise BatchError(
                    f"batch stopped at the first error (on_error='raise'): {exc.error}",
                    result=self.result(),
                    error=exc.error,
                ) from exc.error
            self.stats.interrupted = True
            self._fill_unfinished("the batch was interrupted before this item's answer arrived")
            if isinstance(exc, asyncio.CancelledError):
                raise BatchCancelled(self.result()) from None
            raise
        finally:
            if self.window is not None:
                self.stats.concurrency = self.window.settled_at
            if self.cache is not None:
                self.stats.cache_write_failures += self.cache.write_failures - writes_failed
            if sender is not self.llm:
                await sender.aclose()
        self.stats.wall_s = time.perf_counter() - started
        return self.result()

    def _fill_unfinished(self, why: str) -> None:
        for position in self.positions:
            item = self.items[position]
            if item.answer is None and item.error is None:
                item.error = ItemCancelledError(f"not answered: {why}")

    async def _worker(self, sender: Client, queue: Iterator[int], gate: _WorkerGate) -> None:
        # The label is set once per worker, not per item: the worker is a task of its own, so the
        # context variable it sets is seen by its calls only, and goes with the task. Each item's
        # call is awaited here, not in a coroutine per item: every resume of the call passes
        # through each coroutine that awaits it, and at thousands of items a second that counts.
        options, items, params, extra_body = self.options, self.items, self.params, self.extra_body
        ainvoke, tools, response_format = sender.ainvoke, options.tools, options.response_format
        slots = options.slots if options.slots is not None else _UNSHARED
        with call_label("batch"):
            for position in queue:  # one shared iterator: each worker takes the next position
                item = gate.item = items[position]
                messages = self._messages(item)
                if messages is None:
                    continue
                try:
                    async with slots:  # a place in an in-flight limit shared with other runs, if any
                        response = await ainvoke(messages, tools, response_format, extra_body, **params)
                except BudgetExceededError as error:  # refused before sending: stop launching the rest
                    self.budget_error = self.budget_error or error
                    self._fail(item, error)
                    continue
                except FlotorchError as error:
                    self._fail(item, error)
                    continue
                self._answered(item, StoredAnswer.of(response))

    # -- one item ----------------------------------------------------------------------------------
    def _messages(self, item: BatchItem) -> list[dict[str, Any]] | None:
        """The item's messages, or None when it fails before sending (a bad input, a spent budget)."""
        try:
            messages = self.inputs.messages(item.position)
        except InvalidRequestError as error:
            self._fail(item, error)
            return None
        if self.budget_error is not None:
            self._fail(item, BudgetExceededError(str(self.budget_error)))  # the same words for the same cause
            return None
        return messages

    def _answered(self, item: BatchItem, answer: StoredAnswer) -> None:
        """An item's answer: into its slot, counted (the common end of an item, so kept short)."""
        item.answer = answer
        if item.attempts > 1:
            self.stats.retries += item.attempts - 1
        if answer.source == "cache":
            self.stats.cache_hits += 1
            self.progress.item_done(error=False, tokens=0, cached=True)
        else:
            self.progress.item_done(error=False, tokens=answer.usage[2] if answer.usage else 0, cached=False)

    def _fail(self, item: BatchItem, error: FlotorchError) -> None:
        _bare(error)
        item.error = error
        if item.attempts > 1:
            self.stats.retries += item.attempts - 1
        self.progress.item_done(error=True, tokens=0, cached=False, sent=item.attempts > 0)
        if self.options.on_error == "raise":
            raise _Stop(error)


# -- entry points ----------------------------------------------------------------------------------
def _prepare_run(
    llm: Client,
    inputs: Any,
    options: BatchOptions,
    positions: Sequence[int] | None = None,
    items: list[BatchItem] | None = None,
) -> _Run:
    """Everything checked before any I/O: inputs and template, options, parameters, the cache file."""
    if not isinstance(inputs, Inputs):
        inputs = Inputs(inputs, options.template)
    cache = resolve_cache(options.cache) if options.cache is not None else llm.cache
    if cache is not None:
        cache.open()  # CacheError now, before anything is sent
    if items is None:
        items = [BatchItem(i, inputs.label(i)) for i in range(len(inputs))]
    if positions is None:
        positions = range(len(inputs))
    progress = Progress(len(positions), show=options.progress)
    run = _Run(llm, inputs, options, items, positions, cache, progress)
    # Parameters, tools and response_format are the same for every item: check them once, up front.
    llm.check(_PROBE, options.tools, options.response_format, run.extra_body, **run.params)
    return run


async def _ticking(progress: Progress) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        progress.render()


@contextlib.asynccontextmanager
async def _progress_on_loop(progress: Progress) -> AsyncIterator[None]:
    progress.start()
    ticker = asyncio.create_task(_ticking(progress))
    status = "interrupted"
    try:
        yield
        status = "done"
    finally:
        ticker.cancel()
        progress.close(status)


async def _run_async(run: _Run) -> BatchResult:
    async with _progress_on_loop(run.progress):
        return await run.run()


def _run_sync(run: _Run) -> BatchResult:
    """Run on the bridge's loop; this thread draws the progress bar and takes the interrupt, which
    cancels the run (closing the requests in flight) and raises with everything that had finished."""
    progress = run.progress
    progress.start()
    status = "interrupted"
    try:
        result = _bridge.run(
            run.run(), tick=progress.render, every=TICK_S, interrupted=lambda _: _interrupted(run)
        )
        status = "done"
        return result
    finally:
        progress.close(status)


def _interrupted(run: _Run) -> BatchInterrupted:
    run.stats.interrupted = True
    run._fill_unfinished("the batch was interrupted before this item's answer arrived")
    return BatchInterrupted(run.result())


async def run_async(llm: Client, inputs: Any, options: BatchOptions) -> BatchResult:
    """``abatch``."""
    return await _run_async(_prepare_run(llm, inputs, options))


def run_sync(llm: Client, inputs: Any, options: BatchOptions) -> BatchResult:
    """``batch``."""
    return _run_sync(_prepare_run(llm, inputs, options))


def _retry_run(result: BatchResult) -> _Run:
    if result._llm is None or result._inputs is None or result._options is None:
        raise ConfigurationError("this BatchResult does not know how it was made, so it cannot be re-run")
    failed = [item.position for item in result.items if item.answer is None]
    items = [
        item if item.answer is not None else BatchItem(item.position, item.label) for item in result.items
    ]
    return _prepare_run(result._llm, result._inputs, result._options, failed, items)


async def run_async_retry(result: BatchResult) -> BatchResult:
    """``BatchResult.aretry_failed``."""
    return await _run_async(_retry_run(result))


def run_sync_retry(result: BatchResult) -> BatchResult:
    """``BatchResult.retry_failed``."""
    return _run_sync(_retry_run(result))


#: How a result made here runs its failed items again (``BatchResult.retry_failed``): handed to the
#: result rather than imported by it, so ``_result`` never depends on the runner. Module-level
#: functions, so a pickled result still refers to them by name.
RERUN = Rerun(run_sync_retry, run_async_retry)
