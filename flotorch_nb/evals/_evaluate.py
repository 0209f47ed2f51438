"""``evaluate`` / ``aevaluate``: a dataset x models x scorers, every call a batch item.

Nothing here decides what is sent: ``_plan.Plan`` checks everything before any I/O and lays out the
jobs (one batch per model x epoch for the answers, then per judge x judge model x vote), and
``_collect.Collector`` gathers what they give into records. This module runs them: each job is a batch
run by ``flotorch_nb.batch`` on the given client, so the answer cache, retries, hooks and budgets
(client gates) are the batch's, and a re-run with the same cache sends only what is missing.

The jobs run at once (``_drive``), under one in-flight limit (``BatchOptions.slots``, a semaphore of
``concurrency`` places): ``concurrency`` calls stay in flight across the whole evaluation, and a
model's answers are judged while the other models are still answering, instead of each batch's tail
leaving places idle and every judge waiting for every answer. One progress bar counts every call
(``_Slots``). Only the waiting is written twice (``_run_sync`` on the background loop, ``_run_async``
on the caller's): an interrupt (``EvalInterrupted``) or a cancellation (``EvalCancelled``) carries a
result with everything that had finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from .. import _bridge
from ..batch import BatchCancelled, BatchResult, run_async
from ..batch._progress import TICK_S, Progress
from ._collect import Collector
from ._plan import Job, Plan
from ._result import EvalResult

if TYPE_CHECKING:
    import os

    from .._client import Client
    from ..cache import AnswerCache

__all__ = ["EvalCancelled", "EvalInterrupted", "aevaluate", "evaluate"]


class EvalInterrupted(KeyboardInterrupt):
    """``evaluate()`` was interrupted; ``.result`` holds every answer (and score) that had finished."""

    def __init__(self, result: EvalResult) -> None:
        super().__init__(f"evaluation interrupted: {result.answered} of {len(result)} answers (see .result)")
        self.result = result


class EvalCancelled(asyncio.CancelledError):
    """``aevaluate()``'s task was cancelled; ``.result`` holds what had finished."""

    def __init__(self, result: EvalResult) -> None:
        super().__init__(f"evaluation cancelled: {result.answered} of {len(result)} answers (see .result)")
        self.result = result


#: The places of ``_Slots`` under ``concurrency="auto"`` (never reached: the window holds the limit).
_UNBOUNDED = 1 << 30


class _Slots(asyncio.Semaphore):
    """The evaluation's one in-flight limit, shared by all its batches (``BatchOptions.slots``); each
    place given back is a call finished, which is what the progress bar counts."""

    def __init__(self, places: int, progress: Progress) -> None:
        super().__init__(places)
        self.progress = progress

    def release(self) -> None:
        super().release()
        self.progress.done += 1


async def _drive(plan: Plan, collected: Collector, progress: Progress) -> EvalResult:
    """Run every job at once under one in-flight limit; an answer batch's judges start when it ends.

    Cancelled, it cancels the batches in flight (each closes its requests and keeps what finished),
    takes what they had, and raises ``EvalCancelled`` with the result so far."""
    started = time.perf_counter()
    # With concurrency="auto" the gateway key's window already bounds every batch's calls together:
    # the slots then only count them for the bar.
    slots = _Slots(plan.concurrency if plan.concurrency != "auto" else _UNBOUNDED, progress)
    per_answer = plan.judge_calls_per_answer()
    running: dict[asyncio.Task[BatchResult], Job] = {}

    def launch(job: Job) -> None:
        options = dataclasses.replace(job.options, slots=slots)
        running[asyncio.ensure_future(run_async(plan.client, job.inputs, options))] = job

    for job in plan.answer_jobs():
        launch(job)
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                job = running.pop(task)
                result = task.result()  # on_error="raise": the batch's BatchError stops the evaluation
                collected.take(job, result)
                _tally(progress, result)
                if job.judge is None:
                    progress.done += per_answer * sum(1 for item in result.items if item.answer is None)
                    for judging in plan.judge_jobs(collected.graded(job)):
                        launch(judging)
    except BaseException as exc:
        for task in running:
            task.cancel()
        if running:  # wait for the cancelled requests to close their connections
            await asyncio.wait(running)
        collected.stats["wall_s"] = time.perf_counter() - started
        if not isinstance(exc, asyncio.CancelledError):
            raise
        for task, job in running.items():
            try:  # (gather would hand back a bare CancelledError, not the batch's BatchCancelled)
                collected.take(job, task.result())
            except BatchCancelled as stop:
                collected.take(job, stop.result)
            except (asyncio.CancelledError, Exception):  # cancelled before it began: nothing to keep
                continue
        collected.stopped = True
        raise EvalCancelled(collected.result()) from None
    collected.stats["wall_s"] = time.perf_counter() - started
    progress.done = progress.total  # items that failed before taking a place (a spent budget) too
    return collected.result()


