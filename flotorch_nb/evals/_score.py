"""``Score``: one scorer's verdict on one answer, and the one rule for what a scorer may return."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._errors import EvalError

__all__ = ["Score", "to_score"]


@dataclass(frozen=True)
class Score:
    """A scorer's verdict on one answer: ``value`` (0..1; ``True``/``False`` are 1/0) and why."""

    value: float | bool
    explanation: str | None = None


def to_score(value: Any, name: str) -> Score:
    """What a scorer returned as a ``Score``; ``EvalError`` for anything that is not a verdict."""
    if isinstance(value, Score):
        score = value
    elif isinstance(value, bool | int | float) and not isinstance(value, complex):
        score = Score(value)
    else:
        raise EvalError(
            f"scorer {name} returned a {type(value).__name__}; return a bool, a number or a Score"
        )
    number = float(score.value)
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise EvalError(f"scorer {name} returned {score.value!r}; a score is between 0 and 1")
    return score
