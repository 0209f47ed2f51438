"""The call log's file: its tables, how a finished call becomes a row, and how rows are searched.

Plain SQLite, readable with any SQLite tool:

- ``calls``: one row per finished call (answer, failure, stop, cache hit), indexed on ``time`` and on
  ``model, time``. The request body is stored whole, as the JSON that was sent (``request``); what a
  search returns splits it with SQLite's JSON functions (``messages``, ``tools``, and ``params``: the
  rest of the body, without the model and the transport-only ``stream``/``stream_options``), for the
  rows it returns only, so writing a call costs no JSON work at all.
- ``calls_fts``: an FTS5 index (contentless: the text lives in ``calls``) over the text of every
  message of the prompt and over the answer, filled by one ``INSERT ... SELECT`` per written batch.
- ``meta``: the kind and format (``_sqlite``: a file of another kind is refused).

Never the key: the request's headers are not kept, and the body, the answer and the error text are
scrubbed of it (``_config.redact``) before they are written, as the cache and replay do.

``search`` turns free text into an FTS5 query of quoted words (all must appear, in any order), so
a user's punctuation is never FTS5 syntax (the index keeps no positions: no phrase queries); newest
rows first (rowid order, which FTS5 walks backwards without sorting: a search over 100,000 rows
stops at ``limit``). Pure apart from the ``sqlite3`` connection handed in.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Iterable, Sequence
from itertools import chain, compress, cycle, groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import redact
from ._errors import FlotorchError
from ._response import LLMResponse
from ._sqlite import FileKind
from ._version import __version__

if TYPE_CHECKING:
    import sqlite3

    from ._response import Source
    from ._transport import Call
    from .pricing import PriceTable

__all__ = [
    "COLUMNS",
    "KIND",
    "CallLogError",
    "Row",
    "Where",
    "count",
    "match_query",
    "priced",
    "rows_of",
    "search",
    "write",
]

#: The notebook, the cell id and the execution count a call was made in (any may be None).
Where = tuple[str | None, str | None, int | None]


class CallLogError(FlotorchError):
    """The call log file cannot be used (not ours, damaged, locked, unwritable, missing)."""

    def __init__(self, path: Path, problem: str, advice: str | None = None) -> None:
        advice = advice or "Use another file (FLOTORCH_LOG=PATH or %flotorch log on PATH)"
        super().__init__(f"The call log {path} cannot be used: {problem}. {advice}")
        self.path = path
        self.problem = problem


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS calls (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        model TEXT NOT NULL,
        answered_model TEXT,
        outcome TEXT NOT NULL,
        source TEXT NOT NULL,
        stream INTEGER NOT NULL,
        request TEXT NOT NULL,
        answer TEXT,
        tool_calls TEXT,
        finish_reason TEXT,
        input_tokens INTEGER,
        output_tokens INTEGER,
        total_tokens INTEGER,
        cost REAL,
        latency_ms REAL NOT NULL,
        error_type TEXT,
        error_status INTEGER,
        error_message TEXT,
        request_hash TEXT,
        request_id TEXT,
        gateway TEXT,
        label TEXT,
        notebook TEXT,
        cell TEXT,
        execution_count INTEGER,
        pid INTEGER NOT NULL,
        version TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS calls_time ON calls (time)",
    "CREATE INDEX IF NOT EXISTS calls_model_time ON calls (model, time)",
    # detail=none: no positions kept (a third less work per call, a smaller file); every query term
    # is then a single token, which is what match_query makes. columnsize=0: no row of token counts
    # per call (only ranking reads them, and a search orders by id): a b-tree insert less, ~1 µs.
    # A file made before keeps its table as it is; both are read the same way.
    "CREATE VIRTUAL TABLE IF NOT EXISTS calls_fts USING fts5(prompt, answer, content='', detail=none, "
    "columnsize=0)",
)

KIND = FileKind("flotorch_nb call log", "1", _SCHEMA, frozenset(("calls", "calls_fts")), CallLogError)

#: The columns a search returns, in this order (``prompt``: the last user message's text).
COLUMNS = (
    "id",
    "time",
    "model",
    "answered_model",
    "outcome",
    "source",
    "stream",
    "prompt",
    "answer",
    "messages",
    "params",
    "tools",
    "tool_calls",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost",
    "latency_ms",
    "error_type",
    "error_status",
    "error_message",
    "request_hash",
    "request_id",
    "gateway",
    "label",
    "notebook",
    "cell",
    "execution_count",
    "pid",
    "version",
)

#: Everything of the body that is neither the prompt, the tools nor transport: the call's parameters
#: (``extra_body`` left out when empty: the seed's wire format always sends one). Worked out when
#: rows are read (at most ``limit`` of them), not for every call written.
_REST = "json_remove(c.request, '$.messages', '$.tools', '$.model', '$.stream', '$.stream_options')"
_PARAMS = (
    f"CASE WHEN json_extract(c.request, '$.extra_body') = '{{}}' THEN json_remove({_REST}, '$.extra_body') "
    f"ELSE {_REST} END"
)
_INSERT = (
    "INSERT INTO calls (time, model, answered_model, outcome, source, request, stream, answer, tool_calls, "
    "finish_reason, input_tokens, output_tokens, total_tokens, latency_ms, error_type, error_status, "
    "error_message, request_hash, request_id, gateway, label, notebook, cell, execution_count, pid, version, "
    "cost) "
    "VALUES "
)
#: Rows per INSERT statement: one statement for many rows lets go of the GIL once for all of them
#: (``executemany`` lets go and takes it back for every row, a thread switch each while the caller's
#: event loop wants it); 27 x 64 parameters stay far below SQLite's limit of 32,766.
_ROWS_PER_INSERT = 64
#: A row's columns that are None (True) or not, as ``_nulls`` finds them.
_Nulls = tuple[bool, ...]
_NONES = (None,) * 27


def _nulls(one: Row) -> _Nulls:
    return tuple(map(operator.is_, _NONES, one))


@functools.lru_cache(maxsize=64)
def _insert(nulls: _Nulls, rows: int) -> str:
    """The INSERT of ``rows`` rows whose None columns are ``nulls``: those are NULL in the statement
    rather than parameters. Binding None costs ``sqlite3`` a trip through its adapters (about half a
    microsecond each), and a row has about ten: a third of what writing a row cost."""
    one = f"({', '.join('NULL' if null else '?' for null in nulls)})"
    return _INSERT + ", ".join([one] * rows)


#: A message's text: its content, or the text of its parts when it is a list of parts.
_TEXT = (
    "CASE json_type(m.value, '$.content') WHEN 'array' THEN (SELECT group_concat(json_extract(p.value, "
    "'$.text'), ' ') FROM json_each(m.value, '$.content') p) ELSE json_extract(m.value, '$.content') END"
)
#: The prompt's text for the index: every message's text.
_INDEX = (
    f"INSERT INTO calls_fts (rowid, prompt, answer) SELECT c.id, (SELECT group_concat({_TEXT}, ' ') "
    "FROM json_each(c.request, '$.messages') m), c.answer FROM calls c WHERE c.id > ?"
)
#: What a table shows as the prompt: the last user message's text.
_LAST_USER = (
    f"(SELECT {_TEXT} FROM json_each(c.request, '$.messages') m "
    "WHERE json_extract(m.value, '$.role') = 'user' ORDER BY m.key DESC LIMIT 1)"
)
#: How each column a search returns is read: most are stored, the rest derived from the request.
_DERIVED = {
    "prompt": _LAST_USER,
    "messages": "json_extract(c.request, '$.messages')",
    "params": _PARAMS,
    "tools": "json_extract(c.request, '$.tools')",
}
_SELECT = ", ".join(_DERIVED.get(name, f"c.{name}") for name in COLUMNS)

#: A token as FTS5's unicode61 tokenizer sees one: letters and digits (the underscore separates).
_WORD = re.compile(r"[^\W_]+")
#: A filter (model, since) whose rows are fewer than this part of their id range is walked row by
#: row when text is searched too (see ``search``).
_SELECTIVE = 10
#: Error text kept per row: enough to read the cause, bounded against a gateway that echoes a page.
_ERROR_CHARS = 2000


#: A row as the caller's thread builds it: the ``calls`` columns in ``_INSERT``'s order, the last one
#: the cost (0.0: the call never reached a model; None: to be priced by the writer, see ``priced``).
Row = tuple[Any, ...]
#: Where ``row`` puts what ``priced`` reads: the models asked and answered, the token counts.
_MODEL, _ANSWERED, _INPUT, _OUTPUT = 1, 2, 10, 11


def row(
    call: Call,
    outcome: LLMResponse | BaseException,
    latency_s: float,
    source: Source,
    partial_chars: int,
    label: str | None,
    time: float,
    where: Where | None,
    pid: int,
) -> Row:
    """The ``calls`` row of one finished call, made on the caller's thread (see ``calllog``).

    Only strings, numbers and None: the tuple is one the garbage collector stops tracking, and the
    call's objects (the response, its dicts) are freed when the call ends instead of waiting in the
    queue, where every collection would walk them (that walking cost more than building the row).
    The cost is left to the writer, which prices a batch at once (``priced``)."""
    secret = call.key
    error: BaseException | None = None
    response: LLMResponse | None
    if isinstance(outcome, LLMResponse):
        response, state = outcome, "ok"
    else:
        error = outcome
        found = getattr(outcome, "response", None)
        response = found if isinstance(found, LLMResponse) else None
        state = "error" if isinstance(outcome, Exception) else "stopped"
    provenance = response.provenance if response is not None else None
    gateway = provenance.get("gateway") if provenance else None
    if gateway is None:  # a failure: no provenance record, so the gateway is named as one would name it
        from ._pipeline._provenance import gateway_of

        gateway = gateway_of(call.base_url)
    usage = response.usage if response is not None else None
    tool_calls = None
    if response is not None and response.tool_calls:
        tool_calls = redact(json.dumps([t.to_dict() for t in response.tool_calls]), secret)
    cost = None  # priced by the writer (``priced``)
    if state == "error" and response is None and not partial_chars:
        cost = 0.0  # never reached a model (refused, unreachable, a 4xx/5xx): it cost nothing
    return (
        time,
        call.model,
        response.model if response is not None else None,
        state,
        response.source if state == "ok" and response is not None else source,
        redact(call.content.decode("utf-8", "replace"), secret),
        int(call.stream),
        redact(response.content, secret) if response is not None else None,
        tool_calls,
        response.finish_reason if response is not None else None,
        usage.input_tokens if usage else None,
        usage.output_tokens if usage else None,
        usage.total_tokens if usage else None,
        round(latency_s * 1000, 3),
        type(error).__name__ if error is not None else None,
        getattr(error, "status_code", None) if error is not None else None,
        redact(str(error), secret)[:_ERROR_CHARS] if error is not None else None,
        call.request_hash(),  # the one provenance carries (worked out once per call)
        (response.request_id if response is not None else None) or getattr(error, "request_id", None),
        gateway,
        label,
        *(where or (None, None, None)),
        pid,
        __version__,
        cost,
    )


def priced(rows: Iterable[Row], prices: PriceTable | None) -> list[Row]:
    """``rows`` with their cost in dollars at ``prices`` where the gateway counted the tokens and a
    price is known (else the cost stays None: unknown, not free); rows with nothing to price are
    passed on as they are."""
    if prices is None:
        return list(rows)
    out = []
    for one in rows:
        if one[-1] is None and one[_INPUT] is not None and one[_OUTPUT] is not None:
            price = prices.get(one[_MODEL], one[_ANSWERED])
            if price is not None:
                one = (*one[:-1], float(price.cost(one[_INPUT], one[_OUTPUT])))
        out.append(one)
    return out


def write(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Write ``rows`` (see ``row``) and index their text, in one transaction (waits for other writers
    up to the connection's busy timeout; raises ``sqlite3.Error`` with nothing written if it cannot)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM calls").fetchone()
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            # Runs of rows with the same None columns (all of them, when every call was answered),
            # in their order: the ids are the order of the calls.
            for nulls, same in groupby(rows[start : start + _ROWS_PER_INSERT], key=_nulls):
                run = list(same)
                values = compress(chain.from_iterable(run), cycle([not null for null in nulls]))
                conn.execute(_insert(nulls, len(run)), list(values))
        conn.execute(_INDEX, (last,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def match_query(text: str) -> str:
    """Free text as an FTS5 query: its words (runs of letters and digits, split as FTS5's unicode61
    tokenizer splits them, so "e-mail" is "e" and "mail"), each quoted, all of which must appear;
    punctuation is never query syntax. Raises ``ValueError`` for text without a word."""
    words = _WORD.findall(text)
    if not words:
        raise ValueError(f"the search text {text!r} has no word to look for")
    return " ".join(f'"{w}"' for w in words)


def search(
    conn: sqlite3.Connection,
    *,
    query: str | None = None,
    model: str | None = None,
    since: float | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """Rows matching the text ``query`` (prompt or answer), the ``model`` asked and ``since`` (a Unix
    time), newest first, at most ``limit`` (None: all).

    The ids are found first and the columns read for those rows only. Text with a filter is found
    one of two ways, so that neither a common word nor a rare model makes it slow: the filter's rows
    are counted first (an index range); none means no answer at all, and their id range bounds the
    text search. When they are few for their range (a rare model, a short time), they are walked
    and each checked against the text's matches; otherwise the text's matches are walked newest
    first, which meets enough of the filter's rows soon.
    """
    filters: list[str] = []
    args: list[Any] = []
    if model is not None:
        filters.append("c.model = ?")
        args.append(model)
    if since is not None:
        filters.append("c.time >= ?")
        args.append(since)
    where = " AND ".join(filters)
    cap = " LIMIT ?" if limit is not None else ""
    capped = [limit] if limit is not None else []
    if query is None:
        ids = f"SELECT c.id FROM calls c{' WHERE ' + where if where else ''} ORDER BY c.id DESC{cap}"
        found = [*args, *capped]
    elif not filters:
        ids = f"SELECT rowid FROM calls_fts WHERE calls_fts MATCH ? ORDER BY rowid DESC{cap}"
        found = [match_query(query), *capped]
    else:
        count, low, high = conn.execute(
            f"SELECT count(*), min(id), max(id) FROM calls c WHERE {where}", args
        ).fetchone()
        if not count:
            return []
        text = "SELECT rowid FROM calls_fts WHERE calls_fts MATCH ? AND rowid BETWEEN ? AND ?"
        if count * _SELECTIVE < high - low + 1:  # few rows in their range: walk them
            ids = f"SELECT c.id FROM calls c WHERE {where} AND c.id IN ({text}) ORDER BY c.id DESC{cap}"
            found = [*args, match_query(query), low, high, *capped]
        else:  # many: walk the text's matches, newest first
            ids = (
                "SELECT f.rowid FROM calls_fts f JOIN calls c ON c.id = f.rowid WHERE calls_fts MATCH ? "
                f"AND f.rowid BETWEEN ? AND ? AND {where} ORDER BY f.rowid DESC{cap}"
            )
            found = [match_query(query), low, high, *args, *capped]
    sql = f"SELECT {_SELECT} FROM calls c WHERE c.id IN ({ids}) ORDER BY c.id DESC"
    return rows_of(conn.execute(sql, found).fetchall())


def rows_of(found: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Result tuples as dicts by ``COLUMNS``."""
    return [dict(zip(COLUMNS, values, strict=True)) for values in found]


def count(conn: sqlite3.Connection) -> int:
    """Rows in the file."""
    (rows,) = conn.execute("SELECT count(*) FROM calls").fetchone()
    return int(rows)
