"""The chat panel's logic without widgets: the conversation, how a turn runs, and its frozen views.

``widgets.ChatPanel`` owns the widgets and the running task; this module owns what the conversation
*is* (the turns, what goes back to the model as history, the token totals), how one turn is asked
(``run_turn``), the three frozen views of it (sanitized HTML for the static transcript, plain text,
Markdown for export), the link to the notebook session (client, ledger, budget), and two small
event-loop helpers (``Throttle``, ``EnterToSend``). Keeping it free of ipywidgets keeps ``widgets.py``
small and these rules readable on their own.

History rule: only turns that completed (``status == "done"``) are sent back to the model. A turn that
failed or was stopped stays visible, clearly marked, but the model never sees half an answer or a
question it never answered.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import _render
from .._errors import InvalidRequestError

if TYPE_CHECKING:
    from .._response import LLMResponse
    from ..llm import FlotorchLLM

__all__ = [
    "ChatBusyError", "Conversation", "EnterToSend", "Throttle", "Totals", "Turn", "check_budget",
    "check_model", "error_line", "export_path", "record_usage", "run_turn", "session_client", "totals_line",
]  # fmt: skip

Status = Literal["running", "done", "stopped", "error"]
_MAX_ERROR_CHARS = 400


class ChatBusyError(RuntimeError):
    """A reply is still running; the panel answers one question at a time."""


def check_model(value: object, what: str) -> str:
    """A model id, stripped; ``InvalidRequestError`` for anything else."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{what} must be a non-empty string, not {value!r}")
    return value.strip()


def error_line(exc: BaseException) -> str:
    """One readable line for an exception: its class and message, whitespace collapsed, bounded."""
    message = re.sub(r"\s+", " ", str(exc)).strip() or "no details"
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {message}"


@dataclass(slots=True)
class Turn:
    """One question and its answer (possibly partial, failed or still arriving)."""

    user: str
    model: str
    reply: str = ""
    status: Status = "running"
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    # Plain values for ``_render.footer_*`` once the answer is complete (or the turn ended otherwise).
    footer: dict[str, Any] | None = None

    def finish(self, response: LLMResponse) -> None:
        """Record a completed answer: its full text and the footer values."""
        self.reply = response.content
        self.status = "done"
        self.footer = response.footer_fields(default_model=self.model)

    def end(self, status: Literal["stopped", "error"], error: str | None = None) -> None:
        """End without a complete answer; what arrived so far is kept, tokens are unknown."""
        self.status = status
        self.error = error
        self.footer = {
            "model": self.model,
            "input_tokens": 0,
            "output_tokens": 0,
            "total_tokens": 0,
            "usage_known": False,
            "latency_s": time.perf_counter() - self.started,
        }

    @property
    def meta_text(self) -> str:
        """The per-reply line: tokens, latency, model, offline badge; a mark if the turn did not finish."""
        if self.status == "running":
            return f"{self.model} · answering…"
        assert self.footer is not None
        return _render.footer_text(**self.footer, note=self._note)

    @property
    def meta_html(self) -> str:
        """``meta_text`` as HTML, built from escaped values only."""
        if self.status == "running" or self.footer is None:
            return f'<div class="flotorch-footer">{_render.escape_text(self.meta_text)}</div>'
        return _render.footer_html(**self.footer, note=self._note)

    @property
    def _note(self) -> str | None:
        return None if self.status == "done" else self.status.upper()

    def reply_html(self) -> str:
        """The answer so far, rendered and sanitized (never the raw model text)."""
        return _render.render_markdown(self.reply)

    def user_html(self) -> str:
        """The question, escaped (shown as typed, never as Markdown or HTML)."""
        return f"<b>You:</b> <span style='white-space:pre-wrap'>{_render.escape_text(self.user)}</span>"


@dataclass(frozen=True, slots=True)
class Totals:
    """Token sums over the completed replies of a conversation."""

    replies: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    unknown_usage: int = 0

    @property
    def text(self) -> str:
        """``3 replies · in 36 · out 102 · total 138 tokens`` (this chat's part of ``totals_line``)."""
        if not self.replies:
            return "no replies yet"
        noun = "reply" if self.replies == 1 else "replies"
        line = (
            f"{self.replies} {noun} · in {self.input_tokens} · out {self.output_tokens}"
            f" · total {self.total_tokens} tokens"
        )
        if self.unknown_usage:
            line += f" ({self.unknown_usage} with unknown usage)"
        return line


