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

Money: each recorded call is priced as it finishes, at the prices then in force (``pricing``'s
process-wide table, like a bill: a price set later does not reprice earlier calls), through a
``spending.SpendTracker`` the ledger feeds. ``%flotorch budget $5`` is a ``spending.MoneyBudget`` that
reads that tracker and runs inside the ledger's own two hooks, right after the token budget, so every
session client is checked for both before sending. Costs show only while a price table is in use
(``pricing.shown_cost``), and a model without a price shows "cost unknown", never a guess.

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
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from .. import _render
from .._errors import BudgetExceededError, ConfigurationError
from .._response import OFFLINE_MODEL_PREFIX
from .._text import utf8_safe
from ..pricing import PriceTable, ShownCost, describe_costs, format_cost, shared_prices, shown_cost
from ..spending import MoneyBudget, SpendTracker

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
    #: What it cost as a footer shows it (``pricing.ShownCost``): dollars, "unknown", or None when no
    #: price table was in use.
    cost: ShownCost = None

    @classmethod
    def of(cls, result: CallResult, cost: ShownCost = None) -> LedgerEntry:
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
            cost=cost,
        )

    def footer(self, note: str | None = None) -> _render.Footer:
        """The footer line for this call (a stopped reply shows its estimate this way)."""
        return _render.Footer(
            self.model,
            self.input_tokens,
            self.output_tokens,
            self.total_tokens,
            self.usage_known,
            self.latency_s,
            None,
            self.offline,
            note,
            self.cost,
        )


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
    @property
    def cost(self) -> ShownCost: ...


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
    #: Dollars of the priced calls; how many calls were priced, and how many had no price.
    cost: Decimal = Decimal(0)
    priced: int = 0
    unpriced: int = 0

    def add(self, entry: Spent) -> Totals:
        """New totals with one more call counted in."""
        cost = entry.cost
        return Totals(
            self.model,
            self.calls + 1,
            self.input_tokens + entry.input_tokens,
            self.output_tokens + entry.output_tokens,
            self.total_tokens + entry.total_tokens,
            self.estimated + (not entry.usage_known),
            self.cost + cost if isinstance(cost, Decimal) else self.cost,
            self.priced + isinstance(cost, Decimal),
            self.unpriced + (cost == "unknown"),
        )

    @property
    def cost_text(self) -> str | None:
        """``$0.012``, ``$0.012 + 1 call of unknown cost``, "cost unknown", or None when none of the
        calls was made while a price table was in use."""
        return describe_costs([self.cost] * bool(self.priced) + ["unknown"] * self.unpriced)

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
        if self.cost_text:
            line += f" · {self.cost_text}"
        return line

    @property
    def text(self) -> str:
        """``describe()`` with the default nouns."""
        return self.describe()


_COLUMNS = ("model", "calls", "input tokens", "output tokens", "total tokens", "estimated", "cost")


class Ledger:
    """Every recorded call, in order, with per-model and overall sums, and the token budget.

    Thread-safe: the chat panel records from a task while a cell records from the main thread, and a
    user's client may be used from any thread.
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        self._budget: int | None = None
        #: The prices calls are charged at (the process-wide table unless given).
        self.prices = prices if prices is not None else shared_prices()
        #: Dollars spent by the recorded calls (fed by ``after_call``; the money budget reads it).
        self.spend = SpendTracker(self.prices)
        self._money: MoneyBudget | None = None

    # -- hooks -------------------------------------------------------------------------------------
    def attach(self, llm: FlotorchLLM) -> FlotorchLLM:
        """Check the budget before, and record after, every call ``llm`` makes (once; idempotent)."""
        if self.before_request not in llm.hooks.before_request:
            llm.hooks.before_request.append(self.before_request)
        if self.after_call not in llm.hooks.after_call:
            llm.hooks.after_call.append(self.after_call)
        return llm

    def before_request(self, request: CallRequest) -> None:
        """The ``before_request`` hook: refuse the call if the token budget is spent, or if the money
        budget cannot afford what it may cost (which it then reserves)."""
        self.check_budget()
        money = self._money
        if money is not None:
            money.before_request(request)

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook: price and record the call, unless it never reached a model; then
        free its money reservation (after counting it, so the budget never sees it as free)."""
        try:
            if result.outcome == "ok" or result.total_tokens:
                cost, estimated = self.spend.cost_of(result)
                self.spend.add(result.model, cost, estimated)
                self.record(LedgerEntry.of(result, shown_cost(cost, self.prices, estimated=estimated)))
        finally:
            money = self._money
            if money is not None:
                money.after_call(result)

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

    @property
    def money_budget(self) -> MoneyBudget | None:
        """The money budget (``%flotorch budget $5``), or None."""
        return self._money

    def set_money_budget(self, limit: object | None) -> None:
        """Refuse calls that could take the money spent past ``limit`` dollars (``"$5"``, ``5``,
        ``Decimal``); None removes the limit. ``ConfigurationError`` for an amount that is not one."""
        self._money = None if limit is None else MoneyBudget(limit, self.prices, tracker=self.spend)

    @property
    def spent_money(self) -> Decimal:
        """Dollars spent by the calls recorded so far (those with a price)."""
        return self.spend.spent

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
            self.spend.reset()
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

    def costs(self) -> dict[str, Decimal | None]:
        """Per model, the dollars its calls cost, or None when some had no price (for a chart)."""
        return {r.model: r.cost if r.priced and not r.unpriced else None for r in self.rows()}

    def _columns(self) -> tuple[str, ...]:
        # The cost column only once some call was made while a price table was in use.
        return _COLUMNS if self.totals.cost_text else _COLUMNS[:-1]

    def _table(self) -> list[tuple[str, ...]]:
        rows = self.rows()
        if len(rows) != 1:  # with a single model the total row would only repeat it
            rows.append(self.totals)
        width = len(self._columns())
        return [
            (
                r.model,
                str(r.calls),
                str(r.input_tokens),
                str(r.output_tokens),
                str(r.total_tokens),
                str(r.estimated),
                r.cost_text or "",
            )[:width]
            for r in rows
        ]

    def as_text(self) -> str:
        """A fixed-width table: model left-aligned, numbers right-aligned."""
        if not len(self):
            return "no calls recorded yet"
        table = [self._columns(), *self._table()]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
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
        head = "".join(f"<th>{_render.escape_text(c)}</th>" for c in self._columns())
        body = "".join(
            "<tr>" + "".join(f"<td>{_render.escape_text(cell)}</td>" for cell in row) + "</tr>"
            for row in self._table()
        )
        return f'<table class="flotorch-usage"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        totals = self.totals
        money = f", money_budget={format_cost(self._money.limit)}" if self._money is not None else ""
        tokens = f"calls={totals.calls}, total_tokens={totals.total_tokens}"
        return f"Ledger({tokens}, budget={self._budget!r}{money})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Plain data (HTML + text), so the core never imports IPython."""
        return {"text/plain": self.as_text(), "text/html": self.as_html()}
