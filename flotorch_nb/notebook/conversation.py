"""One conversation model for ``%%flotorch`` and the chat panel: turns, the history rule, frozen views.

The session keeps the ``%%flotorch`` conversation and every ``ChatPanel`` keeps its own, and both are
a ``Conversation`` of ``Turn``\\ s, so one rule decides what goes back to the model, and one set of
views shows and exports them (the panel's static transcript, ``%flotorch history``, both exports).

History rule: only turns that completed (``status == "done"``) are sent back to the model. A turn that
failed or was stopped stays visible, clearly marked, but the model never sees half an answer or a
question it never answered.

Text is stored as it came in; every view passes it through ``_render`` / ``utf8_safe``, so a lone
surrogate in a prompt or an answer can never make a display or an export fail. Pure: no IPython, no
widgets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from .. import _render
from .._records import output_metadata
from .._text import utf8_safe
from .ledger import LedgerEntry, Totals

if TYPE_CHECKING:
    from .._response import LLMResponse
    from ..tools import ToolRun

__all__ = ["Conversation", "Status", "Turn"]

Status = Literal["running", "done", "stopped", "error"]


@dataclass(slots=True, eq=False)
class Turn:
    """One question and its answer (possibly partial, failed or still arriving)."""

    user: str
    model: str
    status: Status = "running"
    error: str | None = None
    #: The answer, once the turn is done (its ``assistant_message()`` is what history sends back).
    response: LLMResponse | None = None
    #: Set when the turn ends: the answer's footer, or for a stopped/failed turn what it cost.
    footer: _render.Footer | None = None
    #: The answer's provenance record (``LLMResponse.provenance``), set by the surface that asked.
    provenance: dict[str, Any] | None = None
    #: The tool calls of a turn that ran tools or an agent (``tools._cards.CardData``), shown as cards.
    cards: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    # Deltas are appended, joined only when read: ``reply += delta`` on an attribute copies the whole
    # reply for every delta, which is quadratic in the answer's length.
    _pieces: list[str] = field(default_factory=list, repr=False)
    _html: str | None = field(default=None, repr=False)

    @property
    def reply(self) -> str:
        """The answer so far."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    @reply.setter
    def reply(self, text: str) -> None:
        self._pieces = [text] if text else []
        self._html = None

    def append(self, delta: str) -> None:
        """Add a streamed piece of the answer."""
        self._pieces.append(delta)
        self._html = None

    def finish(self, response: LLMResponse, spent: LedgerEntry | None = None) -> None:
        """Record a completed answer: its full text and footer (with the ledger's estimate when the
        gateway sent no usage, and its cost, so the footer shows what the budgets counted)."""
        self.reply = response.content
        self.response = response
        self.status = "done"
        footer = response.footer(default_model=self.model)
        if spent is not None:
            footer = replace(footer, cost=spent.cost)
            if not footer.usage_known:
                footer = replace(footer, total_tokens=spent.total_tokens)
        self.footer = footer

    def finish_run(self, run: ToolRun) -> None:
        """Record a finished tool run: its final answer, the footer of every step (``run_footer``) and
        the final answer's provenance."""
        from ..tools._cards import run_footer

        if run.response is not None:
            self.finish(run.response)
            self.provenance = run.response.provenance
        self.footer = run_footer(run, self.model)  # every step's tokens, not the last answer's

    def end(
        self, status: Literal["stopped", "error"], error: str | None = None, spent: LedgerEntry | None = None
    ) -> None:
        """End without a complete answer; what arrived so far is kept, and ``spent`` (the ledger's
        entry for the call, if it was sent) says what it cost."""
        self.status = status
        self.error = error
        if spent is not None:
            self.footer = spent.footer()
        else:
            self.footer = _render.Footer(
                self.model, usage_known=False, latency_s=time.perf_counter() - self.started
            )

    def assistant_message(self) -> dict[str, Any]:
        """The reply as a message for the next request's history (tool calls included)."""
        if self.response is not None:
            return self.response.assistant_message()
        return {"role": "assistant", "content": self.reply}

    @property
    def meta_text(self) -> str:
        """The per-reply line: tokens, latency, model, offline badge; a mark if the turn did not finish."""
        if self.status == "running" or self.footer is None:
            return utf8_safe(f"{self.model} · answering…")
        return _render.footer_text(self.footer.with_note(self._note))

    @property
    def meta_html(self) -> str:
        """``meta_text`` as HTML, built from escaped values only."""
        if self.status == "running" or self.footer is None:
            return f'<div class="flotorch-footer">{_render.escape_text(self.meta_text)}</div>'
        return _render.footer_html(self.footer.with_note(self._note))

    @property
    def _note(self) -> str | None:
        return None if self.status == "done" else self.status.upper()

    def reply_html(self) -> str:
        """The answer so far, rendered and sanitized (never the raw model text); cached once ended."""
        if self._html is not None:
            return self._html
        html = _render.render_markdown(self.reply)
        if self.status != "running":
            self._html = html
        return html

    def user_html(self) -> str:
        """The question, escaped (shown as typed, never as Markdown or HTML)."""
        return f"<b>You:</b> <span style='white-space:pre-wrap'>{_render.escape_text(self.user)}</span>"


