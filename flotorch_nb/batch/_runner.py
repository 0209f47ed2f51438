"""The batch engine: bounded workers pulling from the inputs, one shared limiter, input-ordered slots.

``concurrency`` worker tasks each take the next position from one shared iterator, so work is fed in
as capacity frees up (never one coroutine per item) and each finished item is written into its
preallocated slot. Per item: the answer cache first (a hit costs no slot in the limiter and no
request), then ``limiter.acquire`` with the item's token estimate, then ``ainvoke`` on the client's
batch sender (its hooks run, so budgets and ledgers see every request), retried here by the client's
own ``RetryPolicy`` so that each retry passes the limiter too, and a 429 pauses the whole batch.

Stops: ``on_error="raise"`` cancels the other workers at the first error and raises ``BatchError``;
a ``BudgetExceededError`` from a hook stops launching and every item not sent carries one;
cancellation (``abatch``'s task, or an interrupt of ``batch``) cancels the requests in flight —
closing their connections — and raises ``BatchCancelled`` / ``BatchInterrupted`` with the partial
result. Every finished answer is in that result, and in the cache when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _bridge
from .._errors import (
    APIStatusError,
    BudgetExceededError,
    ConfigurationError,
    FlotorchError,
    InvalidRequestError,
    RateLimitError,
    StructuredOutputError,
)
from .._hooks import call_label, estimate_tokens
from .._provenance import stamp
from ..cache import AnswerCache, StoredAnswer, cache_key, resolve_cache
from ..schema import normalize_response_format
from ._inputs import Inputs
from ._limits import Limiter, RateLimiter, check_limit
from ._progress import TICK_S, Progress
from ._result import BatchError, BatchItem, BatchResult, BatchStats, ItemCancelledError

if TYPE_CHECKING:
    from ..llm import FlotorchLLM

__all__ = ["BatchCancelled", "BatchInterrupted", "BatchOptions", "run_async", "run_sync"]

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


@dataclass(frozen=True)
class BatchOptions:
    """A batch's options, checked before any I/O (``llm.batch`` documents them)."""

    template: str | None = None
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    on_error: str = "keep"
    progress: bool = True
    cache: Any = None
    response_format: Any = None
    tools: list[dict[str, Any]] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    model_class: type[Any] | None = None
    #: A limiter shared beyond this run (``flotorch_nb.dask`` passes the cluster's); else one per run.
    limiter: Limiter | None = None

    @classmethod
    def of(cls, **values: Any) -> BatchOptions:
        """Validated options (``ConfigurationError`` / ``InvalidRequestError`` before any I/O)."""
        concurrency = values.get("concurrency", 16)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        if values.get("on_error", "keep") not in ("keep", "raise"):
            raise ConfigurationError(f"on_error must be 'keep' or 'raise', got {values['on_error']!r}")
        values["rpm"] = check_limit(values.get("rpm"), "rpm")
        values["tpm"] = check_limit(values.get("tpm"), "tpm")
        values["progress"] = bool(values.get("progress", True))
        values["params"] = dict(values.get("params") or {})
        values["model_class"] = normalize_response_format(values.get("response_format"))[1]
        return cls(**values)


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


