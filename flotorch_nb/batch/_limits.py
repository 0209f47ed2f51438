"""The one rate limiter every in-flight request of a batch shares: rpm, tpm and a shared 429 back-off.

Guarantees, over *any* window of the limit's length (60 s), not per calendar minute:

- ``rpm`` (any number > 0): never more than ``rpm`` requests in any 60-s window, so a fractional
  limit is a whole number of requests there (``rpm=2.5``: at most 2); below one a minute, at most one
  per ``60/rpm`` s (``rpm=0.5``: one every two minutes). A log of grant times enforces it exactly; on
  top, grants are paced ``60/rpm`` s apart (a virtual schedule that does not drift with timer
  lateness), so a batch runs at the limit's rate from the start instead of bursting and stalling.
- ``tpm``: a request is let through only if the tokens of the grants in the window plus its own
  estimate (prompt plus ``max_tokens``: ``flotorch_nb._pipeline._hooks.estimate_tokens``) stay within ``tpm``.
  When the answer arrives, ``settle`` replaces the estimate with the gateway's count, so later
  grants see the real usage. The bound is exact when estimates are upper bounds (``max_tokens`` set);
  otherwise the first requests of a window may overshoot by their answers' length, and the
  reconciliation then holds the following ones back.
- ``pause(seconds)``: a 429 (or any answer with ``Retry-After``) pauses every grant until then, so the
  whole batch slows down, not only the item that was refused.

A batch plugs its limiter into the client's send loop as a gate (``flotorch_nb._admission``):
``LimiterGate`` asks ``try_acquire`` before each attempt (a grant, or the seconds to wait: it never
blocks), settles with the tokens the attempt spent, and pauses everyone when an attempt met a 429.
``acquire`` is the waiting form of ``try_acquire``, first come first served, for code that holds a
limiter itself. A small margin (``MARGIN_S``) is added to the window for the log check, because a
request is granted slightly before it reaches the gateway. Process-local; ``flotorch_nb.dask`` runs
the same class on the Dask scheduler (asking ``try_acquire``) to hold one limit for a whole cluster.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .._admission import Asked, Gate, Spent, Ticket
from .._errors import APIStatusError, ConfigurationError, InvalidRequestError, RateLimitError

__all__ = ["Grant", "Limiter", "LimiterGate", "RateLimiter", "check_limit", "pause_after"]

WINDOW_S = 60.0
#: Extra seconds the log looks back: covers the time from a grant to the request reaching the gateway.
MARGIN_S = 0.25

#: How long a 429 pauses everyone: ``pause_after(error)`` from the client's retry policy.
PauseFor = Callable[[APIStatusError], float]


def check_limit(value: object, name: str) -> float | None:
    """``rpm``/``tpm``: None, or a number > 0."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a number > 0 (per minute) or None, got {value!r}")
    return float(value)


@dataclass(slots=True)
class Grant(Ticket):
    """One request let through: when, and how many tokens it is counted for (estimate, then actual)."""

    at: float
    tokens: int
    id: int = 0


#: The grant of a limiter that counts nothing (no rpm, no tpm): one object for every request.
_UNCOUNTED = Grant(0.0, 0)


class Limiter(Protocol):
    """What a batch needs from a limiter (the process-local one, or a cluster's): its gate."""

    def gate(self, pause_for: PauseFor) -> Gate:
        """The gate that holds this limit for every attempt of a batch; ``pause_for`` says how long
        an attempt's 429 pauses everyone."""
        ...


def pause_after(spent: Spent | None, pause_for: PauseFor) -> float | None:
    """Seconds to pause every request after this attempt (a 429, or an answer with Retry-After)."""
    error = spent.error if spent is not None else None
    if not isinstance(error, APIStatusError):
        return None
    if isinstance(error, RateLimitError) or error.retry_after is not None:
        return pause_for(error)
    return None


