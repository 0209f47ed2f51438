"""Tool cards: one call of a tool loop (or of a pydantic-ai agent run) as sanitized HTML and plain text.

One renderer for every surface: a ``ToolRun``'s own display (``%%flotorch --tools``, ``await
llm.arun(...)`` as a cell's last line), the magic's live preview, and the chat panel's transcript and
static copy. A card says the tool's name, its arguments, the result or the error (a denial included),
how long it took and whether a person approved it; a long result is folded in ``<details>``.

Tool results are untrusted (a tool may return a web page, and the model chose its arguments), so
nothing of them becomes markup: every value passes ``_render.escape_text`` and is shown as text,
and the final answer is the model's Markdown rendered and sanitized by ``_render``. Inline styles
only: a saved notebook looks the same without this package. Pure: no IPython, no widgets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .. import _render
from .._text import terminal_safe
from ._approval import Asker

if TYPE_CHECKING:
    from .._response import LLMResponse, ToolCall, Usage


class _Record(Protocol):
    """What a card reads of a loop's call (``_loop.ToolCallRecord``)."""

    id: str
    name: str
    arguments: str
    result: Any
    error: str | None
    duration_s: float
    approved: bool | None


class _Step(Protocol):
    response: LLMResponse
    calls: list[Any]


class _Run(Protocol):
    """What a run's display reads (``_loop.ToolRun``)."""

    steps: list[Any]
    priced: bool

    @property
    def usage(self) -> Usage: ...
    @property
    def response(self) -> LLMResponse | None: ...
    @property
    def cost(self) -> Decimal | None: ...
    @property
    def content(self) -> str: ...
    @property
    def calls(self) -> list[Any]: ...


__all__ = ["CardData", "CardTracker", "card_html", "card_text", "cards_html", "run_bundle", "run_footer"]

#: Results longer than this (characters), or of more lines, are folded under a summary.
FOLD_CHARS = 400
FOLD_LINES = 8
State = Literal["waiting", "running", "ok", "error", "denied"]
_COLOURS = {
    "waiting": "#b45309",
    "running": "#6b7280",
    "ok": "#15803d",
    "error": "#b91c1c",
    "denied": "#b91c1c",
}
_BOX = (
    "border:1px solid #d1d5db;border-radius:6px;padding:4px 8px;margin:4px 0;font-size:0.9em;line-height:1.45"
)
_MONO = "white-space:pre-wrap;font-family:monospace;overflow-wrap:anywhere"


@dataclass(frozen=True, slots=True)
class CardData:
    """What a card shows, from a loop's ``ToolCallRecord`` or a pydantic-ai call (``of``)."""

    name: str
    arguments: str
    result: str | None = None
    error: str | None = None
    duration_s: float | None = None
    approved: bool | None = None
    state: State = "ok"

    @classmethod
    def of(cls, record: _Record, state: State | None = None) -> CardData:
        """A loop's call; ``state`` says "waiting" (for a person) or "running" before it has ended."""
        if state is None:
            state = "denied" if record.approved is False else "error" if record.error is not None else "ok"
        ended = state not in ("waiting", "running")
        return cls(
            name=record.name,
            arguments=record.arguments,
            result=result_text(record.result) if ended and record.error is None else None,
            error=record.error if ended else None,
            duration_s=record.duration_s if ended else None,
            approved=record.approved,
            state=state,
        )


