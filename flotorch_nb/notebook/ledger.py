"""The session's token ledger and budget: what every call cost, summed per model, and the limit on it.

A ``Ledger`` is attached to a client as one of its gates and one ``after_call`` hook (``attach``).
As a gate it holds the session's two budgets (``spending.TokenBudget``, ``spending.MoneyBudget``):
before each attempt both reserve its worst case, atomically across threads and tasks; a call that
does not fit because of calls in flight waits for them, and one that cannot fit even with nothing in
flight is refused with ``BudgetExceededError`` before anything is sent. ``after_call`` records the
call. Every call made with such a client is therefore checked and counted exactly once, whoever makes
it: ``%%flotorch``, ``--map``, the chat panel, or the user's own ``get_session().client().invoke(...)``,
``ainvoke``, ``stream``, ``astream``, ``batch``. The ``source`` column comes from ``call_label``
(``magic``, ``chat``, ...), ``code`` when nobody labelled the call.

Every sum is a running total, updated as an entry is recorded: checking a budget or reading the
totals costs the same after twenty thousand calls as after one, and never walks the entries.

A call that was stopped or failed after it was sent spent tokens too, and a gateway may omit
``usage``: such calls are recorded with ``CallResult.total_tokens``'s estimate and counted as
*estimated*, so stopping a reply never gets around the budget and a table that says "0 tokens" is
never a lie by omission. A call that never reached a model (refused, unreachable, a 4xx) cost
nothing and is not recorded.

Money: each recorded call is priced as it finishes, at the prices then in force (``pricing``'s
process-wide table, like a bill: a price set later does not reprice earlier calls), through a
``spending.SpendTracker`` the ledger feeds. ``%flotorch budget $5`` sets the limit of the ledger's
``MoneyBudget``, which reads that tracker, so every session client is checked for both budgets before
each attempt. Costs show only while a price table is in use
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
from .._admission import Ticket
from .._budget import FREE
from .._errors import BudgetExceededError
from .._response import OFFLINE_MODEL_PREFIX
from .._text import utf8_safe
from ..pricing import PriceTable, ShownCost, describe_costs, format_cost, shared_prices, shown_cost
from ..spending import MoneyBudget, SpendTracker, TokenBudget

if TYPE_CHECKING:
    from .._admission import Asked
    from .._admission import Spent as Attempt
    from .._pipeline._hooks import CallResult
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


#: How a refusal of the session's budgets says what to do.
_TOKEN_HINT = (
    "raise it (`%flotorch budget N`), remove it (`%flotorch budget off`) or clear the usage "
    "(`%flotorch reset`)."
)
_MONEY_HINT = "raise it (`%flotorch budget $N`) or remove it (`%flotorch budget off`)."


class _Both(Ticket):
    """The ledger's ticket: what each of its budgets reserved for one attempt."""

    __slots__ = ("money", "tokens")

    def __init__(self, tokens: Ticket, money: Ticket) -> None:
        self.tokens, self.money = tokens, money


_COLUMNS = ("model", "calls", "input tokens", "output tokens", "total tokens", "estimated", "cost")


