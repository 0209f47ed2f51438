"""What a ``%%flotorch --map NAME`` cell shows, and ``-m a,b,c --map NAME``: several models over a dataset.

- One model: the ``BatchResult`` (``mapping.run_map``) is the cell's value as a :class:`ShownBatch`,
  which shows the same summary and first rows plus the cost while a price table is in use, with the
  provenance of its answers in the output's metadata; a small chart (latency distribution, errors by
  type) comes first.
- Several models: the template runs over the dataset once per model, one batch after another (each
  with its own concurrency, progress bar and the session's budgets), and the value is a
  :class:`ModelBatches`: one row per item with a column group per model (``to_pandas()``), a summary
  line per model and, when the answers are labels (``positive``/``negative``...), how often the models
  agree (``_agreement``); its chart shows each model's latency distribution and errors.

Provenance: every answered item carries its record on its ``StoredAnswer`` (made where its call
finished, a cache hit's too: ``source="cache"``); this cell puts those in its output. At most
``MAX_RECORDS`` records go into one output, so a huge batch does not bloat the notebook
(``provenance_omitted`` counts the rest). Model text is escaped, never rendered. No IPython import:
``magics.py`` displays what this returns.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .._records import METADATA_KEY, output_metadata
from .._render import html_table, text_table
from .._text import utf8_safe
from ..batch import BatchItem, BatchResult
from ..compare import Agreement, agreement, looks_like_labels
from ..pricing import PriceTable, ShownCost, describe_costs, shown_cost
from .charts import Chart, batch_chart, models_batch_chart
from .mapping import run_map

if TYPE_CHECKING:
    import pandas

    from .session import Session

__all__ = ["MAX_RECORDS", "ModelBatches", "ShownBatch", "run_mapped"]

#: The most provenance records one output carries.
MAX_RECORDS = 1000
#: Items shown under a multi-model summary.
PREVIEW_ROWS = 10


def _item_cost(item: BatchItem, model: str, prices: PriceTable) -> ShownCost:
    answer = item.answer
    if answer is None:
        return None
    if answer.source == "cache":  # nothing was sent, nothing spent
        return shown_cost(Decimal(0), prices)
    price = prices.get(model, answer.model)
    usage = answer.usage
    cost = price.cost(usage[0], usage[1]) if price is not None and usage is not None else None
    return shown_cost(cost, prices)


def batch_cost(result: BatchResult, model: str, prices: PriceTable) -> str | None:
    """What a batch's answers cost (``$0.012 + 3 calls of unknown cost``), or None without prices."""
    return describe_costs(_item_cost(item, model, prices) for item in result.items)


def _records(results: Mapping[str, BatchResult]) -> tuple[list[dict[str, Any]], int]:
    """The provenance every answered item carries (on its ``StoredAnswer``), models in order, items in
    input order; and how many records were left out past ``MAX_RECORDS``."""
    records: list[dict[str, Any]] = []
    answered = 0
    for result in results.values():
        for item in result.items:
            answer = item.answer
            if answer is None or answer.provenance is None:
                continue
            answered += 1
            if len(records) >= MAX_RECORDS:
                continue
            records.append(answer.provenance)
    return records, answered - len(records)


def _metadata(records: list[dict[str, Any]], omitted: int) -> dict[str, Any]:
    metadata = output_metadata(records)
    if omitted:
        metadata[METADATA_KEY]["provenance_omitted"] = omitted
    return metadata


