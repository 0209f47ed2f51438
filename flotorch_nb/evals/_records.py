"""The plain records an evaluation is made of (``Record``, ``JudgeUsage``), and ``ResultView``: what
the report and the inspect-ai export read of an ``EvalResult`` (a protocol, so neither imports it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["JudgeUsage", "Record", "ResultView"]


@dataclass
class Record:
    """One answer (sample x model x epoch): what it said, cost and took, and how it scored."""

    sample: int
    model: str
    epoch: int
    answer: str | None = None
    error_type: str | None = None
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    source: str | None = None
    #: Dollars, from the price table (None: no price for the model, or no token counts).
    cost: float | None = None
    request_id: str | None = None
    #: scorer name -> (value 0..1 or None when it could not score, explanation)
    scores: dict[str, tuple[float | None, str | None]] = field(default_factory=dict)


@dataclass
class JudgeUsage:
    """What one judge scorer's calls took, counted apart from the answers'."""

    calls: int = 0
    requests: int = 0
    cache_hits: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Dollars over the priced calls (None: calls were made and none of them had a price).
    cost: float | None = 0.0
    unpriced: int = 0


class ResultView(Protocol):
    """What ``_report`` and ``_inspect`` use of an ``EvalResult``."""

    samples: list[dict[str, Any]]
    prompts: list[str | None]
    template: str
    target: str | None
    models: list[str]
    epochs: int
    scorers: list[str]
    records: list[Record]
    judge_usage: dict[str, JudgeUsage]
    stats: dict[str, Any]

    @property
    def answered(self) -> int: ...

    def summary_rows(self) -> list[dict[str, Any]]: ...

    def worst(self, k: int = 5) -> Sequence[tuple[int, float]]: ...
