"""The session's token ledger: every answer's usage, summed per model, shown as a table.

Teaching and CI notebooks need to know what a run cost, and a token budget needs one number to
compare against, so every answer a notebook surface receives (``%%flotorch``, the chat panel) is
recorded here. A gateway may omit ``usage``; such calls are counted as *unknown usage* instead of
silently adding zero, so a table that says "0 tokens" is never a lie by omission.

Pure (no IPython): the table displays itself through ``_repr_mimebundle_`` with escaped HTML, since
model ids come from the gateway and a saved notebook's HTML runs in a trusted page.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._response import LLMResponse

__all__ = ["Ledger", "LedgerEntry", "LedgerRow"]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One recorded answer: where it came from and what it cost."""

    source: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    usage_known: bool
    latency_s: float
    offline: bool


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """Totals for one model (or for everything, when ``model`` is ``"total"``)."""

    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    unknown_usage: int = 0

    def add(self, entry: LedgerEntry) -> LedgerRow:
        """A new row with ``entry`` counted in."""
        return LedgerRow(
            self.model,
            self.calls + 1,
            self.input_tokens + entry.input_tokens,
            self.output_tokens + entry.output_tokens,
            self.total_tokens + entry.total_tokens,
            self.unknown_usage + (not entry.usage_known),
        )


_COLUMNS = ("model", "calls", "input tokens", "output tokens", "total tokens", "unknown usage")


class Ledger:
    """Usage of every recorded answer, in order, with per-model and overall sums.

    Thread-safe: the chat panel may record from a task while a cell records from the main thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []

    def record(self, resp: LLMResponse, source: str) -> LedgerEntry:
        """Count one answer; ``source`` says which surface asked (``"magic"``, ``"chat"``, ...)."""
        usage = resp.usage
        entry = LedgerEntry(
            source=source,
            model=resp.model or "unknown model",
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
            usage_known=usage is not None,
            latency_s=resp.latency_s,
            offline=resp.offline,
        )
        with self._lock:
            self._entries.append(entry)
        return entry

    def clear(self) -> None:
        """Forget every recorded answer."""
        with self._lock:
            self._entries.clear()

    @property
    def entries(self) -> list[LedgerEntry]:
        """A copy of the recorded answers, oldest first."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def rows(self) -> list[LedgerRow]:
        """One row per model, in the order each model was first used."""
        by_model: dict[str, LedgerRow] = {}
        for entry in self.entries:
            row = by_model.get(entry.model, LedgerRow(entry.model))
            by_model[entry.model] = row.add(entry)
        return list(by_model.values())

    @property
    def totals(self) -> LedgerRow:
        """The sum over every model."""
        total = LedgerRow("total")
        for entry in self.entries:
            total = total.add(entry)
        return total

    @property
    def spent_tokens(self) -> int:
        """Total tokens of every answer whose usage is known (what a budget is compared with)."""
        return self.totals.total_tokens

    def as_rows(self) -> list[dict[str, Any]]:
        """The per-model rows as plain dicts (for pandas, JSON or a test), totals not included."""
        return [{f.name: getattr(row, f.name) for f in fields(LedgerRow)} for row in self.rows()]

    def _table(self) -> list[tuple[str, ...]]:
        rows = self.rows()
        if len(rows) != 1:  # with a single model the total row would only repeat it
            rows.append(self.totals)
        return [
            (r.model, str(r.calls), str(r.input_tokens), str(r.output_tokens), str(r.total_tokens),
             str(r.unknown_usage))
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
        return "\n".join(lines)

    def as_html(self) -> str:
        """The table as HTML; every cell escaped (model ids come from the gateway)."""
        if not len(self):
            return '<div class="flotorch-usage">no calls recorded yet</div>'
        head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self._table()
        )
        return f'<table class="flotorch-usage"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        totals = self.totals
        return f"Ledger(calls={totals.calls}, total_tokens={totals.total_tokens})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Plain data (HTML + text), so the core never imports IPython."""
        return {"text/plain": self.as_text(), "text/html": self.as_html()}
