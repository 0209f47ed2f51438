"""Send one prompt to several models at once and set the answers side by side.

``compare(llm, messages, ["a", "b", "c"])`` (also ``llm.compare`` / ``await llm.acompare``) runs one
request per model concurrently (``asyncio`` tasks over ``llm.with_model(m)``, so every model's call
passes the client's hooks: budget, ledger, rate limits) and returns a :class:`Comparison`: one
:class:`ModelResult` per model, in the order asked, holding the answer or the typed error of that
model alone — a model that fails never stops the others. A comparison displays itself as a static,
sanitized side-by-side table (one column per model, footers with tokens, latency and cost, errors in
their own column) with plain text beside it and the answers' provenance in the output metadata, so it
survives save, reopen and HTML export.

``on_delta(model, text)`` streams: each model's answer is then read as a stream and every piece of
text is handed over as it arrives (for a live view); ``on_result(result)`` is called as each model
finishes. The sync ``compare`` runs the same coroutine on a private event loop in a worker thread and
calls both callbacks on the caller's thread, so a notebook cell can update its display from them.

Interrupting (Ctrl-C, a cancelled task) cancels the requests in flight; a mistake in the request
itself (``InvalidRequestError``: the same for every model) is raised rather than shown in every
column.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _render
from ._agreement import Agreement, agreement, normalize_label
from ._errors import ConfigurationError, InvalidRequestError
from ._provenance import output_metadata, provenance_of
from .pricing import PriceTable, default_prices, format_cost

if TYPE_CHECKING:
    import pandas

    from ._hooks import CallRequest
    from ._response import LLMResponse
    from .llm import FlotorchLLM

__all__ = [
    "Agreement",
    "Comparison",
    "ModelResult",
    "acompare",
    "agreement",
    "compare",
    "normalize_label",
    "parse_models",
    "preview_bundle",
]

DeltaCallback = Callable[[str, str], None]
ResultCallback = Callable[["ModelResult"], None]


def parse_models(models: str | Sequence[str]) -> tuple[str, ...]:
    """``"a,b, c"`` or ``["a", "b", "c"]`` -> ``("a", "b", "c")``; at least one, none twice."""
    names = models.split(",") if isinstance(models, str) else list(models)
    if any(not isinstance(name, str) for name in names):
        raise InvalidRequestError(f"models must be model names (strings), got {models!r}")
    cleaned = tuple(name.strip() for name in names if name.strip())
    if not cleaned:
        raise InvalidRequestError("compare needs at least one model, e.g. models=['a', 'b']")
    twice = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if twice:
        raise InvalidRequestError(f"model {twice[0]!r} is listed twice; each model gets one column")
    return cleaned


@dataclass(slots=True)
class ModelResult:
    """One model's column: its answer or its error, what it cost, and where it came from."""

    model: str
    response: LLMResponse | None = None
    error: Exception | None = None
    #: The answer's text; for a stream that broke, what had arrived.
    text: str = ""
    #: Dollars, or None: "cost unknown" (no price for the model, or no token counts).
    cost: Decimal | None = None
    #: The provenance record of the answer (None for an error).
    provenance: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the model answered."""
        return self.error is None and self.response is not None


@dataclass(slots=True, eq=False)
class Comparison:
    """The answers of several models to one request, in the order the models were asked."""

    results: tuple[ModelResult, ...]
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def models(self) -> tuple[str, ...]:
        """The models, in column order."""
        return tuple(r.model for r in self.results)

    @property
    def responses(self) -> dict[str, LLMResponse]:
        """Model -> answer, for the models that answered."""
        return {r.model: r.response for r in self.results if r.response is not None and r.error is None}

    @property
    def errors(self) -> dict[str, Exception]:
        """Model -> the typed error it failed with."""
        return {r.model: r.error for r in self.results if r.error is not None}

    @property
    def provenance(self) -> list[dict[str, Any]]:
        """One provenance record per answer."""
        return [r.provenance for r in self.results if r.provenance is not None]

    def __getitem__(self, model: str) -> ModelResult:
        for result in self.results:
            if result.model == model:
                return result
        raise KeyError(model)

    def raise_for_errors(self) -> None:
        """Raise the first model's error (the others named in its notes) if any model failed; what a
        ``%%flotorch -m a,b`` cell does so a notebook run in CI fails, unless ``--keep-errors``."""
        errors = list(self.errors.items())
        if not errors:
            return
        model, first = errors[0]
        note = f"in a comparison of {', '.join(self.models)}: {model} failed"
        if len(errors) > 1:
            note += "; also " + ", ".join(f"{m} ({type(e).__name__})" for m, e in errors[1:])
        if note not in getattr(first, "__notes__", ()):
            first.add_note(note)
        raise first

    def to_pandas(self) -> pandas.DataFrame:
        """One row per model: model, answer, tokens, latency_ms, cost (dollars; NaN = unknown), source,
        error_type, error."""
        import pandas as pd

        rows = []
        for r in self.results:
            resp, usage = r.response, (r.response.usage if r.response else None)
            rows.append(
                {
                    "model": r.model,
                    "answer": r.text if r.ok else None,
                    "input_tokens": usage.input_tokens if usage else None,
                    "output_tokens": usage.output_tokens if usage else None,
                    "tokens": usage.total_tokens if usage else None,
                    "latency_ms": round(resp.latency_s * 1000, 3) if resp else None,
                    "cost": float(r.cost) if r.cost is not None else None,
                    "source": resp.source if resp else None,
                    "error_type": type(r.error).__name__ if r.error else None,
                    "error": str(r.error) if r.error else None,
                }
            )
        frame = pd.DataFrame(rows)
        for column in ("input_tokens", "output_tokens", "tokens"):
            frame[column] = frame[column].astype("Int64")
        frame["cost"] = frame["cost"].astype("float64")
        return frame

    def __repr__(self) -> str:
        states = ", ".join(f"{r.model}: {'ok' if r.ok else type(r.error).__name__}" for r in self.results)
        return f"Comparison({states})"

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """Plain text and sanitized HTML, with the answers' provenance as the output's metadata."""
        data = {"text/plain": comparison_text(self.results), "text/html": comparison_html(self.results)}
        return data, output_metadata(self.provenance)


# -- running -----------------------------------------------------------------------------------------
async def acompare(
    llm: FlotorchLLM,
    messages: list[dict[str, Any]],
    models: str | Sequence[str],
    *,
    prices: PriceTable | None = None,
    on_delta: DeltaCallback | None = None,
    on_result: ResultCallback | None = None,
    **params: Any,
) -> Comparison:
    """Ask every model at once; see the module docstring. ``params`` go to every call (temperature,
    max_tokens, tools, response_format, timeout...)."""
    names = parse_models(models)
    if "model" in params:
        raise InvalidRequestError("compare takes the models as models=[...], not model=")
    table = prices if prices is not None else default_prices()
    results = [ModelResult(name) for name in names]
    try:
        async with asyncio.TaskGroup() as group:
            for result in results:
                group.create_task(_ask(llm, messages, params, result, table, on_delta, on_result))
    except BaseExceptionGroup as group:  # a callback broke (the caller's display): not a model's failure
        failed = [e.__cause__ for e in group.exceptions if isinstance(e, _CallbackFailed)]
        if failed and failed[0] is not None:
            raise failed[0] from None
        raise
    for result in results:
        if isinstance(result.error, InvalidRequestError | ConfigurationError):
            raise result.error  # the request itself is wrong, for every model alike
    return Comparison(tuple(results), list(messages))


class _CallbackFailed(Exception):
    """Carries an exception raised by ``on_delta``/``on_result`` past the per-model error handling."""


async def _ask(
    llm: FlotorchLLM,
    messages: list[dict[str, Any]],
    params: Mapping[str, Any],
    result: ModelResult,
    prices: PriceTable,
    on_delta: DeltaCallback | None,
    on_result: ResultCallback | None,
) -> None:
    """One model's request, into ``result``: the answer and its provenance, or the error."""
    sent: list[Mapping[str, Any]] = []
    try:
        client = llm.with_model(result.model)
    except Exception as exc:
        result.error = exc
        _call_back(on_result, result)
        return

    def capture(request: CallRequest) -> None:  # last in line: runs only if no hook refused the call
        sent.append(request.body)

    client.hooks.before_request.append(capture)
    pieces: list[str] = []
    try:
        if on_delta is None:
            response = await client.ainvoke(messages, **params)
        else:
            async with client.astream(messages, **params) as stream:
                async for delta in stream:
                    pieces.append(delta)
                    _call_back(on_delta, result.model, delta)
                response = stream.response
        result.response, result.text = response, response.content
        result.cost = prices.cost(result.model, response.usage, response.model)
        result.provenance = provenance_of(
            response,
            base_url=client.base_url,
            request_body=sent[-1] if sent else None,
            endpoint=client.endpoint,
            timestamp=datetime.now(UTC),
            model=result.model,
        )
    except _CallbackFailed:
        raise
    except Exception as exc:
        result.error, result.text = exc, "".join(pieces)
        result.response = getattr(exc, "response", None)  # a structured-output failure keeps its answer
    finally:
        await client.aclose()
    _call_back(on_result, result)


