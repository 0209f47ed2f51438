"""``%%flotorch --map NAME``: the cell is a template run once per item of a list, Series or DataFrame.

``{item}`` stands for each item of a list or Series, column names for a DataFrame's fields; a field
that is neither is a ``UsageError`` naming the fields there are, before anything is sent. The batch
runs on the session's client with a progress bar, counts every request in the session's ledger once
and stops sending when the session's budget would be exceeded (the items not sent carry
``BudgetExceededError``). The cell's value is the ``BatchResult``, which shows its summary and first
rows. No IPython import here: ``magics.py`` passes the parsed options and the user's namespace.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import BudgetExceededError, ConfigurationError, InvalidRequestError
from .._hooks import CallRequest, CallResult

if TYPE_CHECKING:
    from ..batch import BatchResult
    from ..llm import FlotorchLLM
    from .session import Session

__all__ = ["MapUsageError", "run_map", "session_accounting"]


class MapUsageError(ValueError):
    """A mistake in ``--map`` options or data (``magics.py`` shows it as a ``UsageError``)."""


@contextlib.contextmanager
def session_accounting(session: Session, client: FlotorchLLM) -> Iterator[None]:
    """A hook on ``client`` for the duration of a batch: the session's budget checked with each
    request's estimate plus the estimates of what is in flight, so that many requests in flight at
    once cannot overshoot it (the session's own hook refuses only once it is spent). The ledger
    counts each request once through the session's own hooks, which the batch sender shares."""
    lock = threading.Lock()
    reserved: dict[int, int] = {}

    def check(request: CallRequest) -> None:
        budget = session.budget
        with lock:
            if budget is not None:
                pending = session.spent_tokens + sum(reserved.values()) + request.estimated_tokens
                if pending > budget:
                    raise BudgetExceededError(
                        f"the session's token budget would be exceeded ({session.spent_tokens} of {budget} "
                        f"tokens used, {sum(reserved.values())} in flight, this request may use "
                        f"{request.estimated_tokens}); raise it with %flotorch budget N"
                    )
            reserved[id(request)] = request.estimated_tokens

    def release(result: CallResult) -> None:
        with lock:
            reserved.pop(id(result.request), None)

    client.hooks.before_request.append(check)
    client.hooks.after_call.append(release)
    try:
        yield
    finally:
        client.hooks.before_request.remove(check)
        client.hooks.after_call.remove(release)


def run_map(
    session: Session,
    namespace: Mapping[str, Any],
    name: str,
    template: str,
    *,
    model: str | None = None,
    system: str | None = None,
    concurrency: int | None = None,
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
    if concurrency is not None and concurrency < 1:
        raise MapUsageError(f"--concurrency must be a whole number >= 1, got {concurrency}")
    try:
        inputs = Inputs(data, template, system=system)
    except InvalidRequestError as exc:
        raise MapUsageError(f"--map {name}: {exc}") from None
    client = session.client(model)
    options: dict[str, Any] = {"progress": True, "response_format": response_format, **(params or {})}
    if concurrency is not None:
        options["concurrency"] = concurrency
    with session_accounting(session, client):
        try:
            return client.batch(inputs, **options)
        except (InvalidRequestError, ConfigurationError) as exc:
            raise MapUsageError(f"--map {name}: {exc}") from None
