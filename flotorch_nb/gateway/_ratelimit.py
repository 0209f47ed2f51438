"""Pure: hidden requests-per-minute and tokens-per-minute limits per API key, held exactly.

``RateLimit(rpm=..., tpm=..., window=60.0)`` is what a gateway enforces; :class:`RateLimiter` does the
accounting for every key. Each key has an exact sliding window: a request admitted at ``t`` counts
(once, and with its tokens) until ``t + window``, so over **any** interval of ``window`` seconds a key
gets at most ``rpm`` requests and ``tpm`` tokens. A request's tokens are its prompt plus its answer
(the usage the client sees, known before sending: the offline models are deterministic); a refused
request costs nothing. A small exact window rather than the ``limits`` package: its moving window reads
the wall clock itself, so a test could not hold it to the exact boundary, and the whole of it is a deque.

A refusal is an OpenAI-style 429 (``type: rate_limit_error``, ``code: rate_limit_exceeded``) with
``Retry-After`` (seconds, to the millisecond: when this same request would be admitted) and
``retry-after-ms``; a request larger than ``tpm`` alone can never fit (``code: request_too_large``,
no ``Retry-After``). Every answer to a limited key carries, after its own accounting, the headers
OpenAI-compatible gateways send::

    x-ratelimit-limit-requests      rpm                 x-ratelimit-limit-tokens      tpm
    x-ratelimit-remaining-requests  rpm - used          x-ratelimit-remaining-tokens  tpm - used
    x-ratelimit-reset-requests      e.g. "250ms", "1.5s", "1m0s": until the oldest request in the window
                                    leaves it (when remaining next grows; "0s" when none is counted)
    x-ratelimit-reset-tokens        the same for the oldest tokens

Only the limits that are set are sent (``rpm`` alone: the ``-requests`` three). Keys are held by a
digest, never as given.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Admission", "RateLimit", "RateLimiter", "duration"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The hidden budget of every key: ``rpm`` requests and ``tpm`` tokens per ``window`` seconds.

    Either may be None (not limited). ``window`` defaults to a minute; a shorter one (``rpm=200,
    window=1``: 200 requests a second) lets a benchmark reach its steady state quickly.
    """

    rpm: int | None = None
    tpm: int | None = None
    window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"rate limit {name} must be a whole number >= 1 or None, not {value!r}")
        window = self.window
        if isinstance(window, bool) or not isinstance(window, int | float) or not 0 < window <= 3600:
            raise ValueError(f"rate limit window must be a number of seconds in (0, 3600], not {window!r}")
        if self.rpm is None and self.tpm is None:
            raise ValueError("a rate limit needs rpm, tpm or both")

    @classmethod
    def from_dict(cls, data: Any) -> RateLimit:
        """From its JSON form ``{"rpm": .., "tpm": .., "window": ..}``; ValueError on anything else."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a rate limit must be a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - {"rpm", "tpm", "window"})
        if unknown:
            raise ValueError(f"unknown rate limit field(s) {unknown}; known: ['rpm', 'tpm', 'window']")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Admission:
    """What the limiter decided for one request: admitted or not, when to retry, and the headers."""

    admitted: bool
    headers: dict[str, str]
    retry_after: float | None = None  # seconds; None when admitted, or when it can never fit
    too_large: bool = False


class _Window:
    """One key's sliding window: (time, tokens) of each admitted request, oldest first."""

    __slots__ = ("entries", "tokens")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def expire(self, now: float, window: float) -> None:
        while self.entries and self.entries[0][0] + window <= now:
            self.tokens -= self.entries.popleft()[1]


class RateLimiter:
    """The windows of every key under one :class:`RateLimit` (replaced by ``set``; ``clock`` for tests)."""

    def __init__(self, limit: RateLimit | None = None, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()  # a test thread sets and clears while the server thread admits
        self._limit = limit
        self._windows: dict[str, _Window] = {}

    @property
    def limit(self) -> RateLimit | None:
        """The limit in force, or None."""
        return self._limit

    def set(self, limit: RateLimit | None) -> None:
        """Enforce ``limit`` from now on (None: no limit); what each key used so far is forgotten."""
        with self._lock:
            self._limit, self._windows = limit, {}

    def admit(self, key: str, tokens: int) -> Admission | None:
        """Count one request of ``tokens`` for ``key`` if it fits; None when no limit is set."""
        limit = self._limit
        if limit is None:
            return None
        name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        with self._lock:
            now = self._clock()
            window = self._windows.setdefault(name, _Window())
            window.expire(now, limit.window)
            if limit.tpm is not None and tokens > limit.tpm:
                return Admission(False, _headers(limit, window, now), too_large=True)
            wait = _wait(limit, window, tokens, now)
            if wait > 0:
                return Admission(False, _headers(limit, window, now), retry_after=wait)
            window.entries.append((now, tokens))
            window.tokens += tokens
            return Admission(True, _headers(limit, window, now))


def _wait(limit: RateLimit, window: _Window, tokens: int, now: float) -> float:
    """Seconds until the window has room for one more request of ``tokens`` (0: it has now)."""
    entries = window.entries
    until = now
    if limit.rpm is not None and len(entries) >= limit.rpm:
        until = max(until, entries[len(entries) - limit.rpm][0] + limit.window)
    if limit.tpm is not None and window.tokens + tokens > limit.tpm:
        excess = window.tokens + tokens - limit.tpm
        for at, spent in entries:  # the oldest entries must leave until the excess is gone
            excess -= spent
            if excess <= 0:
                until = max(until, at + limit.window)
                break
    return until - now


def _headers(limit: RateLimit, window: _Window, now: float) -> dict[str, str]:
    oldest = window.entries[0][0] + limit.window - now if window.entries else 0.0
    headers: dict[str, str] = {}
    for kind, cap, used in (
        ("requests", limit.rpm, len(window.entries)),
        ("tokens", limit.tpm, window.tokens),
    ):
        if cap is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(cap)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(cap - used, 0))
            headers[f"x-ratelimit-reset-{kind}"] = duration(oldest)
    return headers


def duration(seconds: float) -> str:
    """A wait as OpenAI writes it, rounded up to the ms: ``"0s"``, ``"250ms"``, ``"1.5s"``, ``"2m5s"``."""
    ms = max(math.ceil(round(seconds * 1000, 6)), 0)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
