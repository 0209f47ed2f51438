"""Evaluate models on a dataset: ``evaluate(data, template=..., target=..., models=[...], scorers=[...])``.

Every answer and every judge's grade is a batch item on the client (``flotorch_nb.batch``): cached,
rate-limited, held to budgets, resumable. The ``EvalResult`` holds the answers and scores
(``to_pandas``), the statistics (``summary``: mean, SE, 95 % CI; ``compare``: a paired test between
two models; methods in ``_stats``), and writes inspect-ai logs (``to_inspect``). Importing this package
imports neither pandas, scipy nor inspect-ai: each is imported where first used (``pip install
'flotorch_nb[evals]'``).
"""

from __future__ import annotations

from . import scorers
from ._errors import EvalError
from ._evaluate import EvalCancelled, EvalInterrupted, aevaluate, evaluate
from ._judge import JudgeGrade
from ._result import EvalResult, JudgeUsage, Record
from ._score import Score
from ._stats import Estimate, Paired

__all__ = [
    "Estimate",
    "EvalCancelled",
    "EvalError",
    "EvalInterrupted",
    "EvalResult",
    "JudgeGrade",
    "JudgeUsage",
    "Paired",
    "Record",
    "Score",
    "aevaluate",
    "evaluate",
    "scorers",
]
