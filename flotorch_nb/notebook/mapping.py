"""``%%flotorch --map NAME``: the cell is a template run once per item of a list, Series or DataFrame.

``{item}`` stands for each item of a list or Series, column names for a DataFrame's fields; a field
that is neither is a ``UsageError`` naming the fields there are, before anything is sent. The batch
runs on the session's client with a progress bar; the session's ledger, a gate and a hook of that
client, holds every attempt to the session's budgets (an item waits while calls in flight hold what
is left, and is refused with ``BudgetExceededError`` only when it cannot fit even with nothing in
flight) and counts every request once, with running totals. The cell's value is the
``BatchResult``, which shows its summary and first rows. No IPython import here: ``magics.py``
passes the parsed options and the user's namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    from ..batch import BatchResult
    from .session import Session

__all__ = ["MapUsageError", "run_map"]


class MapUsageError(ValueError):
    """A mistake in ``--map`` options or data (``magics.py`` shows it as a ``UsageError``)."""


def run_map(
    session: Session,
    namespace: Mapping[str, Any],
    name: str,
    template: str,
    *,
    model: str | None = None,
    system: str | None = None,
    concurrency: int | str | None = None,
    response_format: Any = None,
    params: Mapping[str, Any] | None = None,
) -> BatchResult:
    """Run ``template`` over ``namespace[name]``; ``MapUsageError`` for a mistake before any I/O."""
    from ..batch import Inputs

    if name not in namespace:
        raise MapUsageError(
            f"--map {name}: no such variable in the notebook; define the list or DataFrame first"
        )
    data = namespace[name]
    try:
        inputs = Inputs(data, template, system=system)
    except InvalidRequestError as exc:
        raise MapUsageError(f"--map {name}: {exc}") from None
    client = session.client(model)
    options: dict[str, Any] = {"progress": True, "response_format": response_format, **(params or {})}
    if concurrency is not None:
        options["concurrency"] = concurrency
    try:
        return client.batch(inputs, **options)
    except (InvalidRequestError, ConfigurationError) as exc:
        raise MapUsageError(f"--map {name}: {exc}") from None
