"""An evaluation checked and laid out before any I/O (pure): ``Plan`` and the batches it hands out.

Everything that can be refused is refused here, before a request is sent: the data and its columns,
the template (the batch rule: ``flotorch_nb.batch.Inputs``), the scorers, the call parameters
(``client.check``), the batch options. Then the plan lays out the jobs, each one batch run by
``flotorch_nb.batch`` on the given client: one per model x epoch for the answers, and for each of
those, once its answers are in, one per judge scorer x judge model x vote grading them. One
``RateLimiter`` is shared by every job's options, so ``rpm``/``tpm`` hold across answers and judges.

Epochs: epoch ``k > 0`` is sent with ``seed=k`` (added to a given ``seed``), so its request differs
from epoch 0's, is cached apart and resumes; epoch 0 is the very request of a one-epoch run. Judge
votes are seeded the same way.

What the batches give back goes into records (``_collect``); running them is ``_evaluate``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .._config import check_whole
from .._errors import InvalidRequestError
from ..batch import BatchOptions, Inputs, RateLimiter
from ..batch._inputs import is_missing
from ..compare import parse_models
from ._data import load_rows
from ._errors import EvalError
from ._judge import Judge
from ._records import Record
from .scorers import Scorer, resolve

if TYPE_CHECKING:
    from .._client import Client

__all__ = ["Job", "Plan"]

#: Options that shape the batch rather than the call; everything else is a call parameter.
_BATCH = ("concurrency", "rpm", "tpm", "on_error", "progress", "cache", "response_format", "tools")
_PROBE = [{"role": "user", "content": "probe"}]


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
class Job:
    """One batch: its inputs and options, and where its items' outcomes go."""

    model: str
    number: int  # the epoch (answers) or the vote (judges)
    inputs: Any
    options: BatchOptions
    judge: Judge | None = None
    graded: list[Record] = field(default_factory=list)
    #: A judge job's place in ``Plan.judge_calls[judge]``: where its votes go, whenever it finishes.
    call: int = 0


class Plan:
    """An evaluation checked and laid out: its options and its jobs (pure)."""

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
        check_whole(epochs, "epochs", 1, EvalError)
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

        batch = {k: options.pop(k) for k in _BATCH if k in options}
        params = options  # what is left: call parameters
        # One limiter for every job (it checks rpm/tpm): they hold across answers and judges alike.
        self.limiter = RateLimiter(batch.pop("rpm", None), batch.pop("tpm", None))
        self.concurrency: int | Literal["auto"] = batch.get("concurrency", 16)
        self.show_progress = bool(batch.get("progress", True))
        shared = {
            "concurrency": self.concurrency,
            "progress": False,  # one bar for the whole evaluation (``_evaluate``)
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

    def reference(self, i: int) -> Any:
        """Sample ``i``'s reference (None: no target column, or an empty cell)."""
        if self.target is None:
            return None
        value = self.dataset.rows[i].get(self.target)
        return None if is_missing(value) else value

    # -- the jobs ----------------------------------------------------------------------------------
    def answer_jobs(self) -> list[Job]:
        """The answer batches: one per model x epoch."""
        return [
            Job(model, epoch, self.inputs, self.answer_options[(model, epoch)])
            for model in self.models
            for epoch in range(self.epochs)
        ]

    def judge_jobs(self, graded: list[Record]) -> Iterator[Job]:
        """The judges' batches for one answer batch once it is taken: its answered records, graded."""
        if not graded:
            return
        for judge in self.judges:
            messages = [
                judge.messages(self.prompts[r.sample] or "", self.reference(r.sample), r.answer or "")
                for r in graded
            ]
            for call, (model, vote, options) in enumerate(self.judge_calls[judge.name]):
                yield Job(model, vote, messages, options, judge, graded, call)

    def judge_calls_per_answer(self) -> int:
        """How many judge calls each answer brings (for the progress bar's total)."""
        return sum(len(calls) for calls in self.judge_calls.values())

    @property
    def answers(self) -> int:
        """How many answers the evaluation asks for: samples x models x epochs."""
        return len(self.dataset.rows) * len(self.models) * self.epochs
