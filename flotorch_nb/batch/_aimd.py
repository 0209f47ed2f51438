"""The pure controller behind ``concurrency="auto"``: how many requests a gateway key may have in
flight, learned from how its answers come back. No I/O and no clock: every event carries ``now``.

An AIMD window, as TCP keeps one (Reno's slow start and congestion avoidance), fed with outcomes:

- **start low, grow while healthy**: the window starts at ``initial`` and grows by one per healthy
  answer (it doubles every round trip: slow start) until the first sign of congestion, then by one
  per window of healthy answers (one per round trip: additive increase). It grows only while it is
  used (on answers to requests sent while it was full), so a slow producer never inflates it.
- **back off multiplicatively** on a 429 (or a 503/529 "overloaded") and on a sharp rise in latency
  (a short average above ``latency_rise`` x the observed baseline): the window is multiplied by
  ``backoff``, once per round trip (answers to requests sent before the cut do not cut again), but
  not below ``keep`` x what the gateway was seen to sustain (answers per second over the last
  moments x the baseline latency: the bandwidth-delay product). A halving alone leaves a quarter of
  a hard limit unused on average (the window saws between W/2 and W); the measured floor keeps the
  window near the limit, where a gateway that refuses what is beyond it puts it.
- **honour the gateway's headers**: a 429's ``Retry-After`` (``retry-after-ms`` when sent, the more
  precise) pauses every request of the key until then; ``x-ratelimit-remaining-requests`` /
  ``-tokens`` at zero pause until one unit refills (``x-ratelimit-reset-*`` divided by what was used
  of ``x-ratelimit-limit-*``), and a budget running out (no more left than the requests in flight
  would take, or under half of it: the bucket drains, so more is sent than refills it) stops growth
  and spaces requests at the rate the budget refills (``(limit - remaining) / reset``, from the same
  headers), which also bounds the window (what that rate carries at the typical latency, plus 10 %)
  and is where a cut lands (90 % of it) when known.
- ``ceiling_for(rate)`` (a batch's ``rpm``): what that rate needs in flight at the baseline latency
  (Little's law, with room for jitter); the batch's gate admits no more, and its rate limiter still
  holds ``rpm``/``tpm`` exactly.

``AimdWindow`` is the state machine; ``flotorch_nb.batch._auto`` makes it a gate of the send loop
(and ``flotorch_nb.dask`` runs it on the scheduler for a whole cluster).
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .._retry import parse_retry_after, retry_after_of

__all__ = ["AimdWindow", "RateHeaders", "parse_duration", "read_rate_headers"]

#: Statuses that mean "the gateway is at its limit": rate limited, unavailable, overloaded.
CONGESTED = frozenset({429, 503, 529})

#: How far above what the gateway's refill rate carries the window may grow (latency varies).
HEADROOM = 1.1
#: CUBIC's scaling constant (RFC 9438): how quickly the window leaves its plateau, per second cubed.
CUBIC_C = 0.4

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds from a rate-limit reset header: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"`` (as
    OpenAI sends them) or plain seconds (``"0.5"``); None for anything else."""
    value = value.strip() if value is not None else ""
    if not value[-1:].isalpha():
        return parse_retry_after(value) if value else None  # plain seconds, as Retry-After
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """What a gateway said about its limits on one answer (any field may be missing)."""

    retry_after: float | None = None
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None

    def refill_wait(self) -> float | None:
        """Seconds until one more request may go, when a budget is spent (remaining 0); else None."""
        waits = []
        for limit, remaining, reset in (
            (self.limit_requests, self.remaining_requests, self.reset_requests),
            (self.limit_tokens, self.remaining_tokens, self.reset_tokens),
        ):
            if remaining is None or remaining > 0 or reset is None:
                continue
            # A bucket refilling steadily is full again after ``reset``: one unit takes reset/used.
            used = (limit - remaining) if limit is not None and limit > remaining else 1
            waits.append(reset / max(1, used))
        return max(waits) if waits else None

    def refill_rate(self, tokens_per_request: float | None) -> float | None:
        """Requests a second the gateway's budgets refill (None: not known from these headers).

        A bucket that refills steadily is full again ``reset`` after: what was used of it over that
        time is its rate, ``(limit - remaining) / reset`` (OpenAI's 10,000 a minute, 9,999 left, full
        in 6 ms: 166 a second). Tokens count as requests at ``tokens_per_request``."""
        rates = []
        for limit, remaining, reset, per in (
            (self.limit_requests, self.remaining_requests, self.reset_requests, 1.0),
            (self.limit_tokens, self.remaining_tokens, self.reset_tokens, tokens_per_request),
        ):
            if limit is None or remaining is None or not reset or not per or limit <= remaining:
                continue
            rates.append((limit - remaining) / reset / per)
        return min(rates) if rates else None

    def low(self, in_flight: int, tokens_per_request: float | None = None) -> bool:
        """Whether a budget is running out: less than half of it left (a bucket draining: the rate
        sent is above what refills it), or no more left than the requests in flight would take. A
        request takes one of the requests budget and, of the tokens budget, ``tokens_per_request``
        (what answers use; one at the least), as ``refill_rate`` counts tokens in requests."""
        for limit, remaining, per in (
            (self.limit_requests, self.remaining_requests, 1.0),
            (self.limit_tokens, self.remaining_tokens, tokens_per_request or 1.0),
        ):
            if remaining is None:
                continue
            if remaining <= in_flight * per or (limit is not None and remaining < limit / 2):
                return True
        return False


