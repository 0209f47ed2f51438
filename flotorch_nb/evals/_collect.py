"""What an evaluation's batches gave, gathered into its records: ``Collector`` (pure).

One ``Record`` per sample x model x epoch, made up front so that a run that stops early still has a
row for every answer it never got. An answer batch fills its records and scores them with the pure
scorers as it is taken; a judge batch's grades are kept as votes by their place in the plan (judge
call x answer), not by arrival, so the result is the same whatever order the batches finish in —
costs included: they are summed in the plan's order when the result is drawn. ``result()`` combines
the votes into each judge's score and hands back the ``EvalResult`` so far (also after a stop).
"""

from __future__ import annotations

from typing import Any

from ..batch import BatchResult
from ..pricing import PriceTable, default_prices
from ._errors import EvalError
from ._judge import Judge, Vote
from ._plan import Job, Plan
from ._records import JudgeUsage, Record
from ._result import EvalResult

__all__ = ["Collector"]

#: One judge call's outcome for one answer: its vote and cost (None: unpriced), or why it failed.
_Cast = tuple[Vote, float | None] | tuple[str, None]


class Collector:
    """The records of one evaluation, filled batch by batch (``take``), and the result (``result``)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.prices: PriceTable = default_prices()
        samples = range(len(plan.dataset.rows))
        self.records = {
            (m, e): [Record(i, m, e) for i in samples] for m in plan.models for e in range(plan.epochs)
        }
        #: judge -> id(record) -> one ``_Cast`` per judge call (None until that call's batch is taken)
        self.votes: dict[str, dict[int, list[_Cast | None]]] = {j.name: {} for j in plan.judges}
        self.usage = {j.name: JudgeUsage() for j in plan.judges}
        self.stats: dict[str, Any] = {"requests": 0, "cache_hits": 0, "judge_requests": 0, "wall_s": 0.0}
        self.stopped = False

    def graded(self, answered: Job) -> list[Record]:
        """The records an answer batch answered (what its judges grade)."""
        return [r for r in self.records[(answered.model, answered.number)] if r.answer is not None]

    def take(self, job: Job, result: BatchResult) -> None:
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
        votes, calls = self.votes[judge.name], len(self.plan.judge_calls[judge.name])
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
            for scorer in self.plan.scorers:
                record.scores[scorer.name] = (None, f"no answer: {record.error_type}")
            return
        record.answer, record.source, record.request_id = answer.content, answer.source, answer.request_id
        record.latency_ms = round(answer.latency_s * 1000, 3)
        if answer.usage is not None:
            record.input_tokens, record.output_tokens = answer.usage[0], answer.usage[1]
        record.cost = self._cost(record.model, answer.model, answer.usage)
        sample, target = self.plan.dataset.rows[record.sample], self.plan.reference(record.sample)
        for scorer in self.plan.scorers:
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
        plan = self.plan
        records = [r for m in plan.models for e in range(plan.epochs) for r in self.records[(m, e)]]
        for judge in plan.judges:
            votes, usage = self.votes[judge.name], self.usage[judge.name]
            # Summed in the plan's order (call by call, answer by answer), not the order batches
            # finished in: the same run gives the very same float.
            total, priced = 0.0, False
            for call in range(len(plan.judge_calls[judge.name])):
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
            samples=plan.dataset.rows,
            prompts=plan.prompts,
            template=plan.template,
            target=plan.target,
            models=plan.models,
            epochs=plan.epochs,
            scorers=[s.name for s in plan.scorers],
            binary={s.name: s.binary for s in plan.scorers},
            records=records,
            judge_usage=self.usage,
            stats=stats,
        )
