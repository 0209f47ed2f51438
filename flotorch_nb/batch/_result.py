"""``BatchResult``: one item per input, in input order, each an answer or a typed error.

Answers are kept as ``StoredAnswer`` (the raw answer as JSON bytes plus a few fields), so 100,000
answers stay small; ``item.response`` rebuilds the full ``LLMResponse`` on demand (a new object each
time). Errors are kept without their traceback, for the same reason. An item that was never sent
(an interrupt, ``on_error="raise"``, a spent budget) carries a typed error saying why, so nothing
is ever dropped or a silent ``None``.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from .._errors import ConfigurationError, FlotorchError
from .._text import one_line

if TYPE_CHECKING:
    import pandas

    from .._client import Client
    from .._response import LLMResponse
    from ..cache import StoredAnswer
    from ._inputs import Inputs
    from ._options import BatchOptions

__all__ = [
    "COLUMNS",
    "BatchError",
    "BatchItem",
    "BatchResult",
    "BatchStats",
    "ItemCancelledError",
    "Rerun",
]

#: Items shown under the summary when a result displays itself.
PREVIEW_ROWS = 5

#: ``to_pandas()`` columns and their dtypes (``parsed`` only when response_format is a class).
COLUMNS: dict[str, str] = {
    "answer": "object",
    "input_tokens": "Int64",
    "output_tokens": "Int64",
    "total_tokens": "Int64",
    "latency_ms": "float64",
    "model": "object",
    "finish_reason": "object",
    "request_id": "object",
    "source": "object",
    "error_type": "object",
    "error": "object",
}


class ItemCancelledError(FlotorchError):
    """This item has no answer because the batch stopped first: it was interrupted or cancelled, or
    ``on_error="raise"`` stopped it at another item's error (the request, if sent, was cancelled)."""


class BatchError(FlotorchError):
    """A batch stopped at an item's error (``on_error="raise"``), or ``.responses`` met a failed item.

    ``.result`` is the ``BatchResult`` with every answer that had finished; ``.error`` the error.
    Pickles (a Dask worker's error reaches the caller typed) without the client: see ``BatchResult``.
    """

    def __init__(self, message: str, *, result: BatchResult, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.error = error


@dataclass(slots=True)
class BatchItem:
    """One input's outcome: ``.response`` (an ``LLMResponse``) or ``.error`` (a ``FlotorchError``)."""

    #: Position in the inputs, and the label it had there (a DataFrame/Series index label).
    position: int
    label: Any
    answer: StoredAnswer | None = None
    error: FlotorchError | None = None
    #: HTTP requests sent for this item (0 for a cache hit or an item never sent).
    attempts: int = 0

    @property
    def ok(self) -> bool:
        """Whether this item has an answer."""
        return self.answer is not None

    @property
    def response(self) -> LLMResponse | None:
        """The answer as an ``LLMResponse`` (rebuilt from its compact form), or None if ``.error``."""
        return self.answer.to_response() if self.answer is not None else None

    @property
    def content(self) -> str | None:
        """The answer's text, without rebuilding the whole response."""
        return self.answer.content if self.answer is not None else None

    @property
    def source(self) -> str | None:
        """``live``, ``offline``, ``replay`` or ``cache``; None for an error."""
        return self.answer.source if self.answer is not None else None

    def __repr__(self) -> str:
        if self.answer is not None:
            text = self.answer.content
            text = text if len(text) <= 50 else text[:47] + "..."
            return f"BatchItem({self.label!r}, ok, {text!r}, source={self.answer.source!r})"
        return f"BatchItem({self.label!r}, {type(self.error).__name__}: {str(self.error)[:80]!r})"


@dataclass(slots=True)
class BatchStats:
    """What a run did besides answering: time, requests sent, retries, cache use, pauses."""

    wall_s: float = 0.0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    cache_write_failures: int = 0
    interrupted: bool = False
    #: ``concurrency="auto"``: the window it settled at (requests in flight) when the run ended.
    concurrency: int | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, math.ceil(q * len(values)) - 1))
    return values[k]


@dataclass(frozen=True)
class Rerun:
    """How the run that made a result runs some of its items again, given to the result by the runner.

    The result owns ``retry_failed``, the runner owns running: passing the runner's two entry points
    in keeps the result a plain record that does not import the engine (and the engine free to import
    the result). Each takes the result whose failed items are to run and returns a new result.
    """

    sync: Callable[[BatchResult], BatchResult]
    asynchronous: Callable[[BatchResult], Awaitable[BatchResult]]


