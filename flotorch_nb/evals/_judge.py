"""``scorers.judge``: an LLM grades each answer, through the same client and the same batch engine.

The judge's calls are batch items like the answers (``flotorch_nb.evals._evaluate`` runs one batch per
judge model and vote), so they are cached, rate-limited, held to budgets, resumable, and counted apart
from the answers' (``EvalResult.judge_usage``).

The prompt (a contract: the offline gateway recognises it and grades deterministically)::

    system: You are an impartial grader. ...
    user:   [Question]
            <the prompt the model was sent>

            [Reference]
            <the target (a list: its items joined by ", ")>

            [Answer]
            <the model's answer>

            [Rubric]
            <the rubric>

Each label stands alone on its line, in that order; a section runs until the next label line (the
answer runs until the *last* ``[Rubric]`` line, since an answer may contain anything). Without a
target (no ``target=`` column, or an empty cell) the ``[Reference]`` section is left out, so a grader
never reads a placeholder as the reference. The grade is
asked for as structured output (``response_format`` = the pydantic class, a strict JSON schema):
``JudgeGrade`` ``{"grade": "correct" | "incorrect", "explanation": str}``, or with ``scale=N``
``JudgeScore`` ``{"grade": 0..N (integer), "explanation": str}``. A grade that does not validate is
re-asked up to ``validation_retries`` times by the client (``validation_retries=`` call option: the
invalid answer and its errors are sent back); if it still does not validate, that vote is an error.

Votes: each judge model is asked ``votes`` times; vote ``k > 0`` is sent with ``seed=k`` (added to a
given seed) so the calls differ and are cached apart. ``majority``: correct when more than half of the
votes that came back say so (a tie is incorrect); ``mean``: the mean of the votes' values. Votes that
failed are left out and named in the explanation; a sample with no vote back has no value (an error).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from .._config import check_whole
from ._errors import EvalError
from ._score import Score

__all__ = ["SYSTEM", "Judge", "JudgeGrade", "judge_prompt"]

SYSTEM = (
    "You are an impartial grader. Read the question, the reference answer (if any), the answer to "
    "grade and the rubric. Decide whether the answer meets the rubric (and agrees with the reference "
    "when one is given). Reply only with JSON matching the schema: the grade and a short explanation."
)
LABELS = ("[Question]", "[Reference]", "[Answer]", "[Rubric]")


class JudgeGrade(BaseModel):
    """A judge's verdict: correct or incorrect, and why."""

    grade: Literal["correct", "incorrect"] = Field(description="whether the answer meets the rubric")
    explanation: str = Field(description="one or two sentences: why")


def judge_prompt(question: str, reference: Any, answer: str, rubric: str) -> str:
    """The judge's user message (see the module docstring for the contract)."""
    if reference is None:
        return f"[Question]\n{question}\n\n[Answer]\n{answer}\n\n[Rubric]\n{rubric}"
    ref = ", ".join(map(str, reference)) if isinstance(reference, list | tuple) else str(reference)
    return f"[Question]\n{question}\n\n[Reference]\n{ref}\n\n[Answer]\n{answer}\n\n[Rubric]\n{rubric}"


@dataclass(frozen=True)
class Vote:
    """One judge call's outcome: a value in 0..1 and its explanation, or an error."""

    value: float | None
    explanation: str


class Judge:
    """An LLM-as-judge scorer (made by ``scorers.judge``; see the module docstring)."""

    needs_target = False
    binary: bool | None

    def __init__(
        self,
        rubric: str,
        *,
        model: str | Sequence[str] | None,
        votes: int,
        aggregate: str,
        scale: int | None,
        validation_retries: int,
        name: str,
        params: Mapping[str, Any],
    ) -> None:
        if not isinstance(rubric, str) or not rubric.strip():
            raise EvalError("judge(rubric): the rubric must be a non-empty text")
        check_whole(votes, "judge(votes=...)", 1, EvalError)
        if aggregate not in ("majority", "mean"):
            raise EvalError(f"judge(aggregate=...) must be 'majority' or 'mean', got {aggregate!r}")
        if scale is not None:
            check_whole(scale, "judge(scale=...)", 1, EvalError)
            aggregate = "mean"  # a score has no majority: its votes are averaged
        check_whole(validation_retries, "judge(validation_retries=...)", 0, EvalError)
        models = (model,) if isinstance(model, str) else tuple(model) if model is not None else ()
        if any(not isinstance(m, str) or not m.strip() for m in models):
            raise EvalError(f"judge(model=...) must be a model id or a list of them, got {model!r}")
        self.rubric, self.models, self.votes, self.aggregate = rubric, models, votes, aggregate
        self.scale, self.validation_retries, self.name = scale, validation_retries, name
        self.params = dict(params)
        self.binary = scale is None and aggregate == "majority"
        self.grade_class: type[BaseModel] = (
            JudgeGrade
            if scale is None
            else create_model(
                "JudgeScore",
                grade=(int, Field(ge=0, le=scale, description=f"the score, 0 (worst) to {scale} (best)")),
                explanation=(str, Field(description="one or two sentences: why")),
            )
        )

    def __repr__(self) -> str:
        return (
            f"<judge {self.name}: models={list(self.models) or 'client'} votes={self.votes} {self.aggregate}>"
        )

    def messages(self, question: str, reference: Any, answer: str) -> list[dict[str, str]]:
        """The messages of one judge call."""
        return [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": judge_prompt(question, reference, answer, self.rubric)},
        ]

    def calls(self, default_model: str) -> list[tuple[str, int]]:
        """Every (judge model, vote number) to ask, one batch each."""
        return [(m, k) for m in (self.models or (default_model,)) for k in range(self.votes)]

    def vote(self, parsed: Any, model: str) -> Vote:
        """A grade as a vote (``parsed`` is the grade class's instance)."""
        grade, why = parsed.grade, parsed.explanation
        value = (1.0 if grade == "correct" else 0.0) if self.scale is None else grade / self.scale
        who = f"{model}: {grade}" if self.scale is None else f"{model}: {grade}/{self.scale}"
        return Vote(value, f"{who} — {why}")

    def combine(self, votes: Sequence[Vote], failed: Sequence[str]) -> Score:
        """The votes of one answer as its score; ``EvalError`` when no vote came back."""
        values = [v.value for v in votes if v.value is not None]
        if not values:
            raise EvalError("no judge vote came back: " + "; ".join(failed))
        if self.aggregate == "majority":
            value: float = 1.0 if sum(values) > len(values) / 2 else 0.0
        else:
            value = sum(values) / len(values)
        lines = [v.explanation for v in votes]
        lines += [f"failed: {why}" for why in failed]
        return Score(value, "\n".join(lines))