@dataclass
class RateLimiter:
    """rpm/tpm over any 60-s window, and a shared pause; see the module docstring. One per batch run
    (or per cluster); ``clock`` can be replaced in tests."""

    rpm: float | None = None
    tpm: float | None = None
    window: float = WINDOW_S
    clock: object = field(default=time.monotonic, repr=False)
    #: Grants still counted for tpm (within ``window``).
    _log: collections.deque[Grant] = field(default_factory=collections.deque, repr=False)
    #: Grant times still counted for rpm (within ``_span``).
    _times: collections.deque[float] = field(default_factory=collections.deque, repr=False)
    _tokens_in_window: int = field(default=0, repr=False)
    _next_at: float = field(default=0.0, repr=False)
    _paused_until: float = field(default=0.0, repr=False)
    _lock: asyncio.Lock | None = field(default=None, repr=False)
    _ids: int = field(default=0, repr=False)
    #: Requests holding or waiting for ``_lock`` (none: a request that may go needs no lock).
    _queued: int = field(default=0, repr=False)
    #: rpm as whole requests per span: ``floor(rpm)`` per window, or one per ``window/rpm`` below 1.
    _allowed: int = field(default=0, repr=False)
    _span: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.rpm = check_limit(self.rpm, "rpm")
        self.tpm = check_limit(self.tpm, "tpm")
        if self.rpm is not None:
            # Never more than rpm in any window: a fraction of a request cannot be sent, so 2.5 a
            # minute is at most 2 in any minute; below one a minute, one per window/rpm seconds.
            self._allowed = max(1, math.floor(self.rpm))
            self._span = self.window / self.rpm if self.rpm < 1 else self.window

    @property
    def active(self) -> bool:
        """Whether this limiter limits anything but pauses."""
        return self.rpm is not None or self.tpm is not None

    def _now(self) -> float:
        return self.clock()  # type: ignore[operator, no-any-return]

    def _forget_before(self, now: float) -> None:
        horizon = now - self.window - MARGIN_S
        while self._log and self._log[0].at <= horizon:
            self._tokens_in_window -= self._log.popleft().tokens
        horizon = now - self._span - MARGIN_S
        while self._times and self._times[0] <= horizon:
            self._times.popleft()

    def _wait_for(self, tokens: int, now: float) -> float:
        """Seconds until a request of ``tokens`` may go (0 or less: now), with rpm or tpm set."""
        waits = [self._paused_until - now]
        if self.rpm is not None:
            waits.append(self._next_at - now)
            if len(self._times) >= self._allowed:  # the oldest counted grant must leave the span
                waits.append(self._times[len(self._times) - self._allowed] + self._span + MARGIN_S - now)
        if self.tpm is not None and self._tokens_in_window + tokens > self.tpm:
            excess = self._tokens_in_window + tokens - self.tpm
            freed = 0
            for grant in self._log:  # wait until enough of the oldest grants have left the window
                freed += grant.tokens
                if freed >= excess:
                    waits.append(grant.at + self.window + MARGIN_S - now)
                    break
        return max(waits)

    def _check(self, tokens: int) -> None:
        if self.tpm is not None and tokens > self.tpm:
            raise InvalidRequestError(
                f"this request may use up to {tokens} tokens (prompt + max_tokens), more than tpm="
                f"{self.tpm:g} allows in a minute; lower max_tokens or raise tpm"
            )

    def try_acquire(self, tokens: int) -> Grant | float:
        """A grant for a request of ``tokens`` now, or the seconds to wait before asking again.

        Never blocks: the send loop's gate (``LimiterGate``) asks this before each attempt. A request
        that could never fit (more tokens than ``tpm``) raises ``InvalidRequestError``.
        """
        if self.rpm is None and self.tpm is None:  # only a 429's pause can hold it back
            wait = self._paused_until - self._now() if self._paused_until else 0.0
            return _UNCOUNTED if wait <= 0 else wait
        self._check(tokens)
        now = self._now()
        self._forget_before(now)
        wait = self._wait_for(tokens, now)
        if wait <= 0:
            return self._grant(tokens, now)
        return wait

    async def acquire(self, tokens: int) -> Grant:
        """Wait (in turn: first come, first served) until a request of ``tokens`` may go; count it."""
        if not self._queued:
            # Nobody holds or waits for the lock: if the request may go now, grant it on the spot.
            # Exactly what taking a free lock would do (that never yields), minus the lock's cost.
            answer = self.try_acquire(tokens)
            if isinstance(answer, Grant):
                return answer
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._queued += 1
        try:
            async with self._lock:  # one waiter at a time keeps grants in arrival order
                while not isinstance(answer := self.try_acquire(tokens), Grant):
                    await asyncio.sleep(answer)
                return answer
        finally:
            self._queued -= 1

    def _grant(self, tokens: int, now: float) -> Grant:
        """Count a request let through at ``now``."""
        if self.rpm is not None:
            interval = self.window / self.rpm
            # A virtual schedule: a timer that fires a little late does not push every later grant
            # back (the next is due one interval after this one was *due*); after idle time it
            # restarts from now. The log above is what guarantees the limit.
            self._next_at = max(self._next_at + interval, now + interval / 2)
            self._times.append(now)
        self._ids += 1
        grant = Grant(now, tokens, self._ids)
        if self.tpm is not None:
            self._log.append(grant)
            self._tokens_in_window += tokens
        return grant

    def settle(self, grant: Grant, tokens: int) -> None:
        """Replace the grant's estimate with what it used, if it is still in the window."""
        if self.tpm is None or grant.tokens == tokens or grant is _UNCOUNTED:
            return
        if self._log and grant.at >= self._log[0].at:
            self._tokens_in_window += tokens - grant.tokens
        grant.tokens = tokens

    def pause(self, seconds: float) -> None:
        """Hold every grant back for ``seconds`` from now (the longest pause asked for wins)."""
        self._paused_until = max(self._paused_until, self._now() + max(0.0, seconds))

    def gate(self, pause_for: PauseFor) -> LimiterGate:
        """This limiter as a gate of the client's send loop (see ``LimiterGate``)."""
        return LimiterGate(self, pause_for)


class LimiterGate:
    """A ``RateLimiter`` as a gate (``flotorch_nb._admission``): a grant before each attempt, or the
    seconds to wait; after it, the tokens it spent (0 when it never left, the gateway's count or an
    estimate otherwise), and a pause for everyone when it met a 429."""

    __slots__ = ("limiter", "pause_for")

    def __init__(self, limiter: RateLimiter, pause_for: PauseFor) -> None:
        self.limiter = limiter
        self.pause_for = pause_for

    def admit(self, request: Asked) -> Ticket | float:
        """A grant, or seconds to wait (``InvalidRequestError`` if it can never fit ``tpm``)."""
        limiter = self.limiter  # the estimate is worked out only where tpm needs it
        return limiter.try_acquire(request.estimated_tokens if limiter.tpm is not None else 0)

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        """Count what the attempt spent; a 429 pauses every request of the batch."""
        self.settled(ticket, spent)

    def settled(self, ticket: Ticket, spent: Spent | None) -> float | None:
        """``settle``, returning the pause it began (None: none), so a batch's worker can count the
        429 without asking the attempt's error again."""
        assert isinstance(ticket, Grant)
        if (pause := pause_after(spent, self.pause_for)) is not None:
            self.limiter.pause(pause)
        self.limiter.settle(ticket, spent.tokens if spent is not None else 0)
        return pause
