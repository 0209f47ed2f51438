"""What calls cost as they finish, and the budgets that admit a call only if it can fit.

Both work through the client's hooks and gates (``_pipeline._hooks``, ``flotorch_nb._admission``),
so every path — ``invoke``, ``stream``, a comparison, the chat panel, a batch — is priced and checked
once, whoever makes the call:

- :class:`SpendTracker` adds up what finished calls cost (an ``after_call`` hook), per model, and
  counts the calls it could not price, so a total is never shown as complete when it is not;
- :class:`TokenBudget` and :class:`MoneyBudget` are gates (``_budget.Budget``): before each attempt
  they reserve its worst case — the prompt estimate with tools and schema, plus the output cap — and
  after it they replace the reservation with what it spent. A call that does not fit only because of
  calls in flight waits for them; one that cannot fit even with nothing in flight is refused
  (``BudgetExceededError``) before anything is sent.

The notebook session's ledger owns a tracker and feeds it from its own hook; its two budgets read the
ledger's running totals instead of keeping second counts. Pure: no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from ._budget import Budget
from ._config import check_whole
from ._errors import BudgetExceededError, ConfigurationError
from ._pipeline._hooks import output_cap, output_tokens
from .pricing import ENV_PRICES, PriceTable, _money, format_cost

if TYPE_CHECKING:
    from ._admission import Asked, Spent
    from ._pipeline._hooks import CallResult

__all__ = ["MoneyBudget", "SpendTracker", "TokenBudget", "cost_of"]

#: How a refusal outside the notebook says the budget can be changed.
_PYTHON_HINT = "raise its limit (budget.set_limit(...)) or detach it"


def cost_of(result: CallResult, prices: PriceTable) -> tuple[Decimal | None, bool]:
    """What a finished call cost in dollars (None: its model has no price), and whether that is an
    estimate: a call stopped or broken mid-stream has no gateway count, so its tokens are the hooks'
    estimate, priced the same way. A call that never reached a model (refused, unreachable, a
    4xx/5xx) cost nothing, priced or not."""
    total = result.total_tokens
    if result.usage is None and total == 0:
        return Decimal(0), False
    price = prices.get(result.request.model, result.model)
    if price is None:
        return None, False
    if result.usage is not None:
        return price.cost(result.usage.input_tokens, result.usage.output_tokens), False
    prompt = min(total, result.request.prompt_tokens)
    return price.cost(prompt, total - prompt), True


class SpendTracker:
    """Adds up what calls cost (an ``after_call`` hook): total, per model, and calls of unknown cost.

    ``spent`` counts only what is known; ``unknown_calls`` says how many calls could not be priced;
    ``estimated`` says whether some of ``spent`` comes from token estimates.
    """

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self._lock = threading.Lock()
        self.spent = Decimal(0)
        self.by_model: dict[str, Decimal] = {}
        self.unknown_calls = 0
        self.estimated = False

    def cost_of(self, result: CallResult) -> tuple[Decimal | None, bool]:
        """:func:`cost_of` at this tracker's prices."""
        return cost_of(result, self.prices)

    def add(self, model: str, cost: Decimal | None, estimated: bool = False) -> None:
        """Count one call's cost (None: it could not be priced)."""
        with self._lock:
            if cost is None:
                self.unknown_calls += 1
                return
            self.spent += cost
            self.by_model[model] = self.by_model.get(model, Decimal(0)) + cost
            self.estimated = self.estimated or estimated

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook."""
        self.add(result.model, *self.cost_of(result))

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self.spent = Decimal(0)
            self.by_model.clear()
            self.unknown_calls = 0
            self.estimated = False

    def __repr__(self) -> str:
        return f"SpendTracker(spent={format_cost(self.spent)}, unknown_calls={self.unknown_calls})"


def _split(request: Asked) -> tuple[int, int]:
    """A request's worst case in tokens, as (prompt, answer): ``Asked.prompt_tokens`` and
    ``output_tokens``, for any gate request."""
    answer = output_tokens(request.body)
    return max(0, request.estimated_tokens - answer), answer


def _parts(request: Asked) -> str:
    prompt, answer = _split(request)
    if output_cap(request.body) is not None:
        return f"{prompt:,} tokens for its prompt, {answer:,} for its answer (its max_tokens)"
    return (
        f"{prompt:,} tokens for its prompt, {answer:,} for its answer, the estimate used when no "
        "max_tokens is set"
    )


class TokenBudget(Budget[int]):
    """A gate that keeps the tokens spent at or under ``limit`` (None: no limit).

    Each attempt reserves ``Asked.estimated_tokens`` and settles to what the gateway reported.
    ``recorded``: where the tokens already spent are read (the notebook ledger's running total, under
    the ledger's ``lock``); without it the budget counts finished calls itself, in :meth:`after_call`.
    ``hint``: how a refusal says the budget can be raised or removed.
    """

    def __init__(
        self,
        limit: int | None,
        *,
        recorded: Callable[[], int] | None = None,
        lock: threading.RLock | None = None,
        hint: str = _PYTHON_HINT,
    ) -> None:
        super().__init__(_tokens(limit), 0, lock)
        self._total = 0
        self._read = recorded if recorded is not None else (lambda: self._total)
        self._feeds = recorded is None
        self.hint = hint

    def set_limit(self, limit: int | None) -> None:
        """Change the limit (None: none); calls in flight keep their reservations."""
        self.limit = _tokens(limit)

    def worst(self, request: Asked) -> int:
        """The prompt estimate plus the output cap (or the uncapped estimate)."""
        return request.estimated_tokens

    def actual(self, spent: Spent, reserved: int) -> int:
        """The gateway's count, else the client's estimate of what was spent."""
        return spent.tokens

    def _recorded(self) -> int:
        return self._read()

    def refusal(self, request: Asked, worst: int, spent: int) -> BudgetExceededError:
        """Spent already, or this call's worst case is more than what is left."""
        limit = self.limit or 0
        if spent >= limit:
            return BudgetExceededError(
                f"token budget spent: {spent} of {limit} tokens used, so the call was not sent; {self.hint}"
            )
        return BudgetExceededError(
            f"token budget: {spent:,} of {limit:,} tokens used, and this call to {request.model} may use "
            f"up to {worst:,} ({_parts(request)}): more "
            f"than the {limit - spent:,} left, so it was not sent; set a smaller max_tokens, or {self.hint}"
        )

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook: count the call (unless the books are kept elsewhere)."""
        with self._lock:
            if self._feeds:
                self._total += result.total_tokens
            self.recorded(result.request)

    def reset(self) -> None:
        """Forget what was spent (calls in flight keep their reservations)."""
        with self._lock:
            self._total = 0
            self.forget()

    def __repr__(self) -> str:
        return f"TokenBudget(limit={self.limit!r}, spent={self.spent}, in_flight={self.in_flight})"


def _tokens(limit: object) -> int | None:
    return check_whole(limit, "the token budget", 1, or_none=True)


class MoneyBudget(Budget[Decimal]):
    """A gate that keeps the dollars spent at or under ``limit``.

    The most a call can cost is its prompt estimate (tools and schema included) at the input price plus
    its output cap — ``max_tokens``, or ``_hooks.UNCAPPED_OUTPUT_TOKENS`` without one — at the output
    price. A model with no price is refused: its cost cannot be checked, and letting it through would
    make the budget a guess.

    ``tracker``: a ``SpendTracker`` that someone else's hook feeds (the session ledger's, under the
    ledger's ``lock``); the budget then only reads it. Without one the budget keeps its own and feeds
    it from :meth:`after_call`. A ``limit`` of None admits everything (the session's budget when off).
    """

    def __init__(
        self,
        limit: object,
        prices: PriceTable,
        tracker: SpendTracker | None = None,
        *,
        lock: threading.RLock | None = None,
        hint: str = _PYTHON_HINT,
    ) -> None:
        super().__init__(None if limit is None else _dollars(limit), Decimal(0), lock)
        self.prices = prices
        self._feeds = tracker is None
        self.tracker = tracker if tracker is not None else SpendTracker(prices)
        self.hint = hint

    def set_limit(self, limit: object | None) -> None:
        """Change the limit (None: none); calls in flight keep their reservations."""
        self.limit = None if limit is None else _dollars(limit)

    @property
    def remaining(self) -> Decimal:
        """Dollars left, not counting calls in flight (never below zero)."""
        return max(Decimal(0), (self.limit or Decimal(0)) - self.spent)

    def most_a_call_costs(self, request: Asked) -> Decimal | None:
        """The conservative estimate of ``request``'s cost, or None when its model has no price."""
        price = self.prices.get(request.model)
        if price is None:
            return None
        return price.cost(*_split(request))

    def worst(self, request: Asked) -> Decimal:
        """``most_a_call_costs``; refuses a model without a price."""
        estimate = self.most_a_call_costs(request)
        if estimate is None:
            raise BudgetExceededError(
                f"a money budget of {format_cost(self.limit)} is set, but {request.model!r} has no price, "
                f"so what it costs cannot be checked: set one (%flotorch price {request.model} IN OUT, or "
                f"in the {ENV_PRICES} file) or turn the money budget off; nothing was sent"
            )
        return estimate

    def actual(self, spent: Spent, reserved: Decimal) -> Decimal:
        """The reported usage at this budget's prices; else the token estimate, priced the same way."""
        usage = spent.response.usage if spent.response is not None else None
        model = spent.response.model if spent.response is not None else None
        price = self.prices.get(spent.request.model, model)
        if price is None:
            return reserved
        if usage is not None:
            return price.cost(usage.input_tokens, usage.output_tokens)
        prompt = min(spent.tokens, _split(spent.request)[0])
        return price.cost(prompt, spent.tokens - prompt)

    def _recorded(self) -> Decimal:
        return self.tracker.spent

    def refusal(self, request: Asked, worst: Decimal, spent: Decimal) -> BudgetExceededError:
        """What was spent, what is left, what this call may cost, and what to do."""
        limit = self.limit or Decimal(0)
        left = max(Decimal(0), limit - spent)
        return BudgetExceededError(
            f"money budget {format_cost(limit)}: {format_cost(spent)} spent, and this call to "
            f"{request.model} could cost up to {format_cost(worst)} ({_parts(request)}): more "
            f"than the {format_cost(left)} left, so nothing was "
            f"sent; set a smaller max_tokens, or {self.hint}"
        )

    def reset(self) -> None:
        """Forget what was spent (calls in flight keep their reservations)."""
        with self._lock:
            self.tracker.reset()
            self.forget()

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook: count the cost (unless the tracker is fed elsewhere)."""
        with self._lock:
            if self._feeds:
                self.tracker.after_call(result)
            self.recorded(result.request)

    def __repr__(self) -> str:
        return f"MoneyBudget(limit={format_cost(self.limit)}, spent={format_cost(self.spent)})"


def _dollars(limit: object) -> Decimal:
    try:
        return _money(limit, "a money budget")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
