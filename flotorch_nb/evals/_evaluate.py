"""``evaluate`` / ``aevaluate``: a dataset x models x scorers, every call a batch item.

Nothing here sends a request. The plan (``_Plan``, pure) checks everything before any I/O — the data
and its columns, the template (the batch rule: ``flotorch_nb.batch.Inputs``), the scorers, the call
parameters (``client.check``), the batch options — and then hands out jobs, each one batch run by
``flotorch_nb.batch`` on the given client: one per model x epoch for the answers, then one per judge
model x vote for each judge scorer. So the answer cache, retries, hooks, budgets (client gates) and
progress are the batch's; one ``RateLimiter`` is shared by every job, so ``rpm``/``tpm`` hold across
answers and judges; a re-run with the same cache sends only what is missing. Only the loop over the
jobs exists twice (``_run_sync`` / ``_run_async``, side by side): an interrupt (``EvalInterrupted``) or
a cancellation (``EvalCancelled``) carries a result with everything that had finished.

Epochs: epoch ``k > 0`` is sent with ``seed=k`` (added to a given ``seed``), so its request differs
from epoch 0's, is cached apart and resumes; epoch 0 is the very request of a one-epoch run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._errors import InvalidRequestError
from ..batch import BatchCancelled, BatchInterrupted, BatchOptions, Inputs, RateLimiter, run_async, run_sync
from ..batch._inputs import is_missing
from ..pricing import PriceTable, default_prices
from ._data import load_rows
from ._errors import EvalError
from ._judge import Judge, Vote
from ._result import EvalResult, JudgeUsage, Record
from .scorers import Scorer, resolve

if TYPE_CHECKING:
    import os

    from .._client import Client
    from ..batch import BatchResult
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


def _models(models: Any) -> list[str]:
    names = models.split(",") if isinstance(models, str) else models
    if isinstance(names, Mapping) or not isinstance(names, Sequence):
        raise EvalError(f"models= must be a model id or a list of them, got {models!r:.80}")
    if any(not isinstance(n, str) for n in names):
        raise EvalError(f"models= must be model ids (strings), got {models!r:.80}")
    cleaned = [n.strip() for n in names if n.strip()]
    if not cleaned:
        raise EvalError("models= names no model")
    if len(set(cleaned)) != len(cleaned):
        raise EvalError(f"models= lists a model twice: {cleaned}")
    return cleaned


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
        self.models = _models(models)
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
        limits = BatchOptions.of(rpm=batch.pop("rpm", None), tpm=batch.pop("tpm", None))  # checked here
        # One limiter for every job: rpm/tpm hold across the answers' and the judges' batches.
        self.limiter = RateLimiter(limits.rpm, limits.tpm)
        shared = {
            "concurrency": batch.get("concurrency", 16),
            "progress": batch.get("progress", True),
            "cache": batch.get("cache"),
            "on_error": batch.get("on_error", "keep"),
            "limiter": self.limiter,
        }
        tools, response_format = batch.get("tools"), batch.get("response_format")
        self.answer_options: dict[tuple[str, int], BatchOptions] = {}
        for model in self.models:
            for epoch in range(epochs):
                call = self._seeded(params, epoch)
                extra = call.pop("extra_body", None)
                self.client.check(_PROBE, tools, response_format, extra, model=model, **call)
                if extra is not None:
                    call["extra_body"] = extra
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
                extra_j = call.pop("extra_body", None)
                self.client.check(_PROBE, None, judge.grade_class, extra_j, model=model, **call)
                if extra_j is not None:
                    call["extra_body"] = extra_j
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
        self.votes: dict[str, dict[int, tuple[list[Vote], list[str]]]] = {j.name: {} for j in self.judges}
        self.usage = {j.name: JudgeUsage() for j in self.judges}
        self.stats: dict[str, Any] = {"requests": 0, "cache_hits": 0, "judge_requests": 0, "wall_s": 0.0}
        self.stopped = False

    def _default_judge_model(self) -> str:
        model = getattr(self.client, "model_id", None)
        if not model:
            raise EvalError("judge(...) needs model= (the client has no model_id to default to)")
        return str(model)

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
    def jobs(self) -> Iterator[_Job]:
        """The answer batches, then (once they are taken) the judges' batches."""
        for model in self.models:
            for epoch in range(self.epochs):
                yield _Job(model, epoch, self.inputs, self.answer_options[(model, epoch)])
        graded = [r for rows in self.records.values() for r in rows if r.answer is not None]
        if not graded:
            return
        for judge in self.judges:
            messages = [
                judge.messages(self.prompts[r.sample] or "", self._target(r.sample), r.answer or "")
                for r in graded
            ]
            for model, vote, options in self.judge_calls[judge.name]:
                yield _Job(model, vote, messages, options, judge, graded)

    def take(self, job: _Job, result: BatchResult) -> None:
        """What a batch gave: answers scored by the pure scorers, or judge votes."""
        if job.judge is None:
            self.stats["requests"] += result.stats.requests
            self.stats["cache_hits"] += result.stats.cache_hits
            self.stats["wall_s"] += result.stats.wall_s
            rows = self.records[(job.model, job.number)]
            for item in result.items:
                self._answer(rows[item.position], item)
            return
        judge, usage = job.judge, self.usage[job.judge.name]
        self.stats["judge_requests"] += result.stats.requests
        self.stats["wall_s"] += result.stats.wall_s
        usage.requests += result.stats.requests
        usage.cache_hits += result.stats.cache_hits
        votes = self.votes[judge.name]
        for item in result.items:
            record = job.graded[item.position]
            got, failed = votes.setdefault(id(record), ([], []))
            usage.calls += 1
            answer = item.answer
            if answer is None or answer.parsed is None:
                usage.errors += 1
                failed.append(
                    f"{job.model}: {type(item.error).__name__}: {item.error}"
                    if item.error
                    else f"{job.model}: no grade"
                )
                continue
            got.append(judge.vote(answer.parsed, job.model))
            if answer.usage is not None:
                usage.input_tokens += answer.usage[0]
                usage.output_tokens += answer.usage[1]
            cost = self._cost(job.model, answer.model, answer.usage)
            if cost is None:
                usage.unpriced += 1
            elif usage.cost is not None:
                usage.cost += cost

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
            for record in records:
                if record.answer is None:
                    continue
                got, failed = self.votes[judge.name].get(id(record), ([], []))
                if not got and not failed:
                    continue
                try:
                    score = judge.combine(got, failed)
                except EvalError as exc:
                    record.scores[judge.name] = (None, str(exc))
                else:
                    record.scores[judge.name] = (float(score.value), score.explanation)
        for usage in self.usage.values():
            if usage.unpriced and usage.cost == 0:
                usage.cost = None if not len(self.prices) else usage.cost
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


