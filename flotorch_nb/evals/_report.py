"""What an ``EvalResult`` shows: the summary table, a chart of score ± interval against cost per model,
and the worst-scoring samples, as plain text and as sanitized HTML (pure).

Every text that came from a model or a dataset is escaped, never rendered, so a report survives save,
reopen and HTML export and cannot inject markup. The chart is inline SVG drawn here (no matplotlib):
one point per model at (cost, mean score) with its confidence interval as a vertical bar; without
prices the models are spread evenly along the axis and it says so.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from .._render import html_table, text_table
from .._text import one_line
from ..pricing import format_cost

if TYPE_CHECKING:
    from ._records import Record, ResultView

__all__ = ["report_html", "report_text"]

WORST = 5
#: ``EvalResult.summary_rows()``: drawn once per report, every part reads it (scipy per model x scorer).
Summary = list[dict[str, Any]]
_W, _H, _PAD = 360, 200, 40


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cost(value: float | None, unknown: int = 0) -> str:
    from decimal import Decimal

    text = "—" if value is None else format_cost(Decimal(str(value)))
    return text + (f" (+{unknown} unpriced)" if unknown and value is not None else "")


def _cut(text: str | None, limit: int = 120) -> str:
    return one_line(text or "", limit)


def _rows(summary: Summary) -> list[tuple[str, ...]]:
    head = ("model", "scorer", "mean", "95% CI", "SE", "n", "errors", "cost", "per sample", "p50 / p95 ms")
    rows: list[tuple[str, ...]] = [head]
    for row in summary:
        latency = "—"
        if row["p50_latency_ms"] is not None:
            latency = f"{row['p50_latency_ms']:.0f} / {row['p95_latency_ms']:.0f}"
        rows.append(
            (
                row["model"],
                row["scorer"],
                _num(row["mean"]),
                f"{_num(row['ci_low'])} to {_num(row['ci_high'])}",
                _num(row["se"]),
                str(row["n"]),
                str(row["errors"]),
                _cost(row["cost"], row["cost_unknown"]),
                _cost(row["cost_per_sample"]),
                latency,
            )
        )
    return rows


def _headline(result: ResultView) -> str:
    return (
        f"EvalResult: {len(result.samples)} samples x {len(result.models)} models"
        + (f" x {result.epochs} epochs" if result.epochs > 1 else "")
        + f"; {result.answered}/{len(result.records)} answered"
        + (" (interrupted)" if result.stats.get("interrupted") else "")
    )


def _judges(result: ResultView) -> list[str]:
    lines = []
    for name, usage in result.judge_usage.items():
        lines.append(
            f"judge {name}: {usage.calls} calls ({usage.requests} sent, {usage.cache_hits} from the cache, "
            f"{usage.errors} failed), {usage.input_tokens + usage.output_tokens:,} tokens, "
            f"cost {_cost(usage.cost, usage.unpriced)}"
        )
    return lines


def report_text(result: ResultView, summary: Summary | None = None) -> str:
    """The report as aligned plain text (``summary``: the result's ``summary_rows()``, if drawn)."""
    summary = result.summary_rows() if summary is None else summary
    rows = _rows(summary)
    lines = [_headline(result), text_table(rows), *_judges(result)]
    lines += [f"CI: {m}; no value counts as 0" for m in _methods(summary)]
    return "\n".join(lines)


def _methods(summary: Summary) -> list[str]:
    return sorted({row["method"] for row in summary})


def _chart(result: ResultView, summary: Summary) -> str:
    """Inline SVG: mean score ± CI (first scorer) against the cost of each model's answers."""
    if not result.scorers:
        return ""
    scorer = result.scorers[0]
    rows = [r for r in summary if r["scorer"] == scorer]
    costs = [r["cost"] for r in rows]
    priced = all(c is not None for c in costs) and len(rows) > 0
    xs = [float(c) for c in costs] if priced else [float(i) for i in range(len(rows))]
    low, high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = high - low or 1.0

    def x(v: float) -> float:
        return _PAD + (v - low) / span * (_W - 2 * _PAD) if len(xs) > 1 else _W / 2

    def y(v: float) -> float:
        return _H - _PAD - (0.0 if math.isnan(v) else v) * (_H - 2 * _PAD)

    parts = [
        f'<svg class="flotorch-eval-chart" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        'xmlns="http://www.w3.org/2000/svg" font-size="10" font-family="sans-serif">',
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD / 2}" y2="{_H - _PAD}" stroke="#888"/>',
        f'<line x1="{_PAD}" y1="{_PAD / 2}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#888"/>',
        f'<text x="{_PAD - 4}" y="{y(1.0) + 3}" text-anchor="end">1</text>',
        f'<text x="{_PAD - 4}" y="{y(0.0) + 3}" text-anchor="end">0</text>',
        f'<text x="{_W / 2}" y="{_H - 6}" text-anchor="middle">'
        + html.escape("cost of the answers" if priced else "models (no prices: cost unknown)")
        + "</text>",
        f'<text x="10" y="{_H / 2}" transform="rotate(-90 10 {_H / 2})" text-anchor="middle">'
        + html.escape(f"{scorer} (mean, 95% CI)")
        + "</text>",
    ]
    for row, xv in zip(rows, xs, strict=True):
        cx, mean = x(xv), row["mean"]
        if not math.isnan(row["ci_low"]):
            parts.append(
                f'<line x1="{cx:.1f}" y1="{y(row["ci_low"]):.1f}" x2="{cx:.1f}" y2="{y(row["ci_high"]):.1f}" '
                'stroke="#4477aa" stroke-width="2"/>'
            )
        if not math.isnan(mean):
            parts.append(f'<circle cx="{cx:.1f}" cy="{y(mean):.1f}" r="4" fill="#4477aa"/>')
        label = row["model"] + (f" {_cost(row['cost'])}" if priced else "")
        parts.append(
            f'<text x="{cx + 6:.1f}" y="{y(0.0 if math.isnan(mean) else mean) - 6:.1f}">'
            f"{html.escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _worst(result: ResultView) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("sample", "prompt", "target", *result.models)]
    by_key: dict[tuple[int, str], Record] = {}
    for record in result.records:
        if record.epoch == 0:
            by_key[(record.sample, record.model)] = record
    for sample, _mean in result.worst(WORST):
        target = result.samples[sample].get(result.target) if result.target else None
        cells = []
        for model in result.models:
            found = by_key.get((sample, model))
            if found is None:
                cells.append("")
                continue
            scores = ", ".join(f"{k}={_num(v[0], 2)}" for k, v in found.scores.items())
            said = found.answer if found.answer is not None else f"[{found.error_type}]"
            cells.append(f"{_cut(said, 80)} ({scores})")
        rows.append(
            (
                str(sample),
                _cut(result.prompts[sample]),
                _cut(None if target is None else str(target), 60),
                *cells,
            )
        )
    return rows


def report_html(result: ResultView, summary: Summary | None = None) -> str:
    """The report as sanitized HTML: headline, summary table, chart, judges' usage, worst samples."""
    summary = result.summary_rows() if summary is None else summary
    judges = "".join(f"<div>{html.escape(line)}</div>" for line in _judges(result))
    note = "; ".join(_methods(summary)) + ". A missing value (no answer, scorer failed) counts as 0."
    return (
        '<div class="flotorch-eval">'
        f"<b>{html.escape(_headline(result))}</b>"
        + html_table(_rows(summary), "flotorch-eval-summary")
        + f"<div style='font-size:smaller'>{html.escape(note)}</div>"
        + _chart(result, summary)
        + judges
        + "<details><summary>worst-scoring samples</summary>"
        + html_table(_worst(result), "flotorch-eval-worst")
        + "</details></div>"
    )
