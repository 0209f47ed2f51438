"""The session's token ledger and budget: what every call cost, summed per model, and the limit on it.

A ``Ledger`` is attached to a client as two of its hooks (``attach``): ``before_request`` refuses a
call with ``BudgetExceededError`` once the budget is spent, before anything is sent, and
``after_call`` records the call. Every call made with such a client is therefore checked and
counted exactly once, whoever makes it: ``%%flotorch``, the chat panel, or the user's own
``get_session().client().invoke(...)``, ``ainvoke``, ``stream``, ``astream``. The ``source`` column
comes from ``call_label`` (``magic``, ``chat``, ...), ``code`` when nobody labelled the call.

A call that was stopped or failed after it was sent spent tokens too, and a gateway may omit
``usage``: such calls are recorded with ``CallResult.total_tokens``'s estimate and counted as
*estimated*, so stopping a reply never gets around the budget and a table that says "0 tokens" is
never a lie by omission. A call that never reached a model (refused, unreachable, a 4xx) cost
nothing and is not recorded.

``Totals`` is the one usage sum of the notebook layer: a ledger row per model, the ledger's total,
and a chat panel's own totals are all ``Totals``.

Pure (no IPython): the table displays itself through ``_repr_mimebundle_`` with escaped HTML, since
model ids come from the gateway and a saved notebook's HTML runs in a trusted page.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import _render
from .._errors import BudgetExceededError, ConfigurationError
from .._response import OFFLINE_MODEL_PREFIX
from .._text import utf8_safe

if TYPE_CHECKING:
    from .._hooks import CallRequest, CallResult
    from ..llm import FlotorchLLM

__all__ = ["Ledger", "LedgerEntry", "Spent", "Totals", "capture"]

_CAPTURED: contextvars.ContextVar[list[LedgerEntry] | None] = contextvars.ContextVar(
    "flotorch_ledger_capture", default=None
)


@contextlib.contextmanager
def capture() -> Iterator[list[LedgerEntry]]:
    """Collect the entries recorded by calls made inside this block (in this thread or task).

    How a surface learns what *its* call cost, e.g. the estimate for a reply it stopped, without
    searching a ledger that other cells and panels write to at the same time.
    """
    entries: list[LedgerEntry] = []
    token = _CAPTURED.set(entries)
    try:
        yield entries
    finally:
        _CAPTURED.reset(token)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One recorded call: who made it, what it cost, how it ended."""

    source: str
    model: str
    input_tokens: int
    output_tokens: int
    #: The gateway's count, else ``CallResult.total_tokens``'s estimate (``usage_known`` False).
    total_tokens: int
    usage_known: bool
    latency_s: float
    offline: bool
    outcome: str = "ok"

    @classmethod
    def of(cls, result: CallResult) -> LedgerEntry:
        """The entry for a finished call, as the client's ``after_call`` hook reports it."""
        usage, response = result.usage, result.response
        model = result.model or "unknown model"
        offline = response.offline if response is not None else result.source == "offline"
        return cls(
            source=result.request.label or "code",
            model=model,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            total_tokens=result.total_tokens,
            usage_known=result.usage_known,
            latency_s=result.latency_s,
            # A failed or stopped call has no answer to say so; the offline models' names do.
            offline=offline or model.startswith(OFFLINE_MODEL_PREFIX),
            outcome=result.outcome,
        )

    def footer(self, note: str | None = None) -> _render.Footer:
        """The footer line for this call (a stopped reply shows its estimate this way)."""
        return _render.Footer(
            self.model, self.input_tokens, self.output_tokens, self.total_tokens, self.usage_known,
            self.latency_s, None, self.offline, note,
        )  # fmt: skip