def _call_back(callback: Callable[..., None] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        callback(*args)
    except Exception as exc:
        raise _CallbackFailed(f"{getattr(callback, '__qualname__', callback)} raised") from exc


def compare(
    llm: FlotorchLLM,
    messages: list[dict[str, Any]],
    models: str | Sequence[str],
    *,
    prices: PriceTable | None = None,
    on_delta: DeltaCallback | None = None,
    on_result: ResultCallback | None = None,
    **params: Any,
) -> Comparison:
    """The blocking twin of :func:`acompare`: works in a plain script and inside a notebook cell
    (whose event loop is already running), with the callbacks called on this thread."""
    events: queue.SimpleQueue[tuple[str, tuple[Any, ...]]] = queue.SimpleQueue()
    state: dict[str, Any] = {}
    ready = threading.Event()

    async def run() -> Comparison:
        state["loop"], state["task"] = asyncio.get_running_loop(), asyncio.current_task()
        ready.set()
        return await acompare(
            llm,
            messages,
            models,
            prices=prices,
            on_delta=(lambda *a: events.put(("delta", a))) if on_delta else None,
            on_result=(lambda *a: events.put(("result", a))) if on_result else None,
            **params,
        )

    def work() -> None:
        try:
            state["value"] = _run_on_new_loop(run())
        except BaseException as exc:  # handed to the caller's thread, which raises it
            state["error"] = exc
        finally:
            ready.set()
            events.put(("end", ()))

    worker = threading.Thread(target=work, name="flotorch-compare", daemon=True)
    worker.start()
    try:
        while True:
            kind, args = events.get()
            if kind == "end":
                break
            (on_delta if kind == "delta" else on_result)(*args)  # type: ignore[misc]
    except BaseException:  # Ctrl-C or a callback that raised: cancel what is in flight, then raise
        ready.wait()
        loop, task = state.get("loop"), state.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        worker.join()
        raise
    worker.join()
    if "error" in state:
        raise state["error"]
    comparison: Comparison = state["value"]
    return comparison


def _run_on_new_loop(main: Coroutine[Any, Any, Comparison]) -> Comparison:
    """``asyncio.run`` by hand: nest-asyncio (applied in notebooks) replaces ``asyncio.run`` with a
    version that reuses the thread's loop and never closes it. This one cancels what is left, as
    ``asyncio.run`` does (which is also when the client closes that loop's connection pools)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


# -- showing -----------------------------------------------------------------------------------------
_CELL = 'style="vertical-align:top;text-align:left;padding:6px 8px;border:1px solid #e5e7eb"'
_HEAD = 'style="text-align:left;padding:6px 8px;border:1px solid #e5e7eb;background:#f9fafb"'
_TABLE = (
    '<table class="flotorch-compare-table" '
    'style="table-layout:fixed;width:100%;border-collapse:collapse;margin:0">'
)
_PRE = '<div class="flotorch-text" style="white-space:pre-wrap;font-family:monospace">'


def _footer(result: ModelResult) -> str:
    if result.response is None:
        return ""
    footer = _render.footer_html(result.response.footer(result.model))
    cost = (
        '<div class="flotorch-cost" style="font-size:0.85em;color:#6b7280">'
        f"{_render.escape_text(format_cost(result.cost))}</div>"
    )
    return footer + cost


def _error_html(result: ModelResult) -> str:
    error = result.error
    assert error is not None
    line = (
        '<div class="flotorch-compare-error" style="color:#b91c1c">'
        f"<strong>{_render.escape_text(type(error).__name__)}</strong>: "
        f"{_render.escape_text(str(error))}</div>"
    )
    if result.text:  # what arrived before a stream broke stays readable, marked as partial
        line += f'{_render.render_markdown(result.text)}<div style="color:#6b7280">(answer cut off)</div>'
    return line


def _column(result: ModelResult) -> str:
    if result.error is not None:
        return _error_html(result)
    return f'<div class="flotorch-answer">{_render.render_markdown(result.text)}{_footer(result)}</div>'


def comparison_html(results: Sequence[ModelResult]) -> str:
    """The static side-by-side view: a table with one column per model (model text sanitized)."""
    heads = "".join(
        f'<th class="flotorch-compare-model" {_HEAD}>{_render.escape_text(r.model)}</th>' for r in results
    )
    cells = "".join(f'<td class="flotorch-compare-cell" {_CELL}>{_column(r)}</td>' for r in results)
    return (
        f'<div class="flotorch-compare">{_TABLE}<thead><tr>{heads}</tr></thead>'
        f"<tbody><tr>{cells}</tr></tbody></table>{_summary_html(results)}</div>"
    )


def _summary_html(results: Sequence[ModelResult]) -> str:
    line = _summary(results)
    if not line:
        return ""
    return (
        '<div class="flotorch-compare-summary" style="font-size:0.85em;color:#6b7280;margin-top:4px">'
        f"{_render.escape_text(line)}</div>"
    )


def _summary(results: Sequence[ModelResult]) -> str:
    answered = [r for r in results if r.ok and r.response is not None]
    parts = [f"{len(answered)} of {len(results)} models answered"]
    if len(answered) > 1:
        fastest = min(answered, key=lambda r: r.response.latency_s if r.response else 0.0)
        parts.append(f"fastest {fastest.model}")
    costs = [r.cost for r in answered]
    if answered:
        known = [c for c in costs if c is not None]
        total = format_cost(sum(known, Decimal(0))) if len(known) == len(costs) else None
        parts.append(
            f"total {total}" if total else f"total cost unknown ({costs.count(None)} without a price)"
        )
    return " · ".join(parts)


def comparison_text(results: Sequence[ModelResult]) -> str:
    """The comparison as plain text: a table of the numbers, then each answer under its model."""
    rows = [("model", "tokens", "latency", "cost")]
    for r in results:
        if r.error is not None:
            rows.append((r.model, "-", "-", f"{type(r.error).__name__}"))
            continue
        assert r.response is not None
        usage = r.response.usage
        tokens = str(usage.total_tokens) if usage else "unknown"
        latency = f"{r.response.latency_s * 1000:.0f} ms"
        rows.append((r.model, tokens, latency, format_cost(r.cost)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    table = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
    blocks = [table, _summary(results)]
    for r in results:
        body = f"{type(r.error).__name__}: {r.error}" if r.error is not None else r.text
        if r.error is not None and r.text:
            body += f"\n(answer cut off) {r.text}"
        blocks.append(f"── {r.model}\n{body}")
    return "\n\n".join(blocks)


def preview_bundle(
    models: Sequence[str], texts: Mapping[str, str], finished: Mapping[str, ModelResult]
) -> dict[str, str]:
    """The live view while answers stream in: finished columns as final, others as escaped text with a
    "streaming…" line (the magic redraws it; the final display is the ``Comparison`` itself)."""
    cells, plain = [], []
    for model in models:
        done = finished.get(model)
        if done is not None:
            cells.append(_column(done))
            plain.append(f"── {model} (done)\n{done.text if done.ok else type(done.error).__name__}")
            continue
        text = texts.get(model, "")
        status = '<div class="flotorch-footer" style="font-size:0.85em;color:#6b7280">streaming…</div>'
        cells.append(f"{_PRE}{_render.escape_text(text)}</div>{status}")
        plain.append(f"── {model} (streaming…)\n{text}")
    heads = "".join(f"<th {_HEAD}>{_render.escape_text(m)}</th>" for m in models)
    body = "".join(f'<td class="flotorch-compare-cell" {_CELL}>{c}</td>' for c in cells)
    html = (
        f'<div class="flotorch-compare flotorch-compare-live">{_TABLE}<thead><tr>{heads}</tr></thead>'
        f"<tbody><tr>{body}</tr></tbody></table></div>"
    )
    return {"text/plain": "\n\n".join(plain), "text/html": html}
