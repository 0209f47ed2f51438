"""``%%flotorch --eval DATA``: the cell is the template of an evaluation on the session's client.

``DATA`` names a list of dicts, DataFrame or Dataset in the notebook, or a ``.csv``/``.jsonl`` path;
``--target COL`` the reference column; ``--score a,b`` built-in scorers by name (``exact_match``,
``includes``, ``numeric``, ``json_valid``); ``--judge "rubric"`` adds an LLM judge
(``--judge-model M``, default: the first model). ``-m a,b`` the models (default: the session's).
Everything else is ``flotorch_nb.evals.evaluate``: the answers and the judges' calls are batch
items on the session's client (its ledger, budgets and cache), a re-run sends only what is missing.
No IPython import here: a mistake is an ``EvalUsageError`` that ``magics.py`` shows as a
``UsageError``, before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    from ..evals import EvalResult
    from .session import Session

__all__ = ["EvalUsageError", "run_eval"]


class EvalUsageError(ValueError):
    """A mistake in ``--eval`` options or data (``magics.py`` shows it as a ``UsageError``)."""


def _data(namespace: Mapping[str, Any], name: str) -> Any:
    """The notebook's variable ``name``, else ``name`` as a path when it ends as a file the evaluation
    reads (``evals._data`` keeps that list)."""
    from ..evals._data import FILES, is_data_file

    if name in namespace:
        return namespace[name]
    if is_data_file(name):
        return name
    raise EvalUsageError(f"--eval {name}: no such variable in the notebook (nor {FILES})")


def run_eval(
    session: Session,
    namespace: Mapping[str, Any],
    name: str,
    template: str,
    models: Sequence[str],
    *,
    target: str | None = None,
    score: str | None = None,
    judge: str | None = None,
    judge_model: str | None = None,
    concurrency: int | str | None = None,
    params: Mapping[str, Any] | None = None,
) -> EvalResult:
    """Run the ``--eval`` cell; ``EvalUsageError`` for a mistake before any I/O."""
    from ..evals import evaluate, scorers

    if not template.strip():
        raise EvalUsageError("--eval: the cell is empty; write the prompt template below %%flotorch")
    chosen: list[Any] = [s.strip() for s in (score or "").split(",") if s.strip()]
    if judge_model is not None and judge is None:
        raise EvalUsageError('--judge-model needs --judge "rubric"')
    try:
        if judge is not None:
            chosen.append(scorers.judge(judge, model=judge_model or models[0]))
        if not chosen:
            raise EvalUsageError('--eval needs --score exact_match,includes,... and/or --judge "rubric"')
        client = session.client(models[0])
        options: dict[str, Any] = dict(params or {})
        if concurrency is not None:
            options["concurrency"] = concurrency
        return evaluate(
            _data(namespace, name),
            template=template,
            target=target,
            models=list(models),
            scorers=chosen,
            client=client,
            **options,
        )
    except (InvalidRequestError, ConfigurationError) as exc:
        if isinstance(exc, ConfigurationError) and session.missing():
            raise
        raise EvalUsageError(f"--eval {name}: {exc}") from None
