"""``concurrency="auto"``: one AIMD window per gateway key, as a gate of the client's send loop.

``AutoConcurrency`` wraps the pure ``AimdWindow`` (``_aimd``) for concurrent use: a lock, the clock,
and the requests waiting for a place. There is one per gateway key in a process (``controller_for``:
base URL + the key's fingerprint, never the key), so every batch on that key — two notebooks' cells,
an evaluation and a batch — shares what the gateway allows instead of each finding it alone and
together exceeding it. ``flotorch_nb.dask`` keeps the same object on the scheduler for a cluster.

``AutoGate`` is one batch's face of it, a gate (``flotorch_nb._admission``): before each attempt it
takes a place in the window (waiting on the event loop, first come first served, woken one per freed
place: a batch runs hundreds of workers, and waking all of them at every answer would cost more than
the answers), after it tells the window how the attempt went — a healthy answer and its latency, a
429/503/529 with the gateway's ``Retry-After`` and ``x-ratelimit-*`` headers, or nothing that
concerns the limit. With ``rpm`` the batch also holds no more places than that rate needs.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .._admission import RECHECK_S, UNTIL_SETTLED, Asked, Spent, Ticket, Waiters, wake
from .._errors import APIStatusError
from ._aimd import CONGESTED, AimdWindow, read_rate_headers

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["AutoConcurrency", "AutoGate", "AutoTicket", "Places", "controller_for", "outcome_of"]

#: Requests a batch with ``concurrency="auto"`` may ever have in flight (its workers).
AUTO_CEILING = 512


class AutoTicket(Ticket):
    """A place in the window: the request's number and when it was let through."""

    __slots__ = ("at", "seq")

    def __init__(self, seq: int, at: float) -> None:
        self.seq, self.at = seq, at


#: How an attempt ended, for the window: ("ok" | "congested" | "other" | "unsent", its rate-limit
#: headers, the tokens it used).
Outcome = tuple[str, "Mapping[str, str] | None", int]


def outcome_of(spent: Spent | None) -> Outcome:
    """What an attempt's ``Spent`` says about the gateway's limit (plain data: it crosses to Dask's
    scheduler as is)."""
    if spent is None:  # never sent: a later gate said "not now"
        return ("unsent", None, 0)
    if spent.response is not None and spent.error is None:
        return ("ok", spent.headers, spent.tokens if spent.known else 0)
    error = spent.error
    if isinstance(error, APIStatusError) and error.status_code in CONGESTED:
        return ("congested", spent.headers, 0)
    return ("other", None, 0)


class Places(Protocol):
    """What ``AutoGate`` asks of a window: this process's ``AutoConcurrency``, or a Dask worker's
    stand-in for the one on the scheduler (``flotorch_nb.dask``)."""

    def try_take(self) -> AutoTicket | float:
        """A place now, or seconds to wait (``UNTIL_SETTLED``: until one is freed)."""
        ...

    async def take(self) -> AutoTicket | float:
        """``try_take``, waiting a while on the running loop for a freed place."""
        ...

    def settle(self, ticket: AutoTicket, outcome: Outcome) -> None:
        """The attempt that held ``ticket`` ended so."""
        ...

    def ceiling_for(self, rate: float) -> int:
        """Places that ``rate`` requests a second need (``AimdWindow.ceiling_for``)."""
        ...