@dataclass(eq=False)
class BatchResult(Sequence[BatchItem]):
    """The outcome of ``llm.batch``: a sequence of ``BatchItem`` in input order, and a summary.

    ``.ok`` / ``.errors`` are the items that succeeded / failed; ``.responses`` every answer in input
    order (a ``BatchError`` if any item failed: no silent gaps); ``.to_pandas()`` one row per input;
    ``.retry_failed()`` runs the failed items again. Shows its summary in a notebook.
    """

    items: list[BatchItem]
    stats: BatchStats = field(default_factory=BatchStats)
    _llm: Client | None = field(default=None, repr=False)
    _inputs: Inputs | None = field(default=None, repr=False)
    _options: BatchOptions | None = field(default=None, repr=False)
    #: The runner's re-run (None for a result not made by a run: it cannot be re-run).
    _rerun: Rerun | None = field(default=None, repr=False)

    # -- pickling ----------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Everything but the client (its key refuses pickling, and a client must never travel) and
        what the options shared with the run that made it (``BatchOptions.detached``).

        A result that crossed a process boundary keeps its answers, errors, stats and ``to_pandas()``;
        ``retry_failed()`` on it says it cannot be re-run.
        """
        state = dict(self.__dict__)
        state["_llm"] = None
        if self._options is not None:
            state["_options"] = self._options.detached()
        return state

    # -- the sequence ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, i: int) -> BatchItem: ...
    @overload
    def __getitem__(self, i: slice) -> list[BatchItem]: ...
    def __getitem__(self, i: int | slice) -> BatchItem | list[BatchItem]:
        return self.items[i]

    def __iter__(self) -> Iterator[BatchItem]:
        return iter(self.items)

    @property
    def ok(self) -> list[BatchItem]:
        """The items that have an answer, in input order."""
        return [item for item in self.items if item.answer is not None]

    @property
    def errors(self) -> list[BatchItem]:
        """The items that failed (or were never sent), in input order; each has ``.error``."""
        return [item for item in self.items if item.answer is None]

    @property
    def responses(self) -> list[LLMResponse]:
        """Every answer, in input order; a ``BatchError`` naming the failures if any item failed."""
        failed = self.errors
        if failed:
            kinds = ", ".join(f"{n} {k}" for k, n in Counter(type(i.error).__name__ for i in failed).items())
            raise BatchError(
                f"{len(failed)} of {len(self)} items have no answer ({kinds}); use .ok for the answered "
                "items, .errors for the failures, or .retry_failed()",
                result=self,
                error=failed[0].error,
            )
        return [item.answer.to_response() for item in self.items if item.answer is not None]

    # -- summary -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts, tokens, latency percentiles and throughput, as plain data."""
        answered = [i.answer for i in self.items if i.answer is not None]
        sent = [a for a in answered if a.source != "cache"]
        latencies = [a.latency_s * 1000 for a in sent]
        tokens = sum(a.usage[2] for a in sent if a.usage is not None)
        wall = self.stats.wall_s
        return {
            "items": len(self.items),
            "ok": len(answered),
            "errors": dict(Counter(type(i.error).__name__ for i in self.items if i.answer is None)),
            # Failed before any request (a spent budget, a bad template, a batch stopped first).
            "not_sent": sum(1 for i in self.items if i.answer is None and not i.attempts),
            "tokens": tokens,
            "usage_unknown": sum(1 for a in sent if a.usage is None),
            "cache_hits": sum(1 for a in answered if a.source == "cache"),
            "p50_latency_ms": _percentile(latencies, 0.5),
            "p95_latency_ms": _percentile(latencies, 0.95),
            "wall_s": wall,
            "requests": self.stats.requests,
            "retries": self.stats.retries,
            "requests_per_s": self.stats.requests / wall if wall > 0 else None,
            "interrupted": self.stats.interrupted,
            "cache_write_failures": self.stats.cache_write_failures,
            # A number, or "auto" with the window it settled at in "settled_concurrency".
            "concurrency": self._options.concurrency if self._options is not None else None,
            "settled_concurrency": self.stats.concurrency,
            "rate_limited": self.stats.rate_limited,
        }

    def _summary_rows(self) -> list[tuple[str, str]]:
        s = self.summary()
        errors = ", ".join(f"{k}: {n}" for k, n in sorted(s["errors"].items())) or "none"
        if s["not_sent"]:
            errors += f" ({s['not_sent']:,} never sent)"
        latency = "—"
        if s["p50_latency_ms"] is not None:
            latency = f"p50 {s['p50_latency_ms']:.0f} ms, p95 {s['p95_latency_ms']:.0f} ms"
        rate = f"{s['requests_per_s']:.1f} requests/s" if s["requests_per_s"] is not None else "—"
        tokens = f"{s['tokens']:,}"
        if s["usage_unknown"]:
            tokens += f" (+{s['usage_unknown']} answers with unknown usage)"
        rows = [
            ("items", f"{s['items']:,}" + (" (interrupted)" if s["interrupted"] else "")),
            ("ok", f"{s['ok']:,}" + (f" ({s['cache_hits']:,} from the cache)" if s["cache_hits"] else "")),
            ("errors", errors),
            ("tokens", tokens),
            ("latency", latency),
            ("wall time", f"{s['wall_s']:.2f} s"),
            ("throughput", f"{rate} ({s['requests']:,} sent, {s['retries']:,} retries)"),
        ]
        if s["settled_concurrency"] is not None:
            limited = f", {s['rate_limited']:,} answered 429" if s["rate_limited"] else ""
            rows.append(("in flight", f"concurrency='auto', settled at {s['settled_concurrency']}{limited}"))
        if s["cache_write_failures"]:
            rows.append(("cache", f"{s['cache_write_failures']} answers could not be written (kept here)"))
        return rows

    def summary_text(self) -> str:
        """The summary as aligned plain text."""
        return "BatchResult\n" + "\n".join(f"  {k:<11}{v}" for k, v in self._summary_rows())

    def summary_html(self) -> str:
        """The summary as a small HTML table (every value escaped)."""
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
            f"{html.escape(v)}</td></tr>"
            for k, v in self._summary_rows()
        )
        return f'<div class="flotorch-batch"><b>BatchResult</b><table>{cells}</table></div>'

    def _preview(self, rows: int) -> list[tuple[str, str, str]]:
        shown: list[tuple[str, str, str]] = []
        for item in self.items[:rows]:
            status: str
            if item.answer is not None:
                text, status = item.answer.content, item.answer.source
            else:
                text, status = str(item.error), type(item.error).__name__
            shown.append((str(item.label), one_line(text, 100), status))
        return shown

    def __repr__(self) -> str:
        return self.summary_text()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """Plain data for any frontend: the summary and the first rows, as text and sanitized HTML
        (model text is escaped, never rendered), so it survives save, reopen and export."""
        preview = self._preview(PREVIEW_ROWS)
        text = self.summary_text()
        if preview:
            text += "\n\n" + "\n".join(
                f"  [{label}] {answer}  ({status})" for label, answer, status in preview
            )
        rows = "".join(
            f"<tr><td>{html.escape(label)}</td><td style='text-align:left'>{html.escape(answer)}</td>"
            f"<td>{html.escape(status)}</td></tr>"
            for label, answer, status in preview
        )
        table = f"<table><tr><th>item</th><th>answer</th><th>source / error</th></tr>{rows}</table>"
        return {"text/plain": text, "text/html": self.summary_html() + (table if preview else "")}

    # -- pandas ------------------------------------------------------------------------------------
    def to_pandas(self) -> pandas.DataFrame:
        """One row per input (the input's index kept) with the answer, tokens, latency, source, error.

        A plain ``DataFrame`` with every column; in a notebook it is shown as a compact table that fits
        the output (``_frame``: answers left-aligned and wrapped, the rarely needed columns named
        under it)."""
        import pandas as pd

        from ._frame import mark, show_in_ipython

        with_parsed = self._options is not None and self._options.model_class is not None
        columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        parsed: list[Any] = []
        for item in self.items:
            for name, value in row_values(item).items():
                columns[name].append(value)
            if with_parsed:
                parsed.append(item.answer.parsed if item.answer is not None else None)
        index = self._inputs.index if self._inputs is not None and self._inputs.index is not None else None
        data: dict[str, Any] = {}
        for name, dtype in COLUMNS.items():
            data[name] = pd.Series(columns[name], dtype=dtype, index=index)
            if name == "answer" and with_parsed:
                data["parsed"] = pd.Series(parsed, dtype="object", index=index)
        frame = mark(pd.DataFrame(data, index=index))
        show_in_ipython()
        return frame

    # -- running again -----------------------------------------------------------------------------
    def retry_failed(self) -> BatchResult:
        """Run the failed items again (same client and options); a new result with every answer."""
        return self._rerunner().sync(self)

    async def aretry_failed(self) -> BatchResult:
        """``retry_failed`` on the running event loop."""
        return await self._rerunner().asynchronous(self)

    def _rerunner(self) -> Rerun:
        if self._rerun is None:
            raise ConfigurationError("this BatchResult does not know how it was made, so it cannot be re-run")
        return self._rerun


def row_values(item: BatchItem) -> dict[str, Any]:
    """The ``COLUMNS`` values of one item (``parsed`` excluded)."""
    answer, error = item.answer, item.error
    if answer is None:
        return {
            "answer": None,
            "input_tokens": None,
            "output_tokens": None,
            "total_tokens": None,
            "latency_ms": math.nan,
            "model": None,
            "finish_reason": None,
            "request_id": None,
            "source": None,
            "error_type": type(error).__name__,
            "error": str(error),
        }
    usage = answer.usage
    return {
        "answer": answer.content,
        "input_tokens": usage[0] if usage else None,
        "output_tokens": usage[1] if usage else None,
        "total_tokens": usage[2] if usage else None,
        "latency_ms": round(answer.latency_s * 1000, 3),
        "model": answer.model,
        "finish_reason": answer.finish_reason,
        "request_id": answer.request_id,
        "source": answer.source,
        "error_type": None,
        "error": None,
    }
