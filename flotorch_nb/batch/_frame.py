"""How a batch's ``to_pandas()`` frame looks in a notebook, while it stays a plain ``DataFrame``.

pandas' own HTML for that frame is a poor read: eleven columns make it wider than a notebook's output
(1,204 px in a 968 px cell), JupyterLab right-aligns every cell so the answers become tall ragged
columns, a newline in an answer shows as a literal ``\\n``, and ``request_id`` falls off the right edge.
Users' code needs the frame as it is (every column, a real ``pandas.DataFrame``), so the frame is not
changed; it is marked (``DataFrame.attrs``, which pandas carries through ``head()``, selections and
copies), and IPython is given an HTML printer for ``DataFrame`` that draws a marked frame as a
compact table and hands every other frame to the printer it had before (pandas' own, or whatever
another library registered):

- the answer column left-aligned, wrapped, its newlines as line breaks (``white-space: pre-wrap``);
- the columns that matter at a glance (answer, tokens, latency, source, request id, and the error
  columns when something failed); the others are named under the table and remain in the frame;
- at most ``display.max_rows`` rows, the rest counted;
- every value escaped: model text is never rendered as HTML.

The printer is registered the first time a frame is made inside IPython (``sys.modules``, no import
of IPython here), so it works with or without ``%load_ext flotorch_nb``.
"""

from __future__ import annotations

import html
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

__all__ = ["MARK", "frame_html", "mark", "show_in_ipython"]

#: The ``DataFrame.attrs`` key that marks a batch's frame.
MARK = "flotorch_nb"
#: Columns left out of the notebook view (still in the frame), unless they are all a frame has.
QUIET = ("input_tokens", "output_tokens", "model", "finish_reason")
#: Columns shown only when some row has a value (a batch without errors has no error columns).
WHEN_FILLED = ("error_type", "error", "parsed")
_CELL = "text-align:left;vertical-align:top;padding:4px 8px;border-bottom:1px solid #e5e7eb"
_TEXT = _CELL + ";white-space:pre-wrap;overflow-wrap:anywhere;min-width:16em"
_NARROW = _CELL + ";white-space:nowrap"
_HEAD = _NARROW + ";font-weight:600;border-bottom:1px solid #9ca3af"
_WIDE_COLUMNS = ("answer", "error", "parsed")


def mark(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Mark ``frame`` as a batch's, so notebooks show it with :func:`frame_html`; return it."""
    frame.attrs[MARK] = "batch"
    return frame


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, list | tuple | dict) else False
    except (TypeError, ValueError):
        return False


def _shown(value: Any, column: str) -> str:
    if _missing(value):
        return ""
    if column == "latency_ms" and isinstance(value, float) and math.isfinite(value):
        return f"{value:,.0f}"
    return str(value)


def _columns(frame: pandas.DataFrame) -> tuple[list[int], list[str]]:
    """The positions of the columns to draw, and the names of those left out (named under it)."""
    names = [str(c) for c in frame.columns]
    shown, hidden = [], []
    for position, name in enumerate(names):
        quiet = name in QUIET and len(names) > len(QUIET)
        empty = name in WHEN_FILLED and bool(frame.iloc[:, position].map(_missing).all())
        if quiet or empty:
            hidden.append(name)
        else:
            shown.append(position)
    return shown, hidden


def frame_html(frame: pandas.DataFrame) -> str:
    """The compact HTML table of a batch's frame (see the module docstring); plain data, escaped."""
    import pandas as pd

    shown, hidden = _columns(frame)
    limit = pd.get_option("display.max_rows") or len(frame)
    rows = frame.head(limit)
    names = [str(c) for c in frame.columns]
    head = f'<th style="{_HEAD}"></th>' + "".join(
        f'<th style="{_HEAD}">{html.escape(names[i])}</th>' for i in shown
    )
    body = []
    for label, row in zip(rows.index, rows.itertuples(index=False, name=None), strict=True):
        cells = [f'<th style="{_NARROW}">{html.escape(str(label))}</th>']
        for i in shown:
            style = _TEXT if names[i] in _WIDE_COLUMNS else _NARROW
            cells.append(f'<td style="{style}">{html.escape(_shown(row[i], names[i]))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = [f"{len(frame):,} rows, {len(frame.columns)} columns"]
    if len(frame) > len(rows):
        notes.append(f"first {len(rows):,} shown")
    if hidden:
        notes.append(f"also in the DataFrame: {', '.join(hidden)}")
    table = (
        '<table class="flotorch-frame" style="table-layout:auto;width:100%;max-width:100%;'
        'border-collapse:collapse;font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
    caption = (
        f'<div style="font-size:0.85em;color:#6b7280;margin-top:4px">{html.escape(" · ".join(notes))}</div>'
    )
    return f'<div class="flotorch-frame" style="max-width:100%;overflow-x:auto">{table}{caption}</div>'


_REGISTERED: set[int] = set()


def show_in_ipython() -> None:
    """Give the running IPython shell (if any) the HTML printer for marked frames, once per shell."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    if shell is None or id(shell) in _REGISTERED:
        return
    import pandas as pd

    formatter = shell.display_formatter.formatters.get("text/html")
    if formatter is None:
        return
    try:
        before = formatter.lookup_by_type(pd.DataFrame)
    except KeyError:
        before = None

    def printer(frame: pandas.DataFrame) -> str | None:
        if frame.attrs.get(MARK) == "batch":
            return frame_html(frame)
        if before is not None:
            return before(frame)  # type: ignore[no-any-return]
        return frame._repr_html_()  # type: ignore[no-any-return]

    formatter.for_type(pd.DataFrame, printer)
    _REGISTERED.add(id(shell))