class ShownBatch(BatchResult):
    """A ``BatchResult`` that displays its summary with the cost (while prices are in use) and the
    provenance of its answers as output metadata. In every other way it is the batch's result."""

    _metadata: dict[str, Any]
    _cost: str | None

    @classmethod
    def of(cls, result: BatchResult, metadata: dict[str, Any], cost: str | None) -> ShownBatch:
        """``result``'s items, stats and options (shared), shown with ``metadata`` and ``cost``."""
        shown = cls(**{f.name: getattr(result, f.name) for f in fields(BatchResult)})
        shown._metadata, shown._cost = metadata, cost
        return shown

    def _summary_rows(self) -> list[tuple[str, str]]:
        rows = super()._summary_rows()
        cost = getattr(self, "_cost", None)
        return [*rows, ("cost", cost)] if cost else rows

    # IPython takes (data, metadata) as readily as data alone; the metadata carries the provenance.
    def _repr_mimebundle_(  # type: ignore[override]
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        return super()._repr_mimebundle_(include, exclude), dict(getattr(self, "_metadata", {}))


@dataclass(eq=False)
class ModelBatches:
    """Several models' answers to the same items: ``results[model]`` is that model's ``BatchResult``."""

    results: dict[str, BatchResult]
    costs: dict[str, str | None] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list, repr=False)
    provenance_omitted: int = 0

    @property
    def models(self) -> tuple[str, ...]:
        """The models, in the order asked."""
        return tuple(self.results)

    def __getitem__(self, model: str) -> BatchResult:
        return self.results[model]

    def __len__(self) -> int:
        """The number of items."""
        return len(next(iter(self.results.values()))) if self.results else 0

    def answers(self) -> dict[str, list[str | None]]:
        """Per model, its answer to each item (None where it has none)."""
        return {m: [item.content for item in r.items] for m, r in self.results.items()}

    @property
    def agreement(self) -> Agreement | None:
        """How often the models gave the same label, when the answers are labels (else None)."""
        answers = self.answers()
        if len(answers) < 2 or not looks_like_labels(a for values in answers.values() for a in values):
            return None
        return agreement(answers)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per item (the input's index kept), a column group per model: answer, total_tokens,
        latency_ms, error_type; and ``("all", "agree")`` when the answers are labels."""
        import pandas as pd

        columns = ["answer", "total_tokens", "latency_ms", "error_type"]
        frame = pd.concat({m: r.to_pandas()[columns] for m, r in self.results.items()}, axis=1)
        found = self.agreement
        if found is not None:
            frame[("all", "agree")] = pd.Series(found.per_item, index=frame.index, dtype="boolean")
        return frame

    def _summary(self) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = [("model", "ok", "errors", "tokens", "latency p50 / p95", "cost")]
        for model, result in self.results.items():
            s = result.summary()
            errors = ", ".join(f"{k} {n}" for k, n in sorted(s["errors"].items())) or "none"
            latency = "—"
            if s["p50_latency_ms"] is not None:
                latency = f"{s['p50_latency_ms']:.0f} / {s['p95_latency_ms']:.0f} ms"
            cost = self.costs.get(model) or ""
            rows.append((model, f"{s['ok']}/{s['items']}", errors, f"{s['tokens']:,}", latency, cost))
        if not any(row[-1] for row in rows[1:]):
            rows = [row[:-1] for row in rows]
        return rows

    def _preview(self) -> list[tuple[str, ...]]:
        labels = [str(i.label) for i in next(iter(self.results.values())).items[:PREVIEW_ROWS]]
        shown = []
        for index, label in enumerate(labels):
            cells = []
            for result in self.results.values():
                item = result.items[index]
                shown_text = item.answer.content if item.answer is not None else type(item.error).__name__
                text = " ".join(shown_text.split())
                cells.append(text if len(text) <= 80 else text[:79] + "…")
            shown.append((label, *cells))
        return shown

    def _agreement_line(self) -> str | None:
        found = self.agreement
        if found is None:
            return None
        pairs = "; ".join(
            f"{a} & {b}: {share:.0%}" for (a, b), share in found.pairwise.items() if share is not None
        )
        return f"agreement: {found}" + (f" (pairs: {pairs})" if len(self.results) > 2 and pairs else "")

    def __repr__(self) -> str:
        return f"ModelBatches({len(self)} items x {', '.join(self.models)})"

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """A summary line per model, the agreement, and the first items side by side (escaped)."""
        summary, preview, agreed = self._summary(), self._preview(), self._agreement_line()
        text = [f"{len(self)} items x {len(self.results)} models", text_table(summary)]
        if agreed:
            text.append(agreed)
        text.append(text_table([("item", *self.models), *preview]))
        body = html_table(summary, "flotorch-map-summary")
        if agreed:
            body += f'<div class="flotorch-map-agreement">{html.escape(agreed)}</div>'
        body += html_table([("item", *self.models), *preview], "flotorch-map-items")
        data = {
            "text/plain": utf8_safe("\n\n".join(text)),
            "text/html": f'<div class="flotorch-map"><b>{len(self)} items x {len(self.results)} models</b>'
            f"{body}</div>",
        }
        return data, _metadata(self.provenance, self.provenance_omitted)


def _latencies(result: BatchResult) -> list[float]:
    answers = [i.answer for i in result.items if i.answer is not None]
    return [a.latency_s * 1000 for a in answers if a.source != "cache"]


def run_mapped(
    session: Session,
    namespace: Mapping[str, Any],
    name: str,
    template: str,
    models: Sequence[str],
    **options: Any,
) -> tuple[ShownBatch | ModelBatches, Chart | None]:
    """Run the ``--map`` cell over ``models`` (one, or several in turn); the cell's value and its chart
    (None without matplotlib). ``options`` go to ``mapping.run_map``."""
    prices = session.prices()
    results = {model: run_map(session, namespace, name, template, model=model, **options) for model in models}
    records, omitted = _records(results)
    costs = {m: batch_cost(r, m, prices) for m, r in results.items()}
    value: ShownBatch | ModelBatches
    if len(models) == 1:
        (result,) = results.values()
        value = ShownBatch.of(result, _metadata(records, omitted), costs[models[0]])
        errors = dict(Counter(type(i.error).__name__ for i in result.errors))
        draw: Any = lambda: batch_chart(_latencies(result), errors)  # noqa: E731
    else:
        value = ModelBatches(results, costs, records, omitted)
        counts = {m: len(r.errors) for m, r in results.items()}
        draw = lambda: models_batch_chart({m: _latencies(r) for m, r in results.items()}, counts)  # noqa: E731
    try:
        return value, draw()
    except ImportError:  # charts need matplotlib; the summary says it all
        return value, None