class _Run:
    """One run over some positions of the inputs, writing into ``items``."""

    def __init__(
        self,
        llm: FlotorchLLM,
        inputs: Inputs,
        options: BatchOptions,
        items: list[BatchItem],
        positions: Sequence[int],
        cache: AnswerCache | None,
        progress: Progress,
    ) -> None:
        self.llm, self.inputs, self.options, self.items = llm, inputs, options, items
        self.positions, self.cache, self.progress = positions, cache, progress
        self.sender = llm._batch_sender()
        self.policy = llm.retry
        self.limiter: Limiter = options.limiter or RateLimiter(options.rpm, options.tpm)
        self.stats = BatchStats()
        self.budget_error: BudgetExceededError | None = None
        self.params = dict(options.params)
        self.extra_body = self.params.pop("extra_body", None)

    def result(self) -> BatchResult:
        return BatchResult(self.items, self.stats, self.llm, self.inputs, self.options)

    async def run(self) -> BatchResult:
        started = time.perf_counter()
        queue = iter(self.positions)
        workers = [
            asyncio.create_task(self._worker(queue))
            for _ in range(min(self.options.concurrency, len(self.positions)))
        ]
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
        self.stats.wall_s = time.perf_counter() - started
        return self.result()

    def _fill_unfinished(self, why: str) -> None:
        for position in self.positions:
            item = self.items[position]
            if item.answer is None and item.error is None:
                item.error = ItemCancelledError(f"not answered: {why}")

    async def _worker(self, queue: Iterator[int]) -> None:
        # The label is set once per worker, not per item: the worker is a task of its own, so the
        # context variable it sets is seen by its calls only, and goes with the task.
        with call_label("batch"):
            for position in queue:  # one shared iterator: each worker takes the next position
                await self._item(self.items[position])

    # -- one item ----------------------------------------------------------------------------------
    def _finish(self, item: BatchItem, answer: StoredAnswer | None, error: FlotorchError | None) -> None:
        if error is not None:
            _bare(error)
        item.answer, item.error = answer, error
        tokens = answer.usage[2] if answer is not None and answer.usage and answer.source != "cache" else 0
        self.progress.item_done(
            error=error is not None,
            tokens=tokens,
            cached=answer is not None and answer.source == "cache",
            sent=item.attempts > 0,
        )

    def _fail(self, item: BatchItem, error: FlotorchError) -> None:
        self._finish(item, None, error)
        if self.options.on_error == "raise":
            raise _Stop(error)

    def _from_cache(self, key: str) -> StoredAnswer | None:
        assert self.cache is not None
        stored = self.cache.get(key)
        if stored is not None and self.options.model_class is not None:
            from ..schema import parse_structured

            try:
                stored.parsed = parse_structured(self.options.model_class, stored.content)
            except StructuredOutputError:
                return None
        return stored

    async def _item(self, item: BatchItem) -> None:
        options = self.options
        try:
            messages = self.inputs.messages(item.position)
            key = secret = None
            if self.cache is not None:
                call = self.sender._prepare(
                    messages,
                    options.tools,
                    options.response_format,
                    self.extra_body,
                    dict(self.params),
                    stream=False,
                )
                key = cache_key(call)
                stored = self._from_cache(key)
                if stored is not None:
                    # A hit's record, made as the client makes one (until items ride its ainvoke).
                    stored.provenance = stamp(stored.to_response(), call, self.sender._settings)
                    self.stats.cache_hits += 1
                    self._finish(item, stored, None)
                    return
                from ..cache import _call_secret

                secret = _call_secret(call)
        except InvalidRequestError as error:
            self._fail(item, error)
            return
        if self.budget_error is not None:
            self._fail(item, BudgetExceededError(str(self.budget_error)))  # the same words for the same cause
            return
        estimate = estimate_tokens({**self.params, "messages": messages})
        attempt = 0
        while True:
            try:
                grant = await self.limiter.acquire(estimate)
            except InvalidRequestError as error:
                self._fail(item, error)
                return
            item.attempts += 1
            self.stats.requests += 1
            try:
                response = await self.sender.ainvoke(
                    messages, options.tools, options.response_format, self.extra_body, **self.params
                )
            except FlotorchError as error:
                self.limiter.settle(grant, 0)
                if isinstance(error, BudgetExceededError):
                    # Refused by a before_request hook: nothing went out, so it is not a request sent.
                    item.attempts -= 1
                    self.stats.requests -= 1
                    self.budget_error = self.budget_error or error
                    self._fail(item, error)
                    return
                retry_after = error.retry_after if isinstance(error, APIStatusError) else None
                if isinstance(error, RateLimitError) or retry_after is not None:
                    self.stats.rate_limited += 1
                    self.limiter.pause(self.policy.delay_for(error, attempt))
                if not self.policy.should_retry(error, attempt):
                    self._fail(item, self.policy.gave_up(error, attempt))
                    return
                self.stats.retries += 1
                await asyncio.sleep(self.policy.delay_for(error, attempt))
                attempt += 1
                continue
            except BaseException:
                self.limiter.settle(grant, estimate)  # stopped mid-way: assume it was spent
                raise
            answer = StoredAnswer.of(response)
            self.limiter.settle(grant, answer.usage[2] if answer.usage else estimate)
            if self.cache is not None and key is not None and not self.cache.put(key, answer, secret):
                self.stats.cache_write_failures += 1
            self._finish(item, answer, None)
            return


# -- entry points ----------------------------------------------------------------------------------
def _prepare_run(
    llm: FlotorchLLM,
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
    params = dict(options.params)
    extra_body = params.pop("extra_body", None)
    # Parameters, tools and response_format are the same for every item: check them once, up front.
    llm._batch_sender()._prepare(
        _PROBE, options.tools, options.response_format, extra_body, params, stream=False
    )
    if items is None:
        items = [BatchItem(i, inputs.label(i)) for i in range(len(inputs))]
    if positions is None:
        positions = range(len(inputs))
    progress = Progress(len(positions), show=options.progress)
    return _Run(llm, inputs, options, items, positions, cache, progress)


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


async def run_async(llm: FlotorchLLM, inputs: Any, options: BatchOptions) -> BatchResult:
    """``abatch``."""
    return await _run_async(_prepare_run(llm, inputs, options))


def run_sync(llm: FlotorchLLM, inputs: Any, options: BatchOptions) -> BatchResult:
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
