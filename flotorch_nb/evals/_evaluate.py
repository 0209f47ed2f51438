"""``evaluate`` / ``aevaluate``: a dataset x models x scorers, every call a batch item.

Nothing here sends a request. The plan (``_Plan``, pure) checks everything before any I/O — the data
and its columns, the template (the batch rule: ``flotorch_nb.batch.Inputs``), the scorers, the call
parameters (``client.check``), the batch options — and then hands out jobs, each one batch run by
``flotorch_nb.batch`` on the given client: one per model x epoch for the answers, and for each of those,
once its answers are in, one per judge scorer x judge model x vote grading them. So the answer cache,
retries, hooks and budgets (client gates) are the batch's; one ``RateLimiter`` is shared by every job,
so ``rpm``/``tpm`` hold across answers and judges; a re-run with the same cache sends only what is
missing.

The jobs run at once (``_drive``), under one in-flight limit (``BatchOptions.slots``, a semaphore of
``concurrency`` places): ``concurrency`` calls stay in flight across the whole evaluation, and a
model's answers are judged while the other models are still answering, instead of each batch's tail
leaving places idle and every judge waiting for every answer. Each batch writes into its own records, and
judge votes are kept by their place in the plan, not by arrival, so the result is the same whatever
order the batches finish in. One progress bar counts every call (``_Slots``). Only the waiting is
written twice (``_run_sync`` on the background loop, ``_run_async`` on the caller's): an interrupt
(``EvalInterrupted``) or a cancellation (``EvalCancelled``) carries a result with everything that had
finished.

Epochs: epoch ``k > 0`` is sent with ``seed=k`` (added to a given ``seed``), so its request differs
from epoch 0's, is cached apart and resumes; epoch 0 is the very request of a one-epoch run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .. import _bridge
from .._errors import InvalidRequestError
from ..batch import BatchCancelled, BatchOptions, BatchResult, Inputs, RateLimiter, run_async
from ..batch._inputs import is_missing
from ..batch._progress import TICK_S, Progress
from ..compare import parse_models
from ..pricing import PriceTable, default_prices
from ._data import load_rows
from ._errors import EvalError
from ._judge import Judge, Vote
from ._result import EvalResult, JudgeUsage, Record
from .scorers import Scorer, resolve

if TYPE_CHECKING:
    import os

    from .._client import Client
    from ..cache import AnswerCache

__all__ = ["EvalCancelled", "EvalInterrupted", "aevaluate", "evaluate"]

#: Options that shape the batch rather than the call; everything else is a call parameter.
_BATCH = ("concurrency", "rpm", "tpm", "on_error", "progress", "cache", "response_format", "tools")
_PROBE = [{"role": "user", "content": "probe"}]


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


def _session_client(model: str) -> Client:
    """The notebook session's client, when the notebook layer is loaded (never imported from here)."""
    session = sys.modules.get("flotorch_nb.notebook.session")
    if session is None:
        raise EvalError(
            "evaluate(..., client=FlotorchLLM(...)) is needed outside a notebook with %load_ext flotorch_nb"
        )
    client: Client = session.get_session().client(model)
    return client


@dataclass
class _Job:
    """One batch: its inputs and options, and where its items' outcomes go."""

    model: str
    number: int  # the epoch (answers) or the vote (judges)
    inputs: Any
    options: BatchOptions
    judge: Judge | None = None
    graded: list[Record] = field(default_factory=list)
    #: A judge job's place in ``_Plan.judge_calls[judge]``: where its votes go, whenever it finishes.
    call: int = 0


#: One judge call's outcome for one answer: its vote and cost (None: unpriced), or why it failed.
_Cast = tuple[Vote, float | None] | tuple[str, None]


