"""The one rate limiter every in-flight request of a batch shares: rpm, tpm and a shared 429 back-off.

Guarantees, over *any* window of the limit's length (60 s), not per calendar minute:

- ``rpm``: at most ``rpm`` requests are let through. A log of grant times enforces it exactly; on
  top, grants are paced ``60/rpm`` s apart (a virtual schedule that does not drift with timer
  lateness), so a batch runs at the limit's rate from the start instead of bursting and stalling.
- ``tpm``: a request is let through only if the tokens of the grants in the window plus its own
  estimate (prompt plus ``max_tokens``: ``flotorch_nb._hooks.estimate_tokens``) stay within ``tpm``.
  When the answer arrives, ``settle`` replaces the estimate with the gateway's count, so later
  grants see the real usage. The bound is exact when estimates are upper bounds (``max_tokens`` set);
  otherwise the first requests of a window may overshoot by their answers' length, and the
  reconciliation then holds the following ones back.
- ``pause(seconds)``: a 429 (or any answer with ``Retry-After``) pauses every grant until then, so the
  whole batch slows down, not only the item that was refused.

A small margin (``MARGIN_S``) is added to the window for the log check, because a request is granted
slightly before it reaches the gateway. The limiter is pure asyncio and process-local; ``flotorch_nb
.dask`` runs the same class on the Dask scheduler to hold one limit for a whole cluster.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from .._errors import ConfigurationError, InvalidRequestError

__all__ = ["Grant", "Limiter", "RateLimiter", "check_limit"]

WINDOW_S = 60.0
#: Extra seconds the log looks back: covers the time from a grant to the request reaching the gateway.
MARGIN_S = 0.25


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
class Grant:
    """One request let through: when, and how many tokens it is counted for (estimate, then actual)."""

    at: float
    tokens: int
    id: int = 0


class Limiter(Protocol):
    """What the batch runner needs from a limiter (the process-local one, or a cluster's)."""

    async def acquire(self, tokens: int) -> Grant:
        """Wait until a request estimated at ``tokens`` may be sent; count it."""
        ...

    def settle(self, grant: Grant, tokens: int) -> None:
        """The request finished having used ``tokens`` (0 if it never reached a model)."""
        ...

    def pause(self, seconds: float) -> None:
        """Let nothing through for ``seconds`` (a 429's Retry-After)."""
        ...


@dataclass
class RateLimiter:
    """rpm/tpm over any 60-s window, and a shared pause; see the module docstring. One per batch run
    (or per cluster); ``clock`` and ``sleep`` can be replaced in tests."""

    rpm: float | None = None
    tpm: float | None = None
    window: float = WINDOW_S
    clock: object = field(default=time.monotonic, repr=False)
    _log: collections.deque[Grant] = field(default_factory=collections.deque, repr=False)
    _tokens_in_window: int = field(default=0, repr=False)
    _next_at: float = field(default=0.0, repr=False)
    _paused_until: float = field(default=0.0, repr=False)
    _lock: asyncio.Lock | None = field(default=None, repr=False)
    _ids: int = field(default=0, repr=False)
    #: Requests holding or waiting for ``_lock`` (none: a request that may go needs no lock).
    _queued: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.rpm = check_limit(self.rpm, "rpm")
        self.tpm = check_limit(self.tpm, "tpm")

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

    def _wait_for(self, tokens: int, now: float) -> float:
        """Seconds until a request of ``tokens`` may go (0: now)."""
        if self.rpm is None and self.tpm is None:  # only a 429's pause can hold a request back
            return self._paused_until - now
        waits = [self._paused_until - now]
        if self.rpm is not None:
            waits.append(self._next_at - now)
            if len(self._log) >= self.rpm:  # the oldest grant must leave the window first
                index = len(self._log) - int(self.rpm)
                waits.append(self._log[index].at + self.window + MARGIN_S - now)
        if self.tpm is not None and self._tokens_in_window + tokens > self.tpm:
            excess = self._tokens_in_window + tokens - self.tpm
            freed = 0
            for grant in self._log:  # wait until enough of the oldest grants have left the window
                freed += grant.tokens
                if freed >= excess:
                    waits.append(grant.at + self.window + MARGIN_S - now)
                    break
        return max(waits)

    async def acquire(self, tokens: int) -> Grant:
        """Wait (in turn: first come, first served) until a request of ``tokens`` may go; count it."""
        if self.tpm is not None and tokens > self.tpm:
            raise InvalidRequestError(
                f"this request may use up to {tokens} tokens (prompt + max_tokens), more than tpm="
                f"{self.tpm:g} allows in a minute; lower max_tokens or raise tpm"
            )
        if not self._queued:
            # Nobody holds or waits for the lock: if the request may go now, grant it on the spot.
            # Exactly what taking a free lock would do (that never yields), minus the lock's cost.
            now = self._now()
            self._forget_before(now)
            if self._wait_for(tokens, now) <= 0:
                return self._grant(tokens, now)
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._queued += 1
        try:
            async with self._lock:  # one waiter at a time keeps grants in arrival order
                while True:
                    now = self._now()
                    self._forget_before(now)
                    wait = self._wait_for(tokens, now)
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                return self._grant(tokens, now)
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
        self._ids += 1
        grant = Grant(now, tokens, self._ids)
        if self.rpm is not None or self.tpm is not None:
            self._log.append(grant)
            self._tokens_in_window += tokens
        return grant

    def settle(self, grant: Grant, tokens: int) -> None:
        """Replace the grant's estimate with what it used, if it is still in the window."""
        if self.tpm is None or grant.tokens == tokens:
            return
        if self._log and grant.at >= self._log[0].at:
            self._tokens_in_window += tokens - grant.tokens
        grant.tokens = tokens

    def pause(self, seconds: float) -> None:
        """Hold every grant back for ``seconds`` from now (the longest pause asked for wins)."""
        self._paused_until = max(self._paused_until, self._now() + max(0.0, seconds))
