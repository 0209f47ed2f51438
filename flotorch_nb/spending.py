"""What calls cost as they finish, and a money budget that refuses a call before it is sent.

Both work through the client hooks (``flotorch_nb._hooks``), so every path — ``invoke``, ``stream``, a
comparison, the chat panel, a batch — is priced and checked once, whoever makes the call:

- :class:`SpendTracker` adds up what finished calls cost (an ``after_call`` hook), per model, and
  counts the calls it could not price, so a total is never shown as complete when it is not;
- :class:`MoneyBudget` (``before_request`` + ``after_call``) refuses a call when what was spent plus
  the most this call can cost would pass the limit. Calls in flight hold that worst case as a
  reservation, so three models compared at once cannot together overshoot the budget.

The notebook session's ledger owns a tracker and feeds it from its own hook; its money budget
(``%flotorch budget $5``) reads that tracker instead of keeping a second count. Pure: no I/O.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import TYPE_CHECKING

from ._errors import BudgetExceededError, ConfigurationError
from .pricing import ENV_PRICES, PriceTable, _money, format_cost

if TYPE_CHECKING:
    from ._hooks import CallRequest, CallResult, Hooks

__all__ = ["MoneyBudget", "SpendTracker", "cost_of"]


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
    prompt = min(total, _prompt_tokens(result.request))
    return price.cost(prompt, total - prompt), True


def _prompt_tokens(request: CallRequest) -> int:
    return request.estimated_tokens - _cap_tokens(request)


def _cap_tokens(request: CallRequest) -> int:
    cap = request.body.get("max_tokens") or request.body.get("max_completion_tokens") or 0
    return cap if isinstance(cap, int) else 0


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


class MoneyBudget:
    """Refuse calls, before sending, once they could take the spend past ``limit`` dollars.

    The most a call can cost is its prompt (the hooks' estimate) at the input price plus its
    ``max_tokens`` cap at the output price; without a cap only the prompt can be foreseen, so a
    strict budget wants ``max_tokens``. A model with no price is refused: its cost cannot be checked,
    and letting it through would make the budget a guess.

    ``tracker``: a ``SpendTracker`` that someone else's hook feeds (the session ledger's); the budget
    then only reads it. Without one the budget keeps its own and feeds it from :meth:`after_call`.
    Attach with :meth:`attach`, after any other hook that may refuse a call (a call refused by a later
    hook never reaches ``after_call``, so its reservation would stay until :meth:`reset`).
    """

    def __init__(self, limit: object, prices: PriceTable, tracker: SpendTracker | None = None) -> None:
        try:
            self.limit = _money(limit, "a money budget")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.prices = prices
        self._feeds = tracker is None
        self.tracker = tracker if tracker is not None else SpendTracker(prices)
        self._lock = threading.Lock()
        # Keyed by id(request); the request is kept too, so its id cannot be reused while reserved.
        self._reserved: dict[int, tuple[CallRequest, Decimal]] = {}

    @property
    def spent(self) -> Decimal:
        """Dollars spent by finished calls."""
        return self.tracker.spent

    @property
    def remaining(self) -> Decimal:
        """Dollars left, not counting calls in flight (never below zero)."""
        return max(Decimal(0), self.limit - self.tracker.spent)

    def most_a_call_costs(self, request: CallRequest) -> Decimal | None:
        """The conservative estimate of ``request``'s cost, or None when its model has no price."""
        price = self.prices.get(request.model)
        if price is None:
            return None
        return price.cost(_prompt_tokens(request), _cap_tokens(request))

    def before_request(self, request: CallRequest) -> None:
        """The ``before_request`` hook: refuse (``BudgetExceededError``) or reserve the estimate."""
        estimate = self.most_a_call_costs(request)
        if estimate is None:
            raise BudgetExceededError(
                f"a money budget of {format_cost(self.limit)} is set, but {request.model!r} has no price, "
                f"so what it costs cannot be checked: set one (%flotorch price {request.model} IN OUT, or "
                f"in the {ENV_PRICES} file) or turn the money budget off; nothing was sent"
            )
        with self._lock:
            committed = self.tracker.spent + sum((cost for _, cost in self._reserved.values()), Decimal(0))
            if committed + estimate > self.limit:
                in_flight = (
                    f" ({format_cost(committed - self.tracker.spent)} in flight)" if self._reserved else ""
                )
                raise BudgetExceededError(
                    f"money budget {format_cost(self.limit)}: {format_cost(self.tracker.spent)} spent"
                    f"{in_flight}, and this call to {request.model} could cost up to "
                    f"{format_cost(estimate)}; nothing was sent (raise it with %flotorch budget $N)"
                )
            self._reserved[id(request)] = (request, estimate)

    def reset(self) -> None:
        """Forget what was spent and reserved."""
        self.tracker.reset()
        with self._lock:
            self._reserved.clear()

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook: count the cost (unless the tracker is fed elsewhere) and free the
        call's reservation."""
        if self._feeds:
            self.tracker.after_call(result)
        with self._lock:
            self._reserved.pop(id(result.request), None)

    def attach(self, hooks: Hooks) -> MoneyBudget:
        """Add this budget's two hooks to a client's ``hooks`` (``llm.hooks``)."""
        hooks.before_request.append(self.before_request)
        hooks.after_call.append(self.after_call)
        return self

    def detach(self, hooks: Hooks) -> None:
        """Remove this budget's hooks again."""
        while self.before_request in hooks.before_request:
            hooks.before_request.remove(self.before_request)
        while self.after_call in hooks.after_call:
            hooks.after_call.remove(self.after_call)

    def __repr__(self) -> str:
        return f"MoneyBudget(limit={format_cost(self.limit)}, spent={format_cost(self.tracker.spent)})"