class Conversation:
    """The turns of one conversation, oldest first, its system prompt, and the tokens it spent."""

    def __init__(self, system: str | None = None) -> None:
        #: The system prompt last sent with this conversation (None: none).
        self.system = system
        self.turns: list[Turn] = []
        #: Every counted turn's tokens; kept by ``clear()``: tokens spent are spent.
        self.totals = Totals()

    def __len__(self) -> int:
        return len(self.turns)

    def messages(self, user: str, system: str | None = None) -> list[dict[str, Any]]:
        """The request for a new question: ``system``, the completed turns, then ``user``."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        for turn in self.turns:
            if turn.status == "done":
                messages.append({"role": "user", "content": turn.user})
                messages.append(turn.assistant_message())
        messages.append({"role": "user", "content": user})
        return messages

    def start(self, user: str, model: str) -> Turn:
        """Append a new running turn."""
        return self.add(Turn(user=user, model=model))

    def add(self, turn: Turn) -> Turn:
        """Append ``turn`` (a running one, or one that already ended)."""
        self.turns.append(turn)
        return turn

    def count(self, turn: Turn) -> None:
        """Add an ended turn's tokens (its footer's) to the totals."""
        footer = turn.footer
        if footer is not None and (footer.usage_known or footer.total_tokens):
            self.totals = self.totals.add(footer)

    def clear(self) -> int:
        """Forget the turns (the totals stay); return how many there were."""
        count = len(self.turns)
        self.turns.clear()
        return count

    # -- frozen views -------------------------------------------------------------------------------
    def _body_html(self) -> str:
        parts = []
        if self.system:
            parts.append(
                f'<div class="flotorch-static-system"><b>System:</b> {_render.escape_text(self.system)}</div>'
            )
        for turn in self.turns:
            parts.append(f'<div class="flotorch-static-user">{turn.user_html()}</div>')
            if turn.cards:
                from ..tools._cards import cards_html

                parts.append(cards_html(turn.cards))
            parts.append(
                '<div class="flotorch-static-assistant"><b>Assistant:</b>'
                f"{turn.reply_html()}{turn.meta_html}</div>"
            )
            if turn.error:
                parts.append(f'<div class="flotorch-static-error">{_render.escape_text(turn.error)}</div>')
        return "".join(parts) or "<p>(empty conversation)</p>"

    def transcript_html(self) -> str:
        """The static copy a chat panel leaves in the notebook: collapsed, sanitized, no widgets needed."""
        totals = _render.escape_text(self.totals.describe("reply", "replies"))
        return (
            '<details class="flotorch-static-transcript"><summary>Chat transcript (static copy) — '
            f"{totals}</summary>{self._body_html()}</details>"
        )

    def history_html(self) -> str:
        """The conversation shown in full (``%flotorch history``), sanitized."""
        return f'<div class="flotorch-history">{self._body_html()}</div>'

    def transcript_text(self) -> str:
        """The conversation as plain text (the ``text/plain`` of the static copy)."""
        lines = [f"Chat transcript — {self.totals.describe('reply', 'replies')}"]
        if self.system:
            lines += ["", f"System: {self.system}"]
        for turn in self.turns:
            lines += ["", f"You: {turn.user}"]
            if turn.cards:
                from ..tools._cards import card_text

                lines += [card_text(card) for card in turn.cards]
            lines += [f"Assistant: {turn.reply}", f"  [{turn.meta_text}]"]
            if turn.error:
                lines.append(f"  {turn.error}")
        return utf8_safe("\n".join(lines))

    def transcript_bundle(self) -> dict[str, str]:
        """The static copy as a display mimebundle (HTML + plain text)."""
        return {"text/plain": self.transcript_text(), "text/html": self.transcript_html()}

    def provenance(self) -> list[dict[str, Any]]:
        """The provenance records of the answered turns, oldest first."""
        return [turn.provenance for turn in self.turns if turn.provenance is not None]

    def transcript_metadata(self) -> dict[str, Any]:
        """The static copy's output metadata: the answers' provenance, saved with the notebook."""
        return output_metadata(self.provenance())

    def to_markdown(
        self, *, title: str = "FloTorch chat", system_prompt: str | None = None, totals: bool = True
    ) -> str:
        """The conversation as a Markdown document, answers verbatim (they are Markdown already).

        ``system_prompt`` defaults to the conversation's own; ``totals`` adds the token line under the
        title. The file holds model output as is: render it only where Markdown is sanitized
        (JupyterLab's Markdown preview is; ``_render.render_markdown`` is).
        """
        system = self.system if system_prompt is None else system_prompt
        out = [f"# {title}", ""]
        if totals:
            out += [f"_{self.totals.describe('reply', 'replies')}_", ""]
        if system:
            out += ["**System prompt:**", "", _quote(system), ""]
        for turn in self.turns:
            out += ["## You", "", turn.user, "", f"## Assistant ({turn.model})", ""]
            out += [turn.reply or "_(no text)_", "", f"_{turn.meta_text}_", ""]
            if turn.error:
                out += [f"> **Error:** {turn.error}", ""]
        return utf8_safe("\n".join(out).rstrip("\n") + "\n")


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