def _tally(progress: Progress, result: BatchResult) -> None:
    """A finished batch's errors, tokens and cache hits, for the bar's postfix."""
    for item in result.items:
        answer = item.answer
        if answer is None:
            progress.errors += 1
        elif answer.source == "cache":
            progress.cached += 1
        elif answer.usage:
            progress.tokens += answer.usage[2]


def _progress(plan: Plan) -> Progress:
    return Progress(plan.answers * (1 + plan.judge_calls_per_answer()), show=plan.show_progress)


def _run_sync(plan: Plan) -> EvalResult:
    """On the background loop; this thread draws the bar and takes an interrupt (``EvalInterrupted``)."""
    collected = Collector(plan)
    progress = _progress(plan)
    progress.start()
    status = "interrupted"
    try:
        result = _bridge.run(
            _drive(plan, collected, progress),
            tick=progress.render,
            every=TICK_S,
            interrupted=lambda outcome: EvalInterrupted(
                outcome.result if isinstance(outcome, EvalCancelled) else _stopped(collected)
            ),
        )
        status = "done"
        return result
    finally:
        progress.close(status)


async def _run_async(plan: Plan) -> EvalResult:
    """On the caller's loop, with a task redrawing the bar; cancelled, ``EvalCancelled``."""
    collected = Collector(plan)
    progress = _progress(plan)
    progress.start()
    status = "interrupted"
    ticker = asyncio.create_task(_ticking(progress))
    try:
        result = await _drive(plan, collected, progress)
        status = "done"
        return result
    finally:
        ticker.cancel()
        progress.close(status)


async def _ticking(progress: Progress) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        progress.render()


def _stopped(collected: Collector) -> EvalResult:
    collected.stopped = True
    return collected.result()


def evaluate(
    data: Any,
    *,
    template: str,
    target: str | None = None,
    models: str | Sequence[str],
    scorers: Any,
    client: Client | None = None,
    epochs: int = 1,
    concurrency: int | Literal["auto"] = 16,
    rpm: float | None = None,
    tpm: float | None = None,
    cache: str | os.PathLike[str] | AnswerCache | bool | None = None,
    progress: bool = True,
    **params: Any,
) -> EvalResult:
    """Answer every sample of ``data`` with every model, score the answers, and return an ``EvalResult``.

    ``data``: a DataFrame, a list of dicts, a ``.csv``/``.jsonl`` path or a ``datasets.Dataset``.
    ``template``: each sample's prompt, its ``{fields}`` columns (the batch rule). ``target``: the
    reference column. ``models``: model ids (a list or ``"a,b"``). ``scorers``: ``scorers.*`` objects,
    built-in names or functions ``(answer, target, sample) -> bool | float | Score``. ``client``: a
    ``FlotorchLLM`` (in a notebook with ``%load_ext flotorch_nb``: the session's by default).
    ``epochs``: answers per sample and model (epoch k > 0 sent with ``seed=k``). ``concurrency`` (calls
    in flight across the whole evaluation, or ``"auto"``: the gateway key's window),
    ``rpm``, ``tpm`` (held across answers and judges), ``cache`` (a re-run sends only what is missing),
    ``progress``, ``on_error``, ``response_format``, ``tools`` and call parameters (``temperature``,
    ``max_tokens``...) go to the batches. Mistakes raise ``EvalError`` before any request; an interrupt
    raises ``EvalInterrupted`` whose ``.result`` keeps what finished.
    """
    plan = Plan(
        data,
        template,
        target,
        models,
        scorers,
        client,
        epochs,
        _options(concurrency, rpm, tpm, cache, progress, params),
    )
    return _run_sync(plan)


async def aevaluate(
    data: Any,
    *,
    template: str,
    target: str | None = None,
    models: str | Sequence[str],
    scorers: Any,
    client: Client | None = None,
    epochs: int = 1,
    concurrency: int | Literal["auto"] = 16,
    rpm: float | None = None,
    tpm: float | None = None,
    cache: str | os.PathLike[str] | AnswerCache | bool | None = None,
    progress: bool = True,
    **params: Any,
) -> EvalResult:
    """``evaluate`` on the running event loop (same arguments); cancelling it raises ``EvalCancelled``
    with what had finished."""
    plan = Plan(
        data,
        template,
        target,
        models,
        scorers,
        client,
        epochs,
        _options(concurrency, rpm, tpm, cache, progress, params),
    )
    return await _run_async(plan)


def _options(
    concurrency: int | Literal["auto"], rpm: Any, tpm: Any, cache: Any, progress: bool, params: dict[str, Any]
) -> dict[str, Any]:
    options = dict(params)
    options.update(concurrency=concurrency, rpm=rpm, tpm=tpm, progress=progress)
    if cache is not None:
        options["cache"] = cache
    return options