class Ledger:
    """Every recorded call, in order, with running per-model and overall sums, and the budgets.

    Thread-safe: the chat panel records from a task while a cell records from the main thread, and a
    user's client may be used from any thread. One lock guards the entries, the sums and both
    budgets, so that a call's settled amount leaves the budgets in the same step as it is recorded.
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._lock = threading.RLock()
        self._entries: list[LedgerEntry] = []
        self._totals = Totals()
        self._by_model: dict[str, Totals] = {}
        #: The prices calls are charged at (the process-wide table unless given).
        self.prices = prices if prices is not None else shared_prices()
        #: Dollars spent by the recorded calls (fed by ``after_call``; the money budget reads it).
        self.spend = SpendTracker(self.prices)
        self._tokens = TokenBudget(None, recorded=self._spent_tokens, lock=self._lock, hint=_TOKEN_HINT)
        self._money = MoneyBudget(None, self.prices, self.spend, lock=self._lock, hint=_MONEY_HINT)

    # -- hooks and gate ----------------------------------------------------------------------------
    def attach(self, llm: FlotorchLLM) -> FlotorchLLM:
        """Check the budgets before each attempt, and record after every call, that ``llm`` makes
        (once; idempotent)."""
        if self not in llm.hooks.gates:
            llm.hooks.gates.append(self)
        if self.after_call not in llm.hooks.after_call:
            llm.hooks.after_call.append(self.after_call)
        return llm

    def admit(self, request: Asked) -> Ticket | float:
        """The gate: both budgets reserve the attempt's worst case, or neither does (see the module
        docstring); ``UNTIL_SETTLED`` or ``BudgetExceededError`` otherwise."""
        with self._lock:
            tokens = self._tokens.admit(request)
            if not isinstance(tokens, Ticket):
                return tokens
            try:
                money = self._money.admit(request)
            except BaseException:
                self._tokens.settle(tokens, None)
                raise
            if not isinstance(money, Ticket):
                self._tokens.settle(tokens, None)
                return money
            return FREE if tokens is FREE and money is FREE else _Both(tokens, money)

    def settle(self, ticket: Ticket, spent: Attempt | None) -> None:
        """The gate: replace the attempt's reservations by what it spent."""
        if isinstance(ticket, _Both):
            self._tokens.settle(ticket.tokens, spent)
            self._money.settle(ticket.money, spent)

    def after_call(self, result: CallResult) -> None:
        """The ``after_call`` hook: price and record the call, unless it never reached a model; in the
        same step, what its attempts settled leaves the budgets (now counted in the totals)."""
        with self._lock:
            try:
                if result.outcome == "ok" or result.total_tokens:
                    cost, estimated = self.spend.cost_of(result)
                    self.spend.add(result.model, cost, estimated)
                    self.record(LedgerEntry.of(result, shown_cost(cost, self.prices, estimated=estimated)))
            finally:
                self._tokens.recorded(result.request)
                self._money.recorded(result.request)

    def record(self, entry: LedgerEntry) -> LedgerEntry:
        """Count one call (also in every ``capture()`` block it was made in)."""
        with self._lock:
            self._entries.append(entry)
            self._totals = self._totals.add(entry)
            self._by_model[entry.model] = self._by_model.get(entry.model, Totals(entry.model)).add(entry)
        captured = _CAPTURED.get()
        if captured is not None:
            captured.append(entry)
        return entry

    # -- budget ------------------------------------------------------------------------------------
    @property
    def budget(self) -> int | None:
        """The token budget, or None for no limit."""
        return self._tokens.limit

    @property
    def token_budget(self) -> TokenBudget:
        """The token budget gate (its ``limit`` None while there is no budget)."""
        return self._tokens

    def set_budget(self, tokens: int | None) -> None:
        """Limit the total to ``tokens`` (None: no limit); a call that cannot fit is refused, one that
        has to wait for calls in flight waits. ``ConfigurationError`` for anything but a whole
        number > 0."""
        self._tokens.set_limit(tokens)

    @property
    def money_budget(self) -> MoneyBudget | None:
        """The money budget (``%flotorch budget $5``), or None."""
        return self._money if self._money.limit is not None else None

    def set_money_budget(self, limit: object | None) -> None:
        """Keep the money spent under ``limit`` dollars (``"$5"``, ``5``, ``Decimal``); None removes
        the limit. ``ConfigurationError`` for an amount that is not one."""
        self._money.set_limit(limit)

    @property
    def spent_money(self) -> Decimal:
        """Dollars spent by the calls recorded so far (those with a price)."""
        return self.spend.spent

    def check_budget(self) -> None:
        """Raise ``BudgetExceededError`` if the token budget is spent already."""
        budget, spent = self._tokens.limit, self.spent_tokens
        if budget is not None and spent >= budget:
            raise BudgetExceededError(
                f"token budget spent: {spent} of {budget} tokens used in this session, so the call was "
                f"not sent; {_TOKEN_HINT}"
            )

    # -- reading -----------------------------------------------------------------------------------
    def clear(self) -> int:
        """Forget every recorded call (the budgets' limits stay); return how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._totals = Totals()
            self._by_model.clear()
            self.spend.reset()
            self._tokens.forget()
            self._money.forget()
            return count

    @property
    def entries(self) -> list[LedgerEntry]:
        """A copy of the recorded calls, oldest first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def rows(self) -> list[Totals]:
        """One row per model, in the order each model was first used (running sums: no walk)."""
        with self._lock:
            return list(self._by_model.values())

    @property
    def totals(self) -> Totals:
        """The sum over every model (a running sum: no walk)."""
        return self._totals

    @property
    def spent_tokens(self) -> int:
        """Total tokens recorded, estimates included (what the budget is compared with)."""
        return self._totals.total_tokens

    def _spent_tokens(self) -> int:
        return self._totals.total_tokens

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
        money = f", money_budget={format_cost(self._money.limit)}" if self._money.limit is not None else ""
        tokens = f"calls={totals.calls}, total_tokens={totals.total_tokens}"
        return f"Ledger({tokens}, budget={self._tokens.limit!r}{money})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Plain data (HTML + text), so the core never imports IPython."""
        return {"text/plain": self.as_text(), "text/html": self.as_html()}
