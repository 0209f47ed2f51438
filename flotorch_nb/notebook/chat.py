"""The chat panel's logic without widgets: how one turn is asked, the totals line, and Enter handling.

``widgets.ChatPanel`` owns the widgets and the running task; this module owns how a turn is asked
(``run_turn``: labelled ``chat`` for the client's hooks, so the session's budget refuses it before
sending and its ledger counts it, also when the reply is stopped or fails), the panel's totals line,
and ``EnterToSend``. The conversation itself is ``conversation.Conversation``, the same model the
``%%flotorch`` magic uses; the redraw pacing is ``pacing.Throttle``. Keeping this free of
ipywidgets keeps ``widgets.py`` small and these rules readable on their own.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._pipeline._hooks import call_label
from .._text import one_line
from .ledger import LedgerEntry, Totals, capture

if TYPE_CHECKING:
    from .._response import LLMResponse
    from ..llm import FlotorchLLM
    from .conversation import Turn
    from .session import Session

__all__ = [
    "ChatBusyError",
    "EnterToSend",
    "error_line",
    "export_path",
    "run_turn",
    "totals_line",
    "turn_calls",
]

_MAX_ERROR_CHARS = 400


class ChatBusyError(RuntimeError):
    """A reply is still running; the panel answers one question at a time."""


def error_line(exc: BaseException) -> str:
    """One readable line for an exception: its class and message, whitespace collapsed, bounded."""
    return f"{type(exc).__name__}: {one_line(str(exc), _MAX_ERROR_CHARS) or 'no details'}"


def export_path(directory: Path, now: _dt.datetime | None = None) -> Path:
    """``flotorch-chat-<timestamp>.md`` in ``directory``, numbered rather than overwriting a file."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    path, n = directory / f"flotorch-chat-{stamp}.md", 1
    while path.exists():
        n += 1
        path = directory / f"flotorch-chat-{stamp}-{n}.md"
    return path


async def run_turn(
    client: FlotorchLLM,
    turn: Turn,
    messages: list[dict[str, Any]],
    *,
    stream: bool,
    params: Mapping[str, Any],
    on_delta: Callable[[], None],
) -> LLMResponse:
    """Ask ``client``, growing ``turn``'s reply as text arrives (``on_delta`` after each piece).

    The turn ends ``done``, ``stopped`` (the task was cancelled: Stop) or ``error`` (the exception is
    re-raised), its footer saying what the call cost as the ledger recorded it (an estimate for a
    stopped reply), an answered turn with its provenance. Cancelling closes the HTTP stream:
    ``async with`` the stream.
    """
    with turn_calls(turn) as spent:
        if stream:
            chat = client.astream(messages, **params, model=turn.model)
            async with chat:
                async for delta in chat:
                    turn.append(delta)
                    on_delta()
            response = chat.response
        else:
            response = await client.ainvoke(messages, **params, model=turn.model)
    turn.finish(response, _last(spent))
    turn.provenance = response.provenance
    return response


@contextmanager
def turn_calls(turn: Turn) -> Iterator[list[LedgerEntry]]:
    """The calls of one panel turn (a reply, a tool run, an agent run), yielding the ledger's entries
    for them: labelled ``chat`` for the client's hooks; the turn ends ``stopped`` if its task is
    cancelled (Stop) or ``error`` with the error's line if it fails, with what the last call cost,
    and the exception goes on."""
    with call_label("chat"), capture() as spent:
        try:
            yield spent
        except asyncio.CancelledError:
            turn.end("stopped", spent=_last(spent))
            raise
        except Exception as exc:
            turn.end("error", error_line(exc), _last(spent))
            raise


def _last(entries: list[LedgerEntry]) -> LedgerEntry | None:
    return entries[-1] if entries else None


def totals_line(chat: Totals, session: Session) -> str:
    """The panel's totals: this chat's, then the session's (``%%flotorch``, every panel, user code),
    then the budget.

    ``This chat: 2 replies · in 30 · out 80 · total 110 tokens — Session: 5 calls · total 412 tokens``
    """
    spent = session.ledger.totals
    if spent.calls:
        line = f"{spent.calls} {'call' if spent.calls == 1 else 'calls'} · total {spent.total_tokens} tokens"
        if spent.estimated:
            line += f" ({spent.estimated} estimated)"
        if spent.cost_text:
            line += f" · {spent.cost_text}"
    else:
        line = "no calls yet"
    if session.budget is not None:
        line += f" · budget {spent.total_tokens} of {session.budget} tokens used"
    return f"This chat: {chat.describe('reply', 'replies')} — Session: {line}"


class EnterToSend:
    """Make Enter in an ipywidgets ``Text(continuous_update=False)`` send exactly once.

    The Text view sends a custom ``{"event": "submit"}`` message on Enter, *then* syncs the value (its
    ``change`` event fires after the keypress), and the frontend may hold that sync back while an
    earlier one is unanswered. So the kernel usually learns the text just after the submit. After a
    submit we therefore send on the next non-empty value, or after ``grace`` seconds if none comes
    (the text had already been synced, e.g. by a blur). A value change without a submit (a blur) never
    sends. ``Text.on_submit`` would be simpler but is deprecated in ipywidgets 8 and reads the value
    too early.
    """

    def __init__(self, send: Callable[[], None], grace: float) -> None:
        self._send = send
        self._grace = grace
        self._pending = False
        self._handle: asyncio.TimerHandle | None = None

    def submitted(self) -> None:
        """Enter was pressed."""
        self._pending = True
        if self._handle is not None:
            self._handle.cancel()
        try:
            self._handle = asyncio.get_running_loop().call_later(self._grace, self._fire)
        except RuntimeError:  # no loop to wait on: the value we have is all there is
            self._fire()

    def value_changed(self, value: str) -> None:
        """The box's value arrived from the frontend."""
        if self._pending and value.strip():
            self._fire()

    def _fire(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._pending:
            self._pending = False
            self._send()