def result_text(value: Any) -> str:
    """A tool's result as text: a string as it is, anything else as JSON (as the model received it)."""
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump", None)
    try:
        return json.dumps(dump(mode="json") if callable(dump) else value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _arguments(text: str) -> str:
    """Arguments as compact JSON when they parse (the model's spacing is noise), else as sent."""
    try:
        return json.dumps(json.loads(text or "{}"), ensure_ascii=False)
    except (TypeError, ValueError):
        return text


def _status(card: CardData) -> str:
    if card.state == "waiting":
        return "waiting for approval"
    if card.state == "running":
        return "approved · running…" if card.approved else "running…"
    parts = []
    if card.approved is True:
        parts.append("approved")
    elif card.approved is False:
        parts.append("denied")
    elif card.state == "error":
        parts.append("error")
    if card.duration_s is not None:
        seconds = card.duration_s
        parts.append(f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s")
    return " · ".join(parts) or "done"


def _folded(label: str, text: str, colour: str | None = None) -> str:
    style = _MONO + (f";color:{colour}" if colour else "")
    body = f'<div class="flotorch-tool-{label}" style="{style}">{_render.escape_text(text)}</div>'
    if len(text) <= FOLD_CHARS and text.count("\n") < FOLD_LINES:
        return body
    return (
        f'<details class="flotorch-tool-fold"><summary>{label} ({len(text)} characters)</summary>'
        f"{body}</details>"
    )


def card_html(card: CardData) -> str:
    """One call as an HTML card (every value escaped; see the module docstring)."""
    colour = _COLOURS[card.state]
    head = (
        '<div class="flotorch-tool-head"><span style="color:#6b7280">tool</span> '
        f"<b>{_render.escape_text(card.name)}</b> "
        f'<span class="flotorch-tool-status" style="color:{colour}">{_render.escape_text(_status(card))}'
        "</span></div>"
    )
    arguments = (
        f'<div class="flotorch-tool-args" style="{_MONO};color:#374151">'
        f"{_render.escape_text(_arguments(card.arguments))}</div>"
    )
    outcome = ""
    if card.error is not None:
        outcome = _folded("error", card.error, _COLOURS[card.state])
    elif card.result is not None:
        outcome = _folded("result", card.result)
    return (
        f'<div class="flotorch-tool-card flotorch-tool-{card.state}" style="{_BOX};border-left:3px solid '
        f'{colour}">{head}{arguments}{outcome}</div>'
    )


def card_text(card: CardData) -> str:
    """One call as plain text: ``[tool] name {"a": 1} -> result (approved · 3 ms)``."""
    outcome = f"error: {card.error}" if card.error is not None else card.result or ""
    if len(outcome) > FOLD_CHARS:
        outcome = outcome[: FOLD_CHARS - 1] + "…"
    return terminal_safe(f"[tool] {card.name} {_arguments(card.arguments)} -> {outcome} ({_status(card)})")


def cards_html(cards: Iterable[CardData]) -> str:
    """Several cards, in order, in one ``flotorch-tool-cards`` block (empty for none)."""
    inner = "".join(card_html(card) for card in cards)
    return f'<div class="flotorch-tool-cards">{inner}</div>' if inner else ""


def run_footer(run: _Run, default_model: str = "unknown model") -> _render.Footer:
    """The footer of a whole run: the last turn's model, every turn's tokens, latency and cost."""
    usage = run.usage
    last = run.response
    known = all(step.response.usage is not None for step in run.steps)
    cost: Decimal | Literal["unknown"] | None = None  # as pricing.shown_cost: nothing without prices
    if run.priced:
        cost = "unknown" if run.cost is None else run.cost
    return _render.Footer(
        model=(last.model if last is not None and last.model else default_model),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
        usage_known=known,
        latency_s=sum(step.response.latency_s for step in run.steps) if run.steps else None,
        offline=bool(last is not None and last.offline),
        cost=cost,
    )


def answer_bundle(cards: Sequence[CardData], content: str, footer: _render.Footer | None) -> dict[str, str]:
    """Cards above the answer (Markdown, sanitized), then the footer: HTML and plain text."""
    footer_html = _render.footer_html(footer) if footer is not None else ""
    answer = _render.answer_html(content, footer_html)
    html = f'<div class="flotorch-tool-run">{cards_html(cards)}{answer}</div>'
    lines = [card_text(card) for card in cards]
    lines += ["", content] if lines else [content]
    if footer is not None:
        lines += ["", _render.footer_text(footer)]
    return {"text/plain": terminal_safe("\n".join(lines)), "text/html": html}


def run_bundle(run: _Run, footer: _render.Footer | None = None) -> dict[str, str]:
    """A whole run as a display bundle: every call's card, the final answer, the run's footer."""
    cards = [CardData.of(call) for call in run.calls]
    return answer_bundle(cards, run.content, footer if footer is not None else run_footer(run))


class CardTracker:
    """A ``RunView`` (``_loop``) keeping what a live display shows: the cards so far (running, waiting
    for a person, ended) and the current turn's text; ``on_change`` after each change (``on_delta``, if
    given, after a piece of text instead: a display may pace those). The magic's preview and the chat
    panel draw from it, so both show the same cards."""

    def __init__(
        self,
        on_change: Callable[[], None],
        *,
        stream: bool = True,
        on_delta: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.on_change = on_change
        self.on_delta = on_delta if on_delta is not None else on_change
        self.records: list[_Record] = []
        self._ended: set[int] = set()
        self._waiting: set[str] = set()
        self._pieces: list[str] = []

    @property
    def text(self) -> str:
        """The current model turn's text so far."""
        return "".join(self._pieces)

    def delta(self, text: str) -> None:
        self._pieces.append(text)
        self.on_delta()

    def step(self, step: _Step) -> None:
        if step.calls:  # the turn's text (if any) made way for its calls; the next turn streams anew
            self.records.extend(step.calls)
            self._pieces.clear()
        self.on_change()

    def call_done(self, record: _Record) -> None:
        self._ended.add(id(record))
        self.on_change()

    def asking(self, ask: Asker) -> Asker:
        """``ask`` marking its call's card "waiting for approval" while the person decides."""

        async def marked(call: ToolCall) -> bool | str:
            self._waiting.add(call.id)
            self.on_change()
            try:
                return await ask(call)
            finally:
                self._waiting.discard(call.id)
                self.on_change()

        return marked

    def cards(self, *, waiting: bool = True) -> list[CardData]:
        """Every call so far as a card, in order (``waiting=False``: without the calls a person is
        being asked about, where the question shows them itself)."""
        return [
            CardData.of(r)
            if id(r) in self._ended
            else CardData.of(r, "waiting" if r.id in self._waiting else "running")
            for r in self.records
            if waiting or id(r) in self._ended or r.id not in self._waiting
        ]
