"""When to redraw an answer that is still streaming in: one rule for ``%%flotorch`` and the chat panel.

A redraw renders *everything received so far* (Markdown, then sanitizing), so it costs more as the
answer grows. Two mistakes made that quadratic before: the pause was measured from the *start* of
the previous redraw, so once a redraw took as long as the pause every new piece triggered another
one, and the pause never grew. A 50,000-character answer then took minutes instead of a second.

``Pacer`` measures the pause from the *end* of a redraw and makes it at least ``(1 - share) / share``
times what that redraw cost: with ``share = 0.2`` redraws take at most a fifth of the time, however
long the answer, and as it grows the redraws space out in proportion, so the total work stays close
to linear in its length. ``Throttle`` is the same rule on an asyncio loop (the chat panel), with a
deferred last call so the end of a burst is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

__all__ = ["Pacer", "Throttle"]

#: The most of the time redraws may take while an answer streams.
REDRAW_SHARE = 0.2


class Pacer:
    """Decide whether a redraw is due: ``interval`` seconds after the last one ended, or longer if it
    was expensive (see the module docstring)."""

    def __init__(
        self, interval: float, *, share: float = REDRAW_SHARE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        self._interval = interval
        self._factor = (1 - share) / share
        self._clock = clock
        self._next = float("-inf")
        #: How many redraws ran, and the seconds they took (for tests and curious users).
        self.redraws = 0
        self.busy_s = 0.0

    def wait(self) -> float:
        """Seconds until the next redraw is due (0 if it is due now)."""
        return max(0.0, self._next - self._clock())

    def due(self) -> bool:
        """Whether a redraw may run now."""
        return self._clock() >= self._next

    @contextlib.contextmanager
    def redraw(self) -> Iterator[None]:
        """Time the redraw run inside the block and schedule the next one from its end."""
        started = self._clock()
        try:
            yield
        finally:
            ended = self._clock()
            cost = ended - started
            self.redraws += 1
            self.busy_s += cost
            self._next = ended + max(self._interval, cost * self._factor)


class Throttle:
    """Call ``fn`` when the ``Pacer`` allows; a call in between is deferred, never lost.

    Needs a running event loop (the kernel's, or a test's).
    """

    def __init__(self, fn: Callable[[], None], interval: float) -> None:
        self._fn = fn
        self.pacer = Pacer(interval)
        self._handle: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        if self._handle is not None:
            return  # already due
        wait = self.pacer.wait()
        if wait <= 0:
            self._run()
        else:
            self._handle = asyncio.get_running_loop().call_later(wait, self._run)

    def _run(self) -> None:
        self._handle = None
        with self.pacer.redraw():
            self._fn()

    def cancel(self) -> None:
        """Drop a deferred call (the caller renders the final state itself)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