# -- the two shells ----------------------------------------------------------------------------------
def _run_sync(plan: _Plan) -> EvalResult:
    started = time.perf_counter()
    for job in plan.jobs():
        try:
            result = run_sync(plan.client, job.inputs, job.options)
        except BatchInterrupted as stop:
            plan.take(job, stop.result)
            plan.stopped = True
            raise EvalInterrupted(plan.result()) from None
        plan.take(job, result)
    plan.stats["wall_s"] = time.perf_counter() - started
    return plan.result()


async def _run_async(plan: _Plan) -> EvalResult:
    started = time.perf_counter()
    for job in plan.jobs():
        try:
            result = await run_async(plan.client, job.inputs, job.options)
        except BatchCancelled as stop:
            plan.take(job, stop.result)
            plan.stopped = True
            raise EvalCancelled(plan.result()) from None
        plan.take(job, result)
    plan.stats["wall_s"] = time.perf_counter() - started
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
    concurrency: int = 16,
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
    ``epochs``: answers per sample and model (epoch k > 0 sent with ``seed=k``). ``concurrency``,
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
    concurrency: int = 16,
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
    concurrency: int, rpm: Any, tpm: Any, cache: Any, progress: bool, params: dict[str, Any]
) -> dict[str, Any]:
    options = dict(params)
    options.update(concurrency=concurrency, rpm=rpm, tpm=tpm, progress=progress)
    if cache is not None:
        options["cache"] = cache
    return options
