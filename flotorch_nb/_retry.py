"""Pure retry policy: which outcomes are worth another try, and how long to wait first.

Modelled on openai-python's ``_should_retry`` / ``_calculate_retry_timeout``: exponential backoff with
jitter, capped, and the gateway's own ``Retry-After`` wins when it is reasonable. No I/O and no clock
here, so both send loops (sync and async) share every decision and tests pass a zero-delay policy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._config import check_max_retries
from ._errors import APIConnectionError, APIStatusError, APITimeoutError, ConfigurationError, FlotorchError

#: Statuses that say "try again": timeout, conflict, rate limit, and any server error.
RETRY_STATUSES = frozenset({408, 409, 429})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        import email.utils  # only for the rare HTTP-date form; it costs 10 ms at import

        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Seconds an answer asks to wait: ``retry-after-ms`` (OpenAI's, the precise one) when it parses,
    else ``Retry-After`` (delta-seconds or an HTTP date); None when it asks nothing. Header names are
    lower case, as both the transport's headers and ``Spent.headers`` give them."""
    if (milliseconds := parse_retry_after(headers.get("retry-after-ms"))) is not None:
        return milliseconds / 1000
    return parse_retry_after(headers.get("retry-after"))


def is_retryable_status(status_code: int) -> bool:
    """True for 408/409/429 and every 5xx; other 4xx mean the request itself is wrong."""
    return status_code in RETRY_STATUSES or status_code >= 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry and how long to back off.

    ``RetryPolicy(max_retries=3, base_delay=0, max_delay=0)`` retries instantly, which is what tests use.
    """

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    #: A Retry-After longer than this is not waited for: the error is raised with ``.retry_after`` set,
    #: because a notebook cell should not stall for minutes, and retrying sooner would be refused.
    max_retry_after: float = 60.0
    jitter: float = 0.25
    _random: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_max_retries(self.max_retries)
        for name in ("base_delay", "max_delay", "max_retry_after", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if self.jitter > 1:
            raise ConfigurationError(f"jitter is a fraction from 0 to 1, got {self.jitter!r}")

    def should_retry(self, error: FlotorchError, attempt: int) -> bool:
        """Whether ``error`` on try number ``attempt`` (0-based) deserves another try."""
        if attempt >= self.max_retries:
            return False
        if isinstance(error, APIStatusError):
            if error.retry_after is not None and error.retry_after > self.max_retry_after:
                # Retrying sooner than the gateway asked only burns a try; the error says when.
                return False
            return is_retryable_status(error.status_code)
        return isinstance(error, APIConnectionError)

    def gave_up(self, error: FlotorchError, attempt: int) -> FlotorchError:
        """``error`` as raised when ``should_retry`` said no on try number ``attempt`` (0-based): a
        gateway that could not be reached says how often it was tried and what to check, since the
        bare "connection refused" gives a notebook user nothing to act on. Rewritten from the
        original text each time, so the loop that gave up last (a batch's, around its sender's) says
        the count; other errors are returned untouched."""
        if not isinstance(error, APIConnectionError) or not error.args:
            return error
        original = getattr(error, "_flotorch_original", None)
        if original is None:
            original = str(error.args[0])
            error._flotorch_original = original  # type: ignore[attr-defined]
        tries = attempt + 1
        tried = "once" if tries == 1 else f"{tries} times"
        note = f"tried {tried} (max_retries={self.max_retries})"
        if not isinstance(error, APITimeoutError):  # a timeout reached the gateway, or its address
            note += "; check that the gateway is running and that FLOTORCH_BASE_URL (or base_url=) is right"
        error.args = (f"{original}; {note}", *error.args[1:])
        return error

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``attempt + 1``."""
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after:
            return retry_after
        backoff = min(self.base_delay * 2.0**attempt, self.max_delay)
        jitter: float = self.jitter * self._random.random()
        return max(0.0, backoff * (1 - jitter))

    def delay_for(self, error: FlotorchError, attempt: int) -> float:
        """``delay`` for a concrete error, honouring the Retry-After it carried."""
        retry_after = error.retry_after if isinstance(error, APIStatusError) else None
        return self.delay(attempt, retry_after)