class AutoConcurrency:
    """The window of one gateway key, safe to share by batches on any thread or event loop."""

    def __init__(self, *, ceiling: int = AUTO_CEILING, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = AimdWindow(ceiling=ceiling)
        self.clock = clock
        self._lock = threading.Lock()
        self._waiting = Waiters(self._lock)
        #: Whether a waiting request sleeps out a pause or the pacing interval: only one does, the
        #: others queue behind it (hundreds of workers polling a 5-ms interval would be the load).
        self._timed = False

    def __repr__(self) -> str:
        w = self.window
        return (
            f"AutoConcurrency(window={w.window}, in_flight={w.in_flight}, peak={w.peak:.0f}, cuts={w.cuts})"
        )

    # -- places ---------------------------------------------------------------------------------
    def try_take(self) -> AutoTicket | float:
        """A place now, or seconds to wait (``UNTIL_SETTLED``: until a place is freed)."""
        with self._lock:
            now = self.clock()
            wait = self.window.wait(now)
            if wait > 0:
                return UNTIL_SETTLED if math.isinf(wait) else wait
            return AutoTicket(self.window.sent(now), now)

    async def take(self) -> AutoTicket | float:
        """``try_take``, waiting on the running loop (``RECHECK_S`` at most, then ``UNTIL_SETTLED``:
        the send loop asks every gate again). Waiting requests queue first come, first served: a
        freed place wakes one; a pause or the pacing interval is slept out by the first in line alone,
        who wakes the next when it goes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECHECK_S
        while True:
            answer = self.try_take()
            if isinstance(answer, AutoTicket):
                return answer
            left = deadline - loop.time()
            if left <= 0:
                return UNTIL_SETTLED
            if not math.isinf(answer):  # a pause or the pacing interval
                with self._lock:
                    timed, self._timed = self._timed, True
                if not timed:
                    try:
                        await asyncio.sleep(min(answer, left))
                    finally:
                        with self._lock:
                            self._timed = False
                            woken = self._waiting.take(1)
                        wake(woken)
                    continue
            await self._waiting.wait(left, self._free)

    def _free(self) -> bool:
        """Whether a request may go now (asked holding the lock, once in line: a place freed by
        another thread after ``try_take`` looked, when nobody was in line to be woken, is seen)."""
        return self.window.wait(self.clock()) <= 0

    def settle(self, ticket: AutoTicket, outcome: Outcome, now: float | None = None) -> None:
        """Tell the window how the attempt ended and wake as many waiting requests as places freed."""
        kind, headers, tokens = outcome
        with self._lock:
            now = self.clock() if now is None else now
            window = self.window
            if kind == "ok":
                window.answered(ticket.seq, now, now - ticket.at, read_rate_headers(headers), tokens)
            elif kind == "congested":
                window.congested(ticket.seq, now, read_rate_headers(headers))
            elif kind == "unsent":
                window.returned(ticket.seq)
            else:
                window.released()
            # Nearly every settle finds nobody waiting: no list made, nothing to wake.
            woken = self._waiting.take(window.window - window.in_flight) if self._waiting else None
        if woken:
            wake(woken)

    def ceiling_for(self, rate: float) -> int:
        """Places that ``rate`` requests a second need at the baseline latency."""
        with self._lock:
            return self.window.ceiling_for(rate)

    def gate(self, rate: float | None = None) -> AutoGate:
        """One batch's gate on this window (``rate``: its ``rpm`` per second, capping its places)."""
        return AutoGate(self, rate)

    @property
    def ceiling(self) -> int:
        """The most places the window ever gives (a batch starts no more workers)."""
        return self.window.ceiling

    @property
    def settled_at(self) -> int:
        """The window now: what a batch reports as the concurrency it settled at."""
        return self.window.window


_CONTROLLERS: dict[str, AutoConcurrency] = {}
_CONTROLLERS_LOCK = threading.Lock()


def controller_for(gateway_key: str) -> AutoConcurrency:
    """The process's window for one gateway key (made on first use, shared by every batch on it)."""
    with _CONTROLLERS_LOCK:
        controller = _CONTROLLERS.get(gateway_key)
        if controller is None:
            controller = _CONTROLLERS[gateway_key] = AutoConcurrency()
        return controller


class AutoGate:
    """One batch's gate on a shared window (see the module docstring); ``rate`` (requests per second,
    from ``rpm``) caps the places this batch holds."""

    __slots__ = ("controller", "held", "rate")

    def __init__(self, controller: Places, rate: float | None = None) -> None:
        self.controller, self.rate = controller, rate
        self.held = 0  # this batch's places

    def _capped(self) -> bool:
        rate = self.rate
        if rate is None:
            return False
        return self.held >= self.controller.ceiling_for(rate)

    def admit(self, request: Asked) -> Ticket | float:
        """A place, or how long to wait (for a sync caller; a batch's workers use ``aadmit``)."""
        if self._capped():
            return UNTIL_SETTLED
        return self._took(self.controller.try_take())

    async def aadmit(self, request: Asked) -> Ticket | float:
        """A place, waiting on the event loop for one to be freed."""
        if self._capped():
            return UNTIL_SETTLED
        return self._took(await self.controller.take())

    def _took(self, answer: AutoTicket | float) -> Ticket | float:
        if isinstance(answer, AutoTicket):
            self.held += 1
        return answer

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        """Tell the window how the attempt went (``None``: never sent)."""
        assert isinstance(ticket, AutoTicket)
        self.held -= 1
        self.controller.settle(ticket, outcome_of(spent))
