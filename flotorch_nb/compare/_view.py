"""How a comparison looks: the static side-by-side table, its plain text, and the live view.

One column per model, in the order asked: the answer (model Markdown through ``_render``'s one
sanitizer) with its footer — model, tokens, latency, and the cost while a price table is in use
(``_render.Footer.cost``) — or the model's typed error, with what had arrived before a stream broke.
Our own markup carries inline styles only (a notebook page has no stylesheet of ours, and a saved
notebook must look the same without the package). Pure: no I/O, no IPython.

What it draws is any ``Column`` (the fields of a model's outcome that the view reads), not the
comparison's own ``ModelResult``: the view is the lower layer, and ``Comparison`` displays itself by
calling it, so the two modules do not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from .. import _render
from .._text import utf8_safe
from ..pricing import describe_costs, format_cost

if TYPE_CHECKING:
    from decimal import Decimal

    from .._response import LLMResponse
    from ..pricing import ShownCost

__all__ = ["Column", "comparison_html", "comparison_text", "preview_bundle"]


class Column(Protocol):
    """One model's outcome as the view reads it (``compare.ModelResult`` is one)."""

    @property
    def model(self) -> str: ...
    @property
    def response(self) -> LLMResponse | None: ...
    @property
    def error(self) -> Exception | None: ...
    @property
    def text(self) -> str: ...  # the answer's text; for a stream that broke, what had arrived
    @property
    def cost(self) -> Decimal | None: ...
    @property
    def ok(self) -> bool: ...


_CELL = 'style="vertical-align:top;text-align:left;padding:6px 8px;border:1px solid #e5e7eb"'
_HEAD = 'style="text-align:left;padding:6px 8px;border:1px solid #e5e7eb;background:#f9fafb"'
_TABLE = (
    '<table class="flotorch-compare-table" '
    'style="table-layout:fixed;width:100%;border-collapse:collapse;margin:0">'
)
_PRE = '<div class="flotorch-text" style="white-space:pre-wrap;font-family:monospace">'
_GREY = "font-size:0.85em;color:#6b7280"


def _shown(result: Column, priced: bool) -> ShownCost:
    if not priced:
        return None
    return result.cost if result.cost is not None else "unknown"


def _footer(result: Column, priced: bool) -> str:
    if result.response is None:
        return ""
    footer = replace(result.response.footer(result.model), cost=_shown(result, priced))
    return _render.footer_html(footer)


def _error_html(result: Column) -> str:
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


def _column(result: Column, priced: bool) -> str:
    if result.error is not None:
        return _error_html(result)
    body = _render.render_markdown(result.text)
    return f'<div class="flotorch-answer">{body}{_footer(result, priced)}</div>'


def _table(models: Sequence[str], cells: Sequence[str], classes: str) -> str:
    heads = "".join(
        f'<th class="flotorch-compare-model" {_HEAD}>{_render.escape_text(m)}</th>' for m in models
    )
    body = "".join(f'<td class="flotorch-compare-cell" {_CELL}>{c}</td>' for c in cells)
    return (
        f'<div class="{classes}">{_TABLE}<thead><tr>{heads}</tr></thead>'
        f"<tbody><tr>{body}</tr></tbody></table>"
    )


def comparison_html(results: Sequence[Column], *, priced: bool = False) -> str:
    """The static side-by-side view: a table with one column per model (model text sanitized)."""
    table = _table([r.model for r in results], [_column(r, priced) for r in results], "flotorch-compare")
    return f"{table}{_summary_html(results, priced)}</div>"


def _summary_html(results: Sequence[Column], priced: bool) -> str:
    return (
        f'<div class="flotorch-compare-summary" style="{_GREY};margin-top:4px">'
        f"{_render.escape_text(summary(results, priced=priced))}</div>"
    )


def summary(results: Sequence[Column], *, priced: bool = False) -> str:
    """``3 of 3 models answered · fastest offline/concise · total $0.0004``."""
    answered = [r for r in results if r.ok and r.response is not None]
    parts = [f"{len(answered)} of {len(results)} models answered"]
    if len(answered) > 1:
        fastest = min(answered, key=lambda r: r.response.latency_s if r.response else 0.0)
        parts.append(f"fastest {fastest.model}")
    total = describe_costs(_shown(r, priced) for r in answered)
    if total is not None:
        parts.append(f"total {total}" if total != "cost unknown" else "total cost unknown")
    return " · ".join(parts)


def comparison_text(results: Sequence[Column], *, priced: bool = False) -> str:
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
        rows.append((r.model, tokens, latency, format_cost(r.cost) if priced else ""))
    columns = 4 if priced else 3
    table = _render.text_table([row[:columns] for row in rows])
    blocks = [table, summary(results, priced=priced)]
    for r in results:
        body = f"{type(r.error).__name__}: {r.error}" if r.error is not None else r.text
        if r.error is not None and r.text:
            body += f"\n(answer cut off) {r.text}"
        blocks.append(f"── {r.model}\n{body}")
    return utf8_safe("\n\n".join(blocks))


def preview_bundle(
    models: Sequence[str],
    texts: Mapping[str, str],
    finished: Mapping[str, Column],
    *,
    priced: bool = False,
) -> dict[str, str]:
    """The live view while answers stream in: finished columns as final, the others as escaped text
    with a "streaming…" line (redrawn by the magic; the final display is the ``Comparison`` itself)."""
    cells, plain = [], []
    for model in models:
        done = finished.get(model)
        if done is not None:
            cells.append(_column(done, priced))
            plain.append(f"── {model} (done)\n{done.text if done.ok else type(done.error).__name__}")
            continue
        text = texts.get(model, "")
        status = f'<div class="flotorch-footer" style="{_GREY}">streaming…</div>'
        cells.append(f"{_PRE}{_render.escape_text(text)}</div>{status}")
        plain.append(f"── {model} (streaming…)\n{text}")
    html = _table(models, cells, "flotorch-compare flotorch-compare-live") + "</div>"
    return {"text/plain": utf8_safe("\n\n".join(plain)), "text/html": html}