class Spent(Protocol):
    """What a sum needs from a call: a ``LedgerEntry``, or a ``Footer`` (a chat turn's)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def total_tokens(self) -> int: ...
    @property
    def usage_known(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Totals:
    """Token sums over some calls: one model's (``model`` is its id) or everything's (``"total"``)."""

    model: str = "total"
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Includes the estimates of the ``estimated`` calls.
    total_tokens: int = 0
    #: Calls whose tokens the gateway did not report (stopped, failed mid-way, no ``usage``).
    estimated: int = 0

    def add(self, entry: Spent) -> Totals:
        """New totals with one more call counted in."""
        return Totals(
            self.model,
            self.calls + 1,
            self.input_tokens + entry.input_tokens,
            self.output_tokens + entry.output_tokens,
            self.total_tokens + entry.total_tokens,
            self.estimated + (not entry.usage_known),
        )

    def describe(self, one: str = "call", many: str = "calls") -> str:
        """``3 calls · in 36 · out 102 · total 138 tokens`` (``one``/``many`` name what was counted)."""
        if not self.calls:
            return f"no {many} yet"
        line = (
            f"{self.calls} {one if self.calls == 1 else many} · in {self.input_tokens} · "
            f"out {self.output_tokens} · total {self.total_tokens} tokens"
        )
        if self.estimated:
            line += f" ({self.estimated} estimated)"
        return line

    @property
    def text(self) -> str:
        """``describe()`` with the default nouns."""
        return self.describe()


_COLUMNS = ("model", "calls", "input tokens", "output tokens", "total tokens", "estimated")


class Ledger:
    """Every recorded call, in order, with per-model and overall sums, and the token budget.

    Thread-safe: the chat panel records from a task while a cell records from the main thread, and a
    user's client may be used from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._budget: int | None = None

    # -- hooks -------------------------------------------------------------------------------------
    def attach(self, llm: FlotorchLLM) -> FlotorchLLM:
        """Check the budget before, and record after, every call ``llm`` makes (once; idempotent)."""
        if self.before_request not in llm.hooks.before_request:
            llm.hooks.before_request.append(self.before_request)
        if self.after_call not in llm.hooks.after_call:
            llm.hooks.after_call.append(self.after_call)
        return llm

    def before_request(self, request: CallRequest) -> None:
        """The ``before_request`` hook: refuse the call if the budget is spent."""
        self.check_budget()

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook: record the call, unless it never reached a model."""
        if result.outcome != "ok" and not result.total_tokens:
            return
        self.record(LedgerEntry.of(result))

    def record(self, entry: LedgerEntry) -> LedgerEntry:
        """Count one call (also in every ``capture()`` block it was made in)."""
        with self._lock:
            self._entries.append(entry)
        captured = _CAPTURED.get()
        if captured is not None:
            captured.append(entry)
        return entry

    # -- budget ------------------------------------------------------------------------------------
    @property
    def budget(self) -> int | None:
        """The token budget, or None for no limit."""
        return self._budget

    def set_budget(self, tokens: int | None) -> None:
        """Limit the total to ``tokens`` (None: no limit); calls are refused once it is spent."""
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0):
            raise ConfigurationError(f"the token budget must be a whole number > 0 (or None), got {tokens!r}")
        self._budget = tokens

    def check_budget(self) -> None:
        """Raise ``BudgetExceededError`` if the budget is spent (the hook calls this before sending)."""
        budget, spent = self._budget, self.spent_tokens
        if budget is not None and spent >= budget:
            raise BudgetExceededError(
                f"token budget spent: {spent} of {budget} tokens used in this session, so the call was "
                "not sent. Raise it (`%flotorch budget N`), remove it (`%flotorch budget off`) or clear "
                "the usage (`%flotorch reset`)."
            )

    # -- reading -----------------------------------------------------------------------------------
    def clear(self) -> int:
        """Forget every recorded call (the budget stays); return how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            return count

    @property
    def entries(self) -> list[LedgerEntry]:
        """A copy of the recorded calls, oldest first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def rows(self) -> list[Totals]:
        """One row per model, in the order each model was first used."""
        by_model: dict[str, Totals] = {}
        for entry in self.entries:
            by_model[entry.model] = by_model.get(entry.model, Totals(entry.model)).add(entry)
        return list(by_model.values())

    @property
    def totals(self) -> Totals:
        """The sum over every model."""
        total = Totals()
        for entry in self.entries:
            total = total.add(entry)
        return total

    @property
    def spent_tokens(self) -> int:
        """Total tokens recorded, estimates included (what the budget is compared with)."""
        return self.totals.total_tokens

    def as_rows(self) -> list[dict[str, Any]]:
        """The per-model rows as plain dicts (for pandas, JSON or a test), totals not included."""
        return [asdict(row) for row in self.rows()]

    def _table(self) -> list[tuple[str, ...]]:
        rows = self.rows()
        if len(rows) != 1:  # with a single model the total row would only repeat it
            rows.append(self.totals)
        return [
            (r.model, str(r.calls), str(r.input_tokens), str(r.output_tokens), str(r.total_tokens),
             str(r.estimated))
            for r in rows
        ]  # fmt: skip

    def as_text(self) -> str:
        """A fixed-width table: model left-aligned, numbers right-aligned."""
        if not len(self):
            return "no calls recorded yet"
        table = [_COLUMNS, *self._table()]
        widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in table
        ]
        return utf8_safe("\n".join(lines))

    def as_html(self) -> str:
        """The table as HTML; every cell escaped (model ids come from the gateway)."""
        if not len(self):
            return '<div class="flotorch-usage">no calls recorded yet</div>'
        head = "".join(f"<th>{_render.escape_text(c)}</th>" for c in _COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{_render.escape_text(cell)}</td>" for cell in row) + "</tr>"
            for row in self._table()
        )
        return f'<table class="flotorch-usage"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        totals = self.totals
        return f"Ledger(calls={totals.calls}, total_tokens={totals.total_tokens}, budget={self._budget!r})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Plain data (HTML + text), so the core never imports IPython."""
        return {"text/plain": self.as_text(), "text/html": self.as_html()}