def read_rate_headers(headers: Mapping[str, str] | None) -> RateHeaders | None:
    """The rate-limit headers of an answer (lower-case names, as ``Spent.headers`` keeps them)."""
    if not headers:
        return None
    return RateHeaders(
        retry_after_of(headers),
        _int(headers.get("x-ratelimit-limit-requests")),
        _int(headers.get("x-ratelimit-remaining-requests")),
        parse_duration(headers.get("x-ratelimit-reset-requests")),
        _int(headers.get("x-ratelimit-limit-tokens")),
        _int(headers.get("x-ratelimit-remaining-tokens")),
        parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )


class AimdWindow:
    """The window of one gateway key (see the module docstring). Not thread-safe: its owner locks."""

    def __init__(
        self,
        *,
        initial: int = 4,
        ceiling: int = 512,
        backoff: float = 0.5,
        keep: float = 0.9,
        latency_rise: float = 2.0,
    ) -> None:
        self.limit = float(initial)
        self.ceiling = ceiling
        self.backoff, self.keep, self.latency_rise = backoff, keep, latency_rise
        #: Slow start until this window (inf: until the first congestion).
        self.threshold = math.inf
        self.in_flight = 0
        self.paused_until = 0.0
        #: Requests admitted so far; a congestion signal from one numbered below ``_recover`` was
        #: sent before the last cut and does not cut again.
        self._seq = 0
        self._recover = 0
        #: The last request that filled the window: answers to requests sent up to a window's worth
        #: after it were sent while the window was in use, and may grow it.
        self._filled = -(10**9)
        #: Lowest latency seen (drifting up slowly, so a gateway that got slower for good is followed).
        self.base_latency: float | None = None
        self._recent_latency: float | None = None
        #: A slow average of latency, with which the headers' rate becomes requests in flight.
        self._typical_latency: float | None = None
        #: Requests a second the gateway refills, from its ``x-ratelimit-*`` headers (None: unknown);
        #: tokens an answer uses, to count a tokens budget in requests.
        self.rate: float | None = None
        self._tokens_per_request: float | None = None
        #: While the headers say a budget runs low, requests are spaced ``1 / rate`` apart.
        self._pacing = False
        self._next_at = 0.0
        #: What the last ``sent`` changed (``_filled``, ``_next_at``), for ``returned`` to put back.
        self._undo = (self._filled, self._next_at)
        self._healthy = 0
        #: When healthy answers arrived, for the rate the gateway sustains.
        self._answered: collections.deque[float] = collections.deque()
        #: Counts for the summary: cuts, and the largest window reached.
        self.cuts = 0
        self.peak = float(initial)
        #: The last cut: the level the gateway refused at, when, and how long until the cubic is back.
        self._level, self._cut_at, self._plateau = float(initial), 0.0, 0.0

    # -- asking -------------------------------------------------------------------------------------
    @property
    def window(self) -> int:
        """Requests that may be in flight now (at least one)."""
        return max(1, int(self.limit))

    def wait(self, now: float) -> float:
        """0: a request may go now; seconds of a pause; ``math.inf``: the window is full (until a
        request in flight settles)."""
        if now < self.paused_until:
            return self.paused_until - now
        if self.in_flight >= self.window:
            return math.inf
        if self._pacing and now < self._next_at:
            return self._next_at - now
        return 0.0

    def sent(self, now: float = 0.0) -> int:
        """A request was let through (at ``now``); its number, for the outcome."""
        self._undo = (self._filled, self._next_at)
        if self._pacing and self.rate:
            # Spaced at the rate the budget refills. A request that goes up to an interval after its
            # turn keeps the schedule (a late wake-up loses no turn), but no turn is owed from before
            # a pause: its end is the first, so after it one goes, the next a whole interval later.
            interval = 1 / self.rate
            self._next_at = max(self._next_at, now - interval, self.paused_until) + interval
        self.in_flight += 1
        self._seq += 1
        if self.in_flight >= self.window:
            self._filled = self._seq
        return self._seq

    # -- outcomes -----------------------------------------------------------------------------------
    def returned(self, seq: int) -> None:
        """Request ``seq`` was let through but never sent (a later gate, such as the batch's rate
        limiter, said "not now"): its place is freed and, when nothing was let through since, it is as
        if it had never been taken. A batch waiting on its ``rpm`` hands places back many times a
        second; counted as sends, they would fill the window (growing it for requests never in
        flight) and spend the pacing interval of the requests that do go."""
        self.released()
        if seq == self._seq and seq >= self._recover:  # the last one taken, and no cut since
            self._seq -= 1
            self._filled, self._next_at = self._undo

    def released(self) -> None:
        """A request ended without saying anything about the gateway's limits (never sent, or an
        error that is not congestion): its place is freed, the window unchanged."""
        self.in_flight = max(0, self.in_flight - 1)

    def answered(
        self, seq: int, now: float, latency: float, headers: RateHeaders | None = None, tokens: int = 0
    ) -> None:
        """A healthy answer to request ``seq`` after ``latency`` seconds, that used ``tokens``."""
        full = seq <= self._filled + self.window  # sent while the window was in use: may grow it
        self.released()
        self._note_latency(latency)
        self._answered.append(now)
        self._forget(now)
        if tokens > 0:
            per = self._tokens_per_request
            self._tokens_per_request = tokens if per is None else per + (tokens - per) * 0.1
        if headers is not None:
            rate = headers.refill_rate(self._tokens_per_request)
            if rate is not None:
                self.rate = rate
                carried = self._carried()
                if carried is not None and self.limit > HEADROOM * carried:  # more would only queue
                    self.limit = self.threshold = max(1.0, HEADROOM * carried)
            self._pacing = headers.low(self.in_flight, self._tokens_per_request)
            if (wait := headers.refill_wait()) is not None:
                self._pause(now + wait)
                return
            if self._pacing:
                self.threshold = min(self.threshold, self.limit)  # and no more doubling after
                return  # the gateway would soon refuse: hold the window where it is
        if self._rising() and seq >= self._recover:
            self._cut(now)
            return
        if full:
            self._grow(now)

    def congested(self, seq: int, now: float, headers: RateHeaders | None = None) -> None:
        """Request ``seq`` was refused for the gateway's limit (429, 503, 529)."""
        self.released()
        if headers is not None:
            self._pacing = True
            wait = headers.retry_after
            refill = headers.refill_wait()
            if refill is not None:
                wait = max(wait or 0.0, refill)
            if wait is not None:
                self._pause(now + wait)
        if seq >= self._recover:
            self._cut(now)

    # -- the rules ----------------------------------------------------------------------------------
    def _pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)

    def _carried(self) -> float | None:
        """Requests in flight that the gateway's refill rate (from its headers) carries at the
        typical latency: the window's ceiling and its floor after a cut (None: no such headers)."""
        if self.rate is None or self._typical_latency is None:
            return None
        return max(1.0, self.rate * self._typical_latency)

    def _grow(self, now: float) -> None:
        if self.limit < self.threshold:
            self.limit += 1.0  # slow start: doubles per round trip
        else:
            # Back to the level where the gateway refused along a cubic of the time since the cut
            # (CUBIC, RFC 9438): quickly at first, flat near that level, then probing beyond it.
            # One more per round trip (Reno) is too quick for a small window (5 % a round trip at
            # 20 in flight): the limit is met again every few round trips.
            elapsed = now - self._cut_at
            target = CUBIC_C * (elapsed - self._plateau) ** 3 + self._level
            self.limit = min(max(self.limit, target), self.limit + 1.0)
        ceiling = float(self.ceiling)
        if (carried := self._carried()) is not None:
            ceiling = min(ceiling, max(1.0, HEADROOM * carried))
        self.limit = min(self.limit, ceiling)
        self.peak = max(self.peak, self.limit)

    def ceiling_for(self, rate: float) -> int:
        """Requests in flight that a rate of ``rate`` per second needs at the baseline latency
        (Little's law), doubled for jitter: more would only wait for the rate limiter. Before any
        answer (no baseline) the window's own ceiling."""
        if self.base_latency is None:
            return self.ceiling
        return min(self.ceiling, max(1, math.ceil(2 * rate * self.base_latency)))

    def _cut(self, now: float) -> None:
        sustained = self._carried() or self._sustained(now)  # the gateway's word before our count
        limit = max(1.0, self.limit * self.backoff)
        level = self.limit
        if sustained is not None:
            limit = max(limit, self.keep * min(self.limit, sustained))  # a cut always cuts
            level = max(limit, min(level, sustained))
        self.limit = self.threshold = limit
        self._level, self._cut_at = level, now
        self._plateau = ((level - limit) / CUBIC_C) ** (1 / 3)
        self._recover = self._seq + 1
        self.cuts += 1
        self._recent_latency = self.base_latency  # the rise was answered; measure afresh

    def _sustained(self, now: float) -> float | None:
        """Requests in flight the gateway was seen to carry: answers per second over the last span,
        times the baseline latency (None before there is a baseline)."""
        if self.base_latency is None:
            return None
        return len(self._forget(now)) / self._span() * self.base_latency

    def _span(self) -> float:
        return max(1.0, 4 * (self.base_latency or 0.0))

    def _forget(self, now: float) -> collections.deque[float]:
        answered, horizon = self._answered, now - self._span()
        while answered and answered[0] < horizon:
            answered.popleft()
        return answered

    def _note_latency(self, latency: float) -> None:
        self._healthy += 1
        base = self.base_latency
        if base is None or latency < base:
            self.base_latency = latency
        else:
            self.base_latency = base + (latency - base) * 0.001  # follows a lasting change, slowly
        recent = self._recent_latency
        self._recent_latency = latency if recent is None else recent + (latency - recent) * 0.1
        typical = self._typical_latency
        self._typical_latency = latency if typical is None else typical + (latency - typical) * 0.02

    def _rising(self) -> bool:
        """Whether latency rose sharply above the baseline (after enough answers to know it)."""
        base, recent = self.base_latency, self._recent_latency
        return (
            self._healthy >= 20
            and base is not None
            and recent is not None
            and recent > self.latency_rise * base
        )
