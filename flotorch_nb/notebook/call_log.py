"""The call log in a notebook: ``%flotorch log on|off``, ``%flotorch logs``, and which cell made a call.

``watch_cells`` (run by ``%load_ext flotorch_nb``) tells the call log, before each cell runs, the
notebook it belongs to (when the frontend says: JupyterLab/Notebook's ``__session__`` or
``JPY_SESSION_NAME``, VS Code's ``__vsc_ipynb_file__``), the cell's id and its execution count, and
clears it after the cell, so a call the chat panel makes between cells has no cell. ``log`` and
``logs`` are ``%flotorch`` subcommands as plain functions of the session (see ``commands``): a bad
option is a ``ConfigurationError`` that the magic turns into a ``UsageError``.

The table ``%flotorch logs`` shows is built from text that came from a model or a user, so every cell
is escaped (``_render.html_table``) and long prompts and answers are cut; the full rows are in
``flotorch_nb.logs()`` and ``--export``. Pure: no IPython import (the shell is handed in).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import _render, calllog
from .._errors import ConfigurationError
from .._text import one_line
from .session import Session

__all__ = ["LOGS_USAGE", "LogTable", "log", "logs", "watch_cells"]

#: Characters of a prompt, an answer or an error a table cell shows.
_CUT = 60
LOGS_USAGE = "logs [-q TEXT] [-n N] [-m MODEL] [--since TIME] [--export PATH.jsonl]"
_SHOWN = (
    "#",
    "time (UTC)",
    "model",
    "outcome",
    "source",
    "tokens",
    "latency",
    "cell",
    "prompt",
    "answer / error",
)


# -- which cell ----------------------------------------------------------------------------------------
def _notebook(ip: Any) -> str | None:
    found = ip.user_ns.get("__vsc_ipynb_file__") or ip.user_ns.get("__session__")
    return str(found) if found else os.environ.get("JPY_SESSION_NAME") or None


def _before(ip: Any, info: Any) -> None:
    count: int | None = None
    if getattr(info, "store_history", False):
        import IPython  # loaded already: the shell calling us is IPython's

        # IPython 9 numbers the cell before pre_run_cell, IPython 8 after the cell has run.
        count = ip.execution_count - 1 if IPython.version_info[0] >= 9 else ip.execution_count
    calllog.set_cell((_notebook(ip), getattr(info, "cell_id", None), count))


def _after(result: Any = None) -> None:
    calllog.set_cell(None)


def watch_cells(ip: Any) -> None:
    """Have the call log know the cell each call is made in (safe to call again: ``%reload_ext``)."""
    events = ip.events
    for name, callback in (("pre_run_cell", _before_cell(ip)), ("post_run_cell", _after)):
        for registered in list(events.callbacks[name]):
            if getattr(registered, "__flotorch_call_log__", False):
                events.unregister(name, registered)
        events.register(name, callback)


def _before_cell(ip: Any) -> Any:
    def before(info: Any) -> None:
        _before(ip, info)

    before.__flotorch_call_log__ = True  # type: ignore[attr-defined]
    return before


_after.__flotorch_call_log__ = True  # type: ignore[attr-defined]


# -- %flotorch log ---------------------------------------------------------------------------------------
def log(session: Session, *words: str) -> str:
    """``log``: where calls are logged; ``log on [PATH]``: log every call of the kernel to PATH
    (checked now; also ``FLOTORCH_LOG`` for processes started later); ``log off``: stop."""
    if not words:
        current = calllog.active()
        if current is None:
            return "call log: off (%flotorch log on [PATH] records every call of this kernel)"
        return f"call log: {current.path} ({len(current)} calls; {current.dropped} could not be written)"
    action, *rest = words
    if action == "off" and not rest:
        stopped = calllog.disable()
        session.setenv(calllog.ENV_LOG, None)
        return f"call log off{f': {stopped.path} keeps what was logged' if stopped else ''}"
    if action != "on" or len(rest) > 1:
        raise ConfigurationError("usage: %flotorch log [on [PATH]|off]")
    try:
        started = calllog.enable(rest[0] if rest else None)
    except calllog.CallLogError as exc:
        raise ConfigurationError(str(exc)) from None
    session.setenv(calllog.ENV_LOG, str(started.path))
    return f"call log on: every call of this kernel is recorded in {started.path} (never the key)"


# -- %flotorch logs --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the kernel
        raise ConfigurationError(f"{message}; usage: %flotorch {LOGS_USAGE}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%flotorch logs", add_help=False)
    parser.add_argument("-q", "--query", help="words that must all be in the prompt or the answer")
    parser.add_argument("-n", "--limit", type=int, default=20, help="rows shown (newest first)")
    parser.add_argument("-m", "--model", help="only calls to this model")
    parser.add_argument("--since", help="only calls at or after this ISO 8601 time")
    parser.add_argument("--export", help="write the matching calls (all, oldest first) to this .jsonl file")
    return parser


def logs(session: Session, *words: str) -> Any:
    """``logs [-q TEXT] [-n N] [-m MODEL] [--since TIME] [--export PATH]``: the newest logged calls
    as a table, or all that match written to a JSON-lines file."""
    options = _parser().parse_args(list(words))
    if options.limit < 1:
        raise ConfigurationError(f"-n must be 1 or more, got {options.limit}")
    try:
        if options.export:
            target = Path(options.export).expanduser()
            written = calllog.export(target, options.query, model=options.model, since=options.since)
            return f"exported {written} calls to {target}"
        rows = calllog.search_log(
            options.query, model=options.model, since=options.since, limit=options.limit
        )
    except calllog.CallLogError as exc:
        raise ConfigurationError(str(exc)) from None
    return LogTable(rows)._repr_mimebundle_()


def _cut(value: object) -> str:
    return one_line(str(value), _CUT) if value is not None else ""


class LogTable:
    """Logged calls (``calllog.search_log`` rows) as a compact, escaped table, newest first."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = list(rows)

    def _cells(self) -> list[tuple[str, ...]]:
        cells: list[tuple[str, ...]] = []
        for number, row in enumerate(self.rows, 1):
            when = datetime.fromtimestamp(row["time"], UTC).strftime("%Y-%m-%d %H:%M:%S")
            tokens = "" if row["total_tokens"] is None else str(row["total_tokens"])
            cell = "" if row["execution_count"] is None else f"[{row['execution_count']}]"
            said = row["answer"]
            if row["outcome"] != "ok":
                said = f"{row['error_type'] or row['outcome']}: {row['error_message'] or ''}"
            cells.append(
                (
                    str(number),
                    when,
                    str(row["model"]),
                    str(row["outcome"]),
                    str(row["source"]),
                    tokens,
                    f"{row['latency_ms']:.0f} ms",
                    cell,
                    _cut(row["prompt"]),
                    _cut(said),
                )
            )
        return cells

    def as_text(self) -> str:
        """A fixed-width table."""
        if not self.rows:
            return "no logged calls match"
        return _render.text_table([_SHOWN, *self._cells()])

    def as_html(self) -> str:
        """The table as HTML, every cell escaped."""
        if not self.rows:
            return '<div class="flotorch-logs">no logged calls match</div>'
        return _render.html_table([_SHOWN, *self._cells()], "flotorch-logs")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.as_text(), "text/html": self.as_html()}
