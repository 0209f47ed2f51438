"""Small static charts beside the numbers: the usage ledger, a comparison, a batch.

matplotlib draws them into PNG images (its object API on an Agg canvas: no pyplot, so the user's own
backend and figures are never touched). A PNG is plain data in the output: it survives save, reopen,
HTML export and GitHub's viewer, needs no widget state or JavaScript, and cannot carry script the way
an HTML or SVG output can. A chart never replaces its table: every surface shows the numbers too, and
each chart's ``text/plain`` says what the picture shows.

Install with the ``plot`` extra (``notebook`` includes it); matplotlib is imported on first use.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from ..pricing import format_cost

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..compare import Comparison

__all__ = ["Chart", "batch_chart", "comparison_chart", "ledger_chart", "models_batch_chart"]

_BLUE, _ORANGE, _RED, _GREY = "#2563eb", "#d97706", "#b91c1c", "#6b7280"
_DPI = 100
#: The fewest bar slots of the "errors by type" panel: a single error type is one bar, not a red block.
_MIN_SLOTS = 5


class _TokenRow(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def total_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Chart:
    """A rendered chart: a PNG and a one-paragraph text of what it shows (its ``text/plain``)."""

    png: bytes
    alt: str
    width: int
    height: int

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        data = {"image/png": base64.b64encode(self.png).decode("ascii"), "text/plain": self.alt}
        return data, {"image/png": {"width": self.width, "height": self.height}}


def _figure(panels: int, height: float) -> tuple[Figure, list[Axes]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("charts need matplotlib: pip install 'flotorch_nb[plot]' (or matplotlib)") from None
    figure = Figure(figsize=(3.4 * panels, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(1, panels, i + 1) for i in range(panels)]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    return figure, axes


def _render(figure: Figure, alt: str) -> Chart:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    width, height = (round(v) for v in figure.get_size_inches() * _DPI)
    return Chart(buffer.getvalue(), alt, width, height)


def _short(label: str, limit: int = 22) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _bars(
    ax: Axes,
    labels: Sequence[str],
    values: Sequence[float | None],
    texts: Sequence[str],
    title: str,
    color: str,
    missing_color: str = _GREY,
    slots: int = 0,
) -> None:
    """Horizontal bars, one per label, each with its number written at its end (so the axis itself
    needs no ticks); a ``None`` value draws no bar, only its text (``cost unknown``, an error).
    ``slots``: room for at least that many bars, so one bar in a tall panel stays a bar instead of
    filling it as a block."""
    positions = list(range(len(labels)))
    ax.barh(positions, [v if v is not None else 0 for v in values], color=color, height=0.6)
    ax.set_yticks(positions, [_short(label) for label in labels])
    ax.set_ylim(max(len(labels), slots) - 0.5, -0.5)  # first model on top, as in the tables
    ax.set_title(title, fontsize=9, loc="left")
    top = max((v for v in values if v is not None), default=0) or 1
    ax.set_xlim(0, top * 1.35)
    ax.set_xticks([])
    ax.spines["bottom"].set_visible(False)
    for y, value, text in zip(positions, values, texts, strict=True):
        x = (value or 0) + top * 0.02
        ax.text(x, y, text, va="center", fontsize=8, color=missing_color if value is None else "black")


def ledger_chart(rows: Iterable[_TokenRow], costs: Mapping[str, Decimal | None] | None = None) -> Chart:
    """Tokens per model (the ledger's rows; a ``"total"`` row is left out), and cost per model when
    ``costs`` is given: None means no prices are in use, and then no cost is shown at all. A model
    whose cost is unknown gets the words "cost unknown", never a bar of zero."""
    models = [r for r in rows if r.model != "total"]
    labels = [r.model for r in models]
    tokens = [float(r.total_tokens) for r in models]
    figure, axes = _figure(1 if costs is None else 2, 0.6 + 0.35 * max(1, len(labels)))
    _bars(axes[0], labels, tokens, [f"{t:,.0f}" for t in tokens], "tokens per model", _BLUE)
    if costs is None:
        return _render(
            figure,
            "Tokens per model: " + "; ".join(f"{m}: {t:,.0f}" for m, t in zip(labels, tokens, strict=True)),
        )
    money = [costs.get(label) for label in labels]
    dollars = [float(c) if c is not None else None for c in money]
    _bars(axes[1], labels, dollars, [format_cost(c) for c in money], "cost per model", _ORANGE)
    axes[1].set_yticks([])
    alt = "Tokens and cost per model: " + "; ".join(
        f"{m}: {t:,.0f} tokens, {format_cost(c)}" for m, t, c in zip(labels, tokens, money, strict=True)
    )
    return _render(figure, alt)


def comparison_chart(comparison: Comparison) -> Chart:
    """Latency and tokens per model of a comparison; a model that failed shows its error's type."""
    labels = list(comparison.models)
    latency: list[float | None] = []
    tokens: list[float | None] = []
    for result in comparison.results:
        resp = result.response if result.ok else None
        latency.append(resp.latency_s * 1000 if resp is not None else None)
        tokens.append(float(resp.usage.total_tokens) if resp is not None and resp.usage else None)
    failed = {r.model: type(r.error).__name__ for r in comparison.results if r.error is not None}

    figure, (left, right) = _figure(2, 0.6 + 0.35 * max(1, len(labels)))
    ms_texts = [
        failed.get(m, "") if v is None else f"{v:,.0f} ms" for m, v in zip(labels, latency, strict=True)
    ]
    _bars(left, labels, latency, ms_texts, "latency", _BLUE, missing_color=_RED)
    token_texts = [
        "" if m in failed else ("unknown" if v is None else f"{v:,.0f}")
        for m, v in zip(labels, tokens, strict=True)
    ]
    _bars(right, labels, tokens, token_texts, "tokens", _ORANGE)
    right.set_yticks([])
    described = []
    for model, ms, count in zip(labels, latency, tokens, strict=True):
        if model in failed or ms is None:
            described.append(f"{model}: failed ({failed.get(model, 'no answer')})")
        else:
            described.append(
                f"{model}: {ms:,.0f} ms, " + (f"{count:,.0f} tokens" if count else "tokens unknown")
            )
    alt = "Latency and tokens per model: " + "; ".join(described)
    return _render(figure, alt)


def _latency_histogram(ax: Axes, values: Sequence[float]) -> None:
    """How many answers took how long; the count axis has whole numbers only (there is no half an
    answer, which matplotlib's ticks would show for small batches)."""
    from matplotlib.ticker import MaxNLocator

    if values:
        ax.hist(values, bins=min(30, max(5, len(values) // 3)), color=_BLUE, edgecolor="white")
    else:
        ax.text(0.5, 0.5, "no answers", ha="center", va="center", color=_GREY, transform=ax.transAxes)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"latency of {len(values)} answers (ms)", fontsize=9, loc="left")
    ax.set_ylabel("answers", fontsize=8)


def batch_chart(latencies_ms: Sequence[float], errors: Mapping[str, int] | None = None) -> Chart:
    """A batch at a glance: the distribution of latencies, and errors by type (when there are any)."""
    values = [float(v) for v in latencies_ms if v is not None and math.isfinite(v)]
    errors = {k: v for k, v in (errors or {}).items() if v}
    figure, axes = _figure(2 if errors else 1, 2.4)
    _latency_histogram(axes[0], values)
    if errors:
        names = sorted(errors, key=lambda k: -errors[k])
        counts = [float(errors[n]) for n in names]
        _bars(
            axes[1], names, counts, [str(errors[n]) for n in names], "errors by type", _RED, slots=_MIN_SLOTS
        )
    alt = f"{len(values)} answers"
    if values:
        alt += f", latency median {statistics.median(values):,.0f} ms, max {max(values):,.0f} ms"
    alt += "; errors: " + (", ".join(f"{n} {errors[n]}" for n in errors) if errors else "none")
    return _render(figure, alt)


def models_batch_chart(latencies_ms: Mapping[str, Sequence[float]], errors: Mapping[str, int]) -> Chart:
    """Several models over the same items: each model's latency distribution (a dot per answer, a bar
    at the median), and how many items each could not answer."""
    labels = list(latencies_ms)
    values = [[float(v) for v in latencies_ms[m] if v is not None and math.isfinite(v)] for m in labels]
    figure, (left, right) = _figure(2, 0.7 + 0.4 * max(1, len(labels)))
    # One row of dots per model (each an answer) and a bar at its median: plain scatter and lines,
    # which every matplotlib version draws the same way (boxplot's orientation argument changed).
    for y, latency in enumerate(values):
        if latency:
            jitter = [((i * 7919) % 11 - 5) * 0.02 for i in range(len(latency))]  # deterministic spread
            left.scatter(latency, [y + j for j in jitter], s=9, color=_BLUE, alpha=0.6, linewidths=0)
            median = statistics.median(latency)
            left.plot([median, median], [y - 0.3, y + 0.3], color="black", linewidth=1.5)
    left.set_yticks(list(range(len(labels))), [_short(label) for label in labels])
    left.set_ylim(len(labels) - 0.5, -0.5)  # first model on top, as in the tables
    left.set_title("latency per answer (ms)", fontsize=9, loc="left")
    counts = [float(errors.get(m, 0)) for m in labels]
    _bars(right, labels, counts, [str(int(c)) for c in counts], "errors", _RED)
    right.set_yticks([])
    parts = []
    for model, latency in zip(labels, values, strict=True):
        middle = f"median {statistics.median(latency):,.0f} ms" if latency else "no answers"
        parts.append(f"{model}: {len(latency)} answers, {middle}, {errors.get(model, 0)} errors")
    return _render(figure, "Latency and errors per model: " + "; ".join(parts))
