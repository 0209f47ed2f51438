"""A budget as a gate: a limit on a running total that concurrent calls reserve against, then settle.

The accounting every budget shares (``spending.TokenBudget``, ``spending.MoneyBudget``, and through
them the notebook session's two budgets); what is counted — tokens or dollars — is the subclass's. A
call's amount moves through three sums, each kept as a running number so that deciding costs the same
after a million calls as after one:

- *reserved*: the worst case of every attempt in flight (``admit`` adds it, ``settle`` removes it);
- *settled*: what attempts really spent (``settle`` adds it: the gateway's usage, else the estimate)
  but whoever keeps the books (a ledger, a tracker) has not recorded yet; ``recorded`` moves it out
  again, under the same lock as the recording, so a call is never counted twice nor missed between
  its attempt's end and its ``after_call`` hook;
- *spent*: the recorded total (``_recorded()``, read from the books).

``admit`` answers (see ``flotorch_nb._admission``):

- a ticket, when ``spent + settled + reserved + worst <= limit``;
- ``UNTIL_SETTLED`` when only the reservations in flight are in the way: the call waits for them;
- ``BudgetExceededError`` when it would not fit even with nothing in flight.

With an output cap the worst case is a true most and the limit is never passed. Without one the worst
case uses ``_hooks.UNCAPPED_OUTPUT_TOKENS``; answers longer than that can pass the limit, by at most
what the calls in flight when it ran out spent beyond their reservations, since nothing more is
admitted once it is reached. Pure and thread-safe; a ``None`` limit admits everything for free.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import TYPE_CHECKING, Generic, Self, TypeVar

from ._admission import UNTIL_SETTLED, Ticket

if TYPE_CHECKING:
    from ._admission import Asked, Spent
    from ._errors import BudgetExceededError
    from ._pipeline._hooks import CallResult, Hooks

__all__ = ["FREE", "Budget", "Reservation"]

#: What a budget counts: tokens or dollars.
N = TypeVar("N", int, Decimal)


class Reservation(Ticket, Generic[N]):
    """One attempt's worst case, held until it settles."""

    __slots__ = ("amount", "request")

    def __init__(self, request: Asked, amount: N) -> None:
        self.request = request
        self.amount: N = amount


class _Free(Ticket):
    """The ticket of a budget without a limit: nothing reserved, nothing to settle."""

    __slots__ = ()


FREE: Ticket = _Free()


class Budget(Generic[N]):
    """A limit on a running total, as a ``Gate`` (see the module docstring).

    Subclasses say what a call may cost (``worst``), what an attempt spent (``actual``), what the books
    hold (``_recorded``) and how a refusal reads (``refusal``). ``lock``: shared with whoever records,
    so that recording and forgetting a settled amount are one step (a ledger passes its own).
    """

    def __init__(self, limit: N | None, zero: N, lock: threading.RLock | None = None) -> None:
        self.limit: N | None = limit
        self._zero: N = zero
        self._lock = lock if lock is not None else threading.RLock()
        self._reserved: N = zero
        self._in_flight = 0
        self._settled: N = zero
        # id(request) -> (request, amount settled for it): the request is kept so its id stays unique.
        self._unrecorded: dict[int, tuple[Asked, N]] = {}

    # -- what subclasses say -------------------------------------------------------------------------
    def worst(self, request: Asked) -> N:
        """The most ``request`` may cost (may raise ``BudgetExceededError``: it cannot be checked)."""
        raise NotImplementedError

    def actual(self, spent: Spent, reserved: N) -> N:
        """What an attempt spent; ``reserved`` is its reservation (for a cost that cannot be known)."""
        raise NotImplementedError

    def _recorded(self) -> N:
        """The books' total (read under the lock)."""
        raise NotImplementedError

    def refusal(self, request: Asked, worst: N, spent: N) -> BudgetExceededError:
        """The error for a call that cannot fit even with nothing in flight."""
        raise NotImplementedError

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook: the call is in the books (``recorded``)."""
        self.recorded(result.request)

    # -- on a client ---------------------------------------------------------------------------------
    def attach(self, hooks: Hooks) -> Self:
        """Add this budget to a client's gates and its ``after_call`` hooks (``llm.hooks``); idempotent."""
        if self not in hooks.gates:
            hooks.gates.append(self)
        if self.after_call not in hooks.after_call:
            hooks.after_call.append(self.after_call)
        return self

    def detach(self, hooks: Hooks) -> None:
        """Remove this budget from a client's hooks again."""
        while self in hooks.gates:
            hooks.gates.remove(self)
        while self.after_call in hooks.after_call:
            hooks.after_call.remove(self.after_call)

    # -- the gate ------------------------------------------------------------------------------------
    @property
    def spent(self) -> N:
        """What finished attempts spent: recorded, plus settled and not yet recorded."""
        with self._lock:
            return self._recorded() + self._settled

    @property
    def reserved(self) -> N:
        """The worst cases of the attempts in flight."""
        return self._reserved

    @property
    def in_flight(self) -> int:
        """How many admitted attempts have not settled yet."""
        return self._in_flight

    def admit(self, request: Asked) -> Ticket | float:
        """A reservation, ``UNTIL_SETTLED``, or ``BudgetExceededError`` (see the module docstring)."""
        if self.limit is None:
            return FREE
        worst = self.worst(request)
        with self._lock:
            limit = self.limit
            if limit is None:
                return FREE
            spent = self._recorded() + self._settled
            if spent + self._reserved + worst <= limit:
                self._reserved += worst
                self._in_flight += 1
                return Reservation(request, worst)
            if spent + worst > limit:
                raise self.refusal(request, worst, spent)
            return UNTIL_SETTLED

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        """Replace the attempt's reservation by what it spent (nothing: it was never sent)."""
        if not isinstance(ticket, Reservation):
            return
        amount = self._zero
        if spent is not None:
            try:
                amount = self.actual(spent, ticket.amount)
            except Exception:  # a settle must not raise: count the worst case instead
                amount = ticket.amount
        with self._lock:
            self._reserved -= ticket.amount
            self._in_flight -= 1
            if amount:
                key = id(ticket.request)
                before = self._unrecorded.get(key, (ticket.request, self._zero))[1]
                self._unrecorded[key] = (ticket.request, before + amount)
                self._settled += amount

    def recorded(self, request: Asked) -> None:
        """``request``'s call is in the books now: stop counting what its attempts settled. Call it
        under ``lock`` together with the recording (``after_call`` does)."""
        with self._lock:
            entry = self._unrecorded.pop(id(request), None)
            if entry is not None:
                self._settled -= entry[1]

    def forget(self) -> None:
        """Drop what was settled and not recorded (the books were cleared); reservations stay."""
        with self._lock:
            self._unrecorded.clear()
            self._settled = self._zero