class Conversation:
    """The turns of one chat, oldest first."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.totals = Totals()

    def start(self, user: str, model: str) -> Turn:
        """Append a new running turn."""
        turn = Turn(user=user, model=model)
        self.turns.append(turn)
        return turn

    def count(self, turn: Turn) -> None:
        """Add a completed turn's tokens to the totals."""
        footer = turn.footer or {}
        known = bool(footer.get("usage_known"))
        t = self.totals
        self.totals = Totals(
            t.replies + 1,
            t.input_tokens + footer.get("input_tokens", 0),
            t.output_tokens + footer.get("output_tokens", 0),
            t.total_tokens + footer.get("total_tokens", 0),
            t.unknown_usage + (not known),
        )

    def clear(self) -> None:
        """Forget the turns (the totals stay: tokens spent are spent)."""
        self.turns.clear()

    def messages(self, user: str, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The request for a new question: system prompt, completed turns, then ``user``."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        for turn in self.turns:
            if turn.status == "done":
                messages.append({"role": "user", "content": turn.user})
                messages.append({"role": "assistant", "content": turn.reply})
        messages.append({"role": "user", "content": user})
        return messages

    # -- frozen views -------------------------------------------------------------------------
    def transcript_html(self) -> str:
        """The static copy left in the notebook: collapsed, sanitized, readable without widgets."""
        parts = []
        for turn in self.turns:
            parts.append(f'<div class="flotorch-static-user">{turn.user_html()}</div>')
            parts.append(
                '<div class="flotorch-static-assistant"><b>Assistant:</b>'
                f"{turn.reply_html()}{turn.meta_html}</div>"
            )
            if turn.error:
                parts.append(f'<div class="flotorch-static-error">{_render.escape_text(turn.error)}</div>')
        body = "".join(parts) or "<p>(empty conversation)</p>"
        totals = _render.escape_text(self.totals.text)
        return (
            '<details class="flotorch-static-transcript"><summary>Chat transcript (static copy) — '
            f"{totals}</summary>{body}</details>"
        )

    def transcript_text(self) -> str:
        """The conversation as plain text (the ``text/plain`` of the static copy)."""
        lines = [f"Chat transcript — {self.totals.text}"]
        for turn in self.turns:
            lines += ["", f"You: {turn.user}", f"Assistant: {turn.reply}", f"  [{turn.meta_text}]"]
            if turn.error:
                lines.append(f"  {turn.error}")
        return "\n".join(lines)

    def transcript_bundle(self) -> dict[str, str]:
        """The static copy as a display mimebundle (HTML + plain text)."""
        return {"text/plain": self.transcript_text(), "text/html": self.transcript_html()}

    def to_markdown(self, *, system_prompt: str | None = None, title: str = "FloTorch chat") -> str:
        """The conversation as a Markdown document, answers verbatim (they are Markdown already).

        The file holds model output as is: render it only where Markdown is sanitized (JupyterLab's
        Markdown preview is; ``_render.render_markdown`` is).
        """
        out = [f"# {title}", "", f"_{self.totals.text}_", ""]
        if system_prompt:
            out += ["**System prompt:**", "", _quote(system_prompt), ""]
        for turn in self.turns:
            out += ["## You", "", turn.user, "", f"## Assistant ({turn.model})", ""]
            out += [turn.reply or "_(no text)_", "", f"_{turn.meta_text}_", ""]
            if turn.error:
                out += [f"> **Error:** {turn.error}", ""]
        return "\n".join(out).rstrip("\n") + "\n"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


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
    messages: list[dict[str, str]],
    *,
    stream: bool,
    params: Mapping[str, Any],
    on_delta: Callable[[], None],
) -> LLMResponse:
    """Ask ``client``, growing ``turn.reply`` as text arrives (``on_delta`` after each piece).

    Cancelling the calling task (Stop) closes the HTTP stream: ``async with`` the stream.
    """
    if stream:
        chat = client.astream(messages, **params, model=turn.model)
        async with chat:
            async for delta in chat:
                turn.reply += delta
                on_delta()
        response = chat.response
    else:
        response = await client.ainvoke(messages, **params, model=turn.model)
    turn.finish(response)
    return response


# -- the notebook session (client, ledger, budget), shared with %%flotorch -------------------------
def session_client() -> FlotorchLLM:
    """The session's client: ``%flotorch`` overrides, else ``FLOTORCH_*`` (built once, cached)."""
    from .session import get_session

    return get_session().client()


def check_budget() -> None:
    """Raise ``BudgetExceededError`` before any I/O if the session's token budget is spent."""
    from .session import get_session

    get_session().check_budget()


def record_usage(response: LLMResponse) -> None:
    """Count an answer in the session's usage ledger."""
    from .session import get_session

    get_session().record(response, "chat")


def totals_line(chat: Totals) -> str:
    """The panel's totals: this chat's, then the session's (``%%flotorch`` and every panel), then the budget.

    ``This chat: 2 replies · in 30 · out 80 · total 110 tokens — Session: 5 calls · total 412 tokens``
    """
    from .session import get_session

    session = get_session()
    spent = session.ledger.totals
    if spent.calls:
        line = f"{spent.calls} {'call' if spent.calls == 1 else 'calls'} · total {spent.total_tokens} tokens"
        if spent.unknown_usage:
            line += f" ({spent.unknown_usage} with unknown usage)"
    else:
        line = "no calls yet"
    if session.budget is not None:
        line += f" · budget {spent.total_tokens} of {session.budget} tokens used"
    return f"This chat: {chat.text} — Session: {line}"


# -- event-loop helpers ------------------------------------------------------------------------------
class Throttle:
    """Call ``fn`` at most once per ``interval`` seconds; a call in between is deferred, never lost.

    Re-rendering Markdown and sanitizing on every streamed token would cost more than the stream.
    """

    def __init__(self, fn: Callable[[], None], interval: float) -> None:
        self._fn = fn
        self._interval = interval
        self._last = float("-inf")
        self._handle: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        if self._handle is not None:
            return  # already due
        loop = asyncio.get_running_loop()
        wait = self._last + self._interval - loop.time()
        if wait <= 0:
            self._run()
        else:
            self._handle = loop.call_later(wait, self._run)

    def _run(self) -> None:
        self._handle = None
        self._last = asyncio.get_running_loop().time()
        self._fn()

    def cancel(self) -> None:
        """Drop a deferred call (the caller renders the final state itself)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


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
