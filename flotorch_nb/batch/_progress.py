"""The batch progress bar: ``tqdm.auto`` (a widget in Jupyter, text in a terminal), redrawn on a clock.

The runner only bumps counters (``Progress``); whoever waits for the batch calls ``render()`` every
``TICK_S`` (a task on the loop for ``abatch``, the waiting thread for ``batch``), and tqdm's own
``mininterval`` throttles further, so 100,000 items cost a few hundred redraws, not 100,000. The bar
shows done/total, rate and ETA; the postfix errors, tokens and cache hits. When the batch ends the
widget is closed and one static line is printed in its place, so a saved notebook still shows it (a
widget's state is not saved with its outputs); in a terminal tqdm's own last line stays.
tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TICK_S", "Progress"]

#: How often the bar is redrawn, in seconds.
TICK_S = 0.25
#: tqdm's own throttle (seconds between redraws), for the widget and the terminal alike.
MININTERVAL_S = 0.5


@dataclass
class Progress:
    """Counters the runner bumps, and the bar that shows them (None with ``progress=False``)."""

    total: int
    show: bool = True
    done: int = 0
    errors: int = 0
    not_sent: int = 0
    tokens: int = 0
    cached: int = 0
    _bar: Any = field(default=None, repr=False)
    _shown: int = field(default=0, repr=False)
    _notebook: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        """Create the bar (in the thread that will render it)."""
        if not self.show or self._bar is not None:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=self.total,
            unit="item",
            desc="flotorch batch",
            mininterval=MININTERVAL_S,
            dynamic_ncols=True,
            leave=True,
            smoothing=0.1,
        )
        # tqdm.auto's class is defined in tqdm.auto (a subclass of the notebook one when a widget is
        # possible), so ask isinstance, not the class's module.
        notebook = sys.modules.get("tqdm.notebook")
        self._notebook = notebook is not None and isinstance(self._bar, notebook.tqdm)
        if self._notebook:
            self._bar.leave = False  # the widget goes at the end; a static line replaces it

    def item_done(self, *, error: bool, tokens: int, cached: bool, sent: bool = True) -> None:
        """Count one finished item (called from the runner's loop). ``sent`` False: an error before
        any request (a spent budget, a bad template), counted apart from the gateway's errors."""
        self.done += 1
        self.errors += error and sent
        self.not_sent += error and not sent
        self.tokens += tokens
        self.cached += cached

    def postfix(self) -> str:
        """``errors=…[, not sent=…], tokens=…[, cached=…]``: errors of requests that were sent, and
        apart from them the items that never were, so "errors=2" never hides two unsent items."""
        text = f"errors={self.errors}"
        if self.not_sent:
            text += f", not sent={self.not_sent}"
        text += f", tokens={self.tokens:,}"
        return text + (f", cached={self.cached}" if self.cached else "")

    def render(self) -> None:
        """Bring the bar up to date (cheap; tqdm decides whether to redraw)."""
        bar = self._bar
        if bar is None:
            return
        with self._lock:
            done, self._shown = self.done, self.done
            delta = done - bar.n
            if delta:
                bar.set_postfix_str(self.postfix(), refresh=False)
                bar.update(delta)

    def close(self, status: str = "done") -> None:
        """Final redraw; in a notebook the widget is replaced by one static line."""
        bar, self._bar = self._bar, None
        if bar is None:
            return
        with self._lock:
            bar.set_postfix_str(self.postfix(), refresh=False)
            bar.update(self.done - bar.n)
            sent = f" ({self.done - self.not_sent} sent, {self.not_sent} not sent)" if self.not_sent else ""
            line = f"flotorch batch {status}: {self.done}/{self.total} items{sent}, {self.postfix()}"
            elapsed = bar.format_dict.get("elapsed") or 0.0
            bar.close()
        if self._notebook:
            print(f"{line}, {elapsed:.1f} s", flush=True)