class _Plan:
    """An evaluation checked and laid out: its jobs, and the records they fill (pure)."""

    def __init__(
        self,
        data: Any,
        template: str,
        target: str | None,
        models: Any,
        scorers: Any,
        client: Client | None,
        epochs: int,
        options: dict[str, Any],
    ) -> None:
        if not isinstance(template, str) or not template.strip():
            raise EvalError("template= must be a non-empty text with {column} fields")
        if target is not None and not isinstance(target, str):
            raise EvalError(f"target= names the reference column, got {target!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise EvalError(f"epochs must be a whole number >= 1, got {epochs!r}")
        self.models = list(parse_models(models, what="evaluate", error=EvalError))
        given = [scorers] if isinstance(scorers, str | Scorer | Judge) or callable(scorers) else scorers
        if not isinstance(given, Sequence) or not given:
            raise EvalError("scorers= names at least one scorer, e.g. [scorers.exact_match()]")
        self.scorers = [resolve(s) for s in given]
        names = [s.name for s in self.scorers]
        if len(set(names)) != len(names):
            raise EvalError(f"two scorers have the same name ({names}); give one a name= of its own")
        for scorer in self.scorers:
            if scorer.needs_target and target is None:
                raise EvalError(f"scorer {scorer.name} compares with a reference: give target='column'")
        if "model" in options:
            raise EvalError("give the models as models=[...], not model=")
        self.dataset = load_rows(data)
        self.dataset.check(template, target)
        self.template, self.target, self.epochs = template, target, epochs
        self.inputs = Inputs(self.dataset.rows, template)
        self.client: Client = client if client is not None else _session_client(self.models[0])
        self.prices: PriceTable = default_prices()

        batch = {k: options.pop(k) for k in _BATCH if k in options}
        params = options  # what is left: call parameters
        # One limiter for every job (it checks rpm/tpm): they hold across answers and judges alike.
        self.limiter = RateLimiter(batch.pop("rpm", None), batch.pop("tpm", None))
        self.concurrency: int | Literal["auto"] = batch.get("concurrency", 16)
        self.show_progress = bool(batch.get("progress", True))
        shared = {
            "concurrency": self.concurrency,
            "progress": False,  # one bar for the whole evaluation (``_run_sync`` / ``_run_async``)
            "cache": batch.get("cache"),
            "on_error": batch.get("on_error", "keep"),
            "limiter": self.limiter,
        }
        tools, response_format = batch.get("tools"), batch.get("response_format")
        self.answer_options: dict[tuple[str, int], BatchOptions] = {}
        for model in self.models:
            for epoch in range(epochs):
                call = self._seeded(params, epoch)
                self._check(model, call, tools, response_format)
                self.answer_options[(model, epoch)] = BatchOptions.of(
                    response_format=response_format, tools=tools, params={**call, "model": model}, **shared
                )
        self.judges = [s for s in self.scorers if isinstance(s, Judge)]
        self.judge_calls: dict[str, list[tuple[str, int, BatchOptions]]] = {}
        for judge in self.judges:
            calls = []
            for model, vote in judge.calls(self._default_judge_model()):
                call = self._seeded(judge.params, vote)
                if judge.validation_retries:
                    call["validation_retries"] = judge.validation_retries
                self._check(model, call, None, judge.grade_class)
                options_j = BatchOptions.of(
                    response_format=judge.grade_class, params={**call, "model": model}, **shared
                )
                calls.append((model, vote, options_j))
            self.judge_calls[judge.name] = calls

        self.prompts = [self._prompt(i) for i in range(len(self.dataset.rows))]
        self.records = {
            (m, e): [Record(i, m, e) for i in range(len(self.dataset.rows))]
            for m in self.models
            for e in range(epochs)
        }
        #: judge -> id(record) -> one ``_Cast`` per judge call (None until that call's batch is taken)
        self.votes: dict[str, dict[int, list[_Cast | None]]] = {j.name: {} for j in self.judges}
        self.usage = {j.name: JudgeUsage() for j in self.judges}
        self.stats: dict[str, Any] = {"requests": 0, "cache_hits": 0, "judge_requests": 0, "wall_s": 0.0}
        self.stopped = False

    def _default_judge_model(self) -> str:
        model = getattr(self.client, "model_id", None)
        if not model:
            raise EvalError("judge(...) needs model= (the client has no model_id to default to)")
        return str(model)

    def _check(self, model: str, call: Mapping[str, Any], tools: Any, response_format: Any) -> None:
        """Refuse ``call`` as the client would refuse its requests, before any is sent (an
        ``extra_body`` among the parameters binds to ``check``'s own parameter of that name)."""
        self.client.check(_PROBE, tools, response_format, model=model, **call)

    @staticmethod
    def _seeded(params: Mapping[str, Any], number: int) -> dict[str, Any]:
        call = dict(params)
        if number > 0:
            base = call.get("seed", 0)
            if isinstance(base, bool) or not isinstance(base, int):
                raise EvalError(f"seed must be a whole number, got {base!r}")
            call["seed"] = base + number
        return call

    def _prompt(self, i: int) -> str | None:
        try:
            content = self.inputs.messages(i)[-1].get("content")
        except InvalidRequestError:
            return None
        return content if isinstance(content, str) else None

    def _target(self, i: int) -> Any:
        if self.target is None:
            return None
        value = self.dataset.rows[i].get(self.target)
        return None if is_missing(value) else value

    # -- the jobs ----------------------------------------------------------------------------------
    def answer_jobs(self) -> list[_Job]:
        """The answer batches: one per model x epoch."""
        return [
            _Job(model, epoch, self.inputs, self.answer_options[(model, epoch)])
            for model in self.models
            for epoch in range(self.epochs)
        ]

    def judge_jobs(self, answered: _Job) -> Iterator[_Job]:
        """The judges' batches for one answer batch once it is taken: its answers, graded."""
        graded = [r for r in self.records[(answered.model, answered.number)] if r.answer is not None]
        if not graded:
            return
        for judge in self.judges:
            messages = [
                judge.messages(self.prompts[r.sample] or "", self._target(r.sample), r.answer or "")
                for r in graded
            ]
            for call, (model, vote, options) in enumerate(self.judge_calls[judge.name]):
                yield _Job(model, vote, messages, options, judge, graded, call)

    def judge_calls_per_answer(self) -> int:
        """How many judge calls each answer brings (for the progress bar's total)."""
        return sum(len(calls) for calls in self.judge_calls.values())

    def take(self, job: _Job, result: BatchResult) -> None:
        """What a batch gave: answers scored by the pure scorers, or judge votes."""
        if job.judge is None:
            self.stats["requests"] += result.stats.requests
            self.stats["cache_hits"] += result.stats.cache_hits
            rows = self.records[(job.model, job.number)]
            for item in result.items:
                self._answer(rows[item.position], item)
            return
        judge, usage = job.judge, self.usage[job.judge.name]
        self.stats["judge_requests"] += result.stats.requests
        usage.requests += result.stats.requests
        usage.cache_hits += result.stats.cache_hits
        votes, calls = self.votes[judge.name], len(self.judge_calls[judge.name])
        for item in result.items:
            record = job.graded[item.position]
            casts = votes.setdefault(id(record), [None] * calls)
            usage.calls += 1
            answer = item.answer
            if answer is None or answer.parsed is None:
                usage.errors += 1
                casts[job.call] = (
                    f"{job.model}: {type(item.error).__name__}: {item.error}"
                    if item.error
                    else f"{job.model}: no grade",
                    None,
                )
                continue
            if answer.usage is not None:
                usage.input_tokens += answer.usage[0]
                usage.output_tokens += answer.usage[1]
            cost = self._cost(job.model, answer.model, answer.usage)
            usage.unpriced += cost is None
            casts[job.call] = (judge.vote(answer.parsed, job.model), cost)

    def _cost(self, model: str, answered_by: str | None, usage: tuple[int, int, int] | None) -> float | None:
        price = self.prices.get(model, answered_by)
        if price is None or usage is None:
            return None
        return float(price.cost(usage[0], usage[1]))

    def _answer(self, record: Record, item: Any) -> None:
        answer = item.answer
        if answer is None:
            record.error_type, record.error = type(item.error).__name__, str(item.error)
            for scorer in self.scorers:
                record.scores[scorer.name] = (None, f"no answer: {record.error_type}")
            return
        record.answer, record.source, record.request_id = answer.content, answer.source, answer.request_id
        record.latency_ms = round(answer.latency_s * 1000, 3)
        if answer.usage is not None:
            record.input_tokens, record.output_tokens = answer.usage[0], answer.usage[1]
        record.cost = self._cost(record.model, answer.model, answer.usage)
        sample, target = self.dataset.rows[record.sample], self._target(record.sample)
        for scorer in self.scorers:
            if isinstance(scorer, Judge):
                record.scores[scorer.name] = (None, "not judged: the run stopped first")
                continue
            if scorer.needs_target and target is None:
                record.scores[scorer.name] = (None, "no target for this sample")
                continue
            try:
                score = scorer(answer.content, target, sample)
            except Exception as exc:  # a user's scorer may raise anything: that sample's value is missing
                record.scores[scorer.name] = (None, f"scorer failed: {type(exc).__name__}: {exc}")
                continue
            record.scores[scorer.name] = (float(score.value), score.explanation)

    def result(self) -> EvalResult:
        """The records so far, the judges' votes combined."""
        records = [r for m in self.models for e in range(self.epochs) for r in self.records[(m, e)]]
        for judge in self.judges:
            votes, usage = self.votes[judge.name], self.usage[judge.name]
            # Summed in the plan's order (call by call, answer by answer), not the order batches
            # finished in: the same run gives the very same float.
            total, priced = 0.0, False
            for call in range(len(self.judge_calls[judge.name])):
                for record in records:
                    casts = votes.get(id(record))
                    cast = casts[call] if casts is not None else None
                    if cast is not None and cast[1] is not None:
                        total, priced = total + cast[1], True
            # As for the answers: a cost only when some call was priced, never 0 for "not known".
            usage.cost = None if usage.unpriced and not priced else total
            for record in records:
                if record.answer is None:
                    continue
                kept = [c for c in votes.get(id(record), ()) if c is not None]
                got = [c[0] for c in kept if isinstance(c[0], Vote)]
                failed = [c[0] for c in kept if isinstance(c[0], str)]
                if not got and not failed:
                    continue
                try:
                    score = judge.combine(got, failed)
                except EvalError as exc:
                    record.scores[judge.name] = (None, str(exc))
                else:
                    record.scores[judge.name] = (float(score.value), score.explanation)
        stats = dict(self.stats, interrupted=self.stopped)
        return EvalResult(
            samples=self.dataset.rows,
            prompts=self.prompts,
            template=self.template,
            target=self.target,
            models=self.models,
            epochs=self.epochs,
            scorers=[s.name for s in self.scorers],
            binary={s.name: s.binary for s in self.scorers},
            records=records,
            judge_usage=self.usage,
            stats=stats,
        )


# -- running the jobs ---------------------------------------------------------------------------------
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


async def _drive(plan: _Plan, progress: Progress) -> EvalResult:
    """Run every job at once under one in-flight limit; an answer batch's judges start when it ends.

    Cancelled, it cancels the batches in flight (each closes its requests and keeps what finished),
    takes what they had, and raises ``EvalCancelled`` with the result so far."""
    started = time.perf_counter()
    # With concurrency="auto" the gateway key's window already bounds every batch's calls together:
    # the slots then only count them for the bar.
    slots = _Slots(plan.concurrency if plan.concurrency != "auto" else _UNBOUNDED, progress)
    per_answer = plan.judge_calls_per_answer()
    running: dict[asyncio.Task[BatchResult], _Job] = {}

    def launch(job: _Job) -> None:
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
                plan.take(job, result)
                _tally(progress, result)
                if job.judge is None:
                    progress.done += per_answer * sum(1 for item in result.items if item.answer is None)
                    for judging in plan.judge_jobs(job):
                        launch(judging)
    except BaseException as exc:
        for task in running:
            task.cancel()
        if running:  # wait for the cancelled requests to close their connections
            await asyncio.wait(running)
        plan.stats["wall_s"] = time.perf_counter() - started
        if not isinstance(exc, asyncio.CancelledError):
            raise
        for task, job in running.items():
            try:  # (gather would hand back a bare CancelledError, not the batch's BatchCancelled)
                plan.take(job, task.result())
            except BatchCancelled as stop:
                plan.take(job, stop.result)
            except (asyncio.CancelledError, Exception):  # cancelled before it began: nothing to keep
                continue
        plan.stopped = True
        raise EvalCancelled(plan.result()) from None
    plan.stats["wall_s"] = time.perf_counter() - started
    progress.done = progress.total  # items that failed before taking a place (a spent budget) too
    return plan.result()


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


def _progress(plan: _Plan) -> Progress:
    answers = sum(len(rows) for rows in plan.records.values())
    return Progress(answers * (1 + plan.judge_calls_per_answer()), show=plan.show_progress)


def _run_sync(plan: _Plan) -> EvalResult:
    """On the background loop; this thread draws the bar and takes an interrupt (``EvalInterrupted``)."""
    progress = _progress(plan)
    progress.start()
    status = "interrupted"
    try:
        result = _bridge.run(
            _drive(plan, progress),
            tick=progress.render,
            every=TICK_S,
            interrupted=lambda outcome: EvalInterrupted(
                outcome.result if isinstance(outcome, EvalCancelled) else _stopped(plan)
            ),
        )
        status = "done"
        return result
    finally:
        progress.close(status)


async def _run_async(plan: _Plan) -> EvalResult:
    """On the caller's loop, with a task redrawing the bar; cancelled, ``EvalCancelled``."""
    progress = _progress(plan)
    progress.start()
    status = "interrupted"
    ticker = asyncio.create_task(_ticking(progress))
    try:
        result = await _drive(plan, progress)
        status = "done"
        return result
    finally:
        ticker.cancel()
        progress.close(status)


async def _ticking(progress: Progress) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        progress.render()


def _stopped(plan: _Plan) -> EvalResult:
    plan.stopped = True
    return plan.result()


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
    plan = _Plan(
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
    plan = _Plan(
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
