"""The answers of this notebook session, with their provenance: what ``%flotorch provenance`` lists.

Every client the session builds or watches carries ``AnswerLog.after_call`` as a hook, which keeps the
provenance record each completed answer carries (``LLMResponse.provenance``), so each one —
``%%flotorch``, a comparison, the chat panel, a batch item, the user's own
``get_session().client().invoke(...)`` — adds one record here, with ``by`` saying which surface asked.
The records are the ones saved in the notebook's output metadata (the same fields), so this list and
``flotorch_nb.provenance("x.ipynb")`` read alike.

The table is escaped HTML plus text: model ids and request ids come from the gateway. Pure: no IPython.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import _render
from .._records import FIELDS

if TYPE_CHECKING:
    import pandas

    from .._pipeline._hooks import CallResult

__all__ = ["AnswerLog"]

#: What the table shows of each record (all fields stay in ``records`` and ``to_pandas()``).
_SHOWN = ("#", "by", "model", "source", "timestamp", "tokens", "latency", "request id", "request hash")


class AnswerLog:
    """Provenance records of the session's answers, oldest first; safe to add to from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []

    def add(self, record: Mapping[str, Any]) -> None:
        """Keep one answer's record."""
        with self._lock:
            self._records.append(dict(record))

    def after_call(self, result: CallResult) -> None:
        """An ``after_call`` hook: keep the record an answered call's response carries, with ``by``
        (the ``call_label``: ``magic``, ``chat``, ``batch`` or ``code``)."""
        response = result.response
        if result.outcome == "ok" and response is not None and response.provenance is not None:
            self.add(response.provenance | {"by": result.request.label or "code"})

    @property
    def records(self) -> list[dict[str, Any]]:
        """Copies of the records, oldest first."""
        with self._lock:
            return [dict(r) for r in self._records]

    def clear(self) -> int:
        """Forget every record; return how many there were."""
        with self._lock:
            count = len(self._records)
            self._records.clear()
            return count

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per answer: ``by`` and the provenance fields, as ``flotorch_nb.provenance`` gives."""
        from .._records import provenance_frame

        records = self.records
        frame = provenance_frame(records)
        frame.insert(0, "by", [r.get("by") for r in records])
        return frame

    def _rows(self) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for number, r in enumerate(self.records, 1):
            tokens = "unknown" if r.get("total_tokens") is None else str(r["total_tokens"])
            latency = f"{r['latency_ms']:.0f} ms" if isinstance(r.get("latency_ms"), int | float) else ""
            digest = str(r.get("request_hash") or "")[:12]
            rows.append(
                (
                    str(number),
                    str(r.get("by") or ""),
                    str(r.get("model") or ""),
                    str(r.get("source") or ""),
                    str(r.get("timestamp") or ""),
                    tokens,
                    latency,
                    str(r.get("request_id") or ""),
                    digest,
                )
            )
        return rows

    def as_text(self) -> str:
        """A fixed-width table (request hashes cut to 12 characters)."""
        if not len(self):
            return "no answers in this session yet"
        return _render.text_table([_SHOWN, *self._rows()])

    def as_html(self) -> str:
        """The table as HTML, every cell escaped; the full hash is in each hash cell's title."""
        if not len(self):
            return '<div class="flotorch-provenance">no answers in this session yet</div>'
        head = "".join(f"<th>{_render.escape_text(c)}</th>" for c in _SHOWN)
        body = []
        for row, record in zip(self._rows(), self.records, strict=True):
            cells = [f"<td>{_render.escape_text(c)}</td>" for c in row[:-1]]
            full = _render.escape_text(str(record.get("request_hash") or ""))
            cells.append(f'<td title="{full}"><code>{_render.escape_text(row[-1])}</code></td>')
            body.append(f"<tr>{''.join(cells)}</tr>")
        return (
            f'<table class="flotorch-provenance"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.as_text(), "text/html": self.as_html()}

    def __repr__(self) -> str:
        return f"AnswerLog({len(self)} answers; fields {', '.join(FIELDS)})"
