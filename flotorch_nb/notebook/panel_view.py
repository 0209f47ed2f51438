"""What the chat panel looks like: its stock ipywidgets, one view per turn, and how they are drawn.

``widgets.ChatPanel`` (what the panel *does*: tasks, send, stop, clear) builds on ``PanelView``, so
each file reads on its own. The CSS hooks (``add_class``) are the panel's documented contract:
``flotorch-chat`` (root), ``-transcript``, ``-msg``, ``-user``, ``-assistant``, ``-meta``, ``-totals``,
``-input``, ``-send``, ``-stop``, ``-clear``, ``-export``, ``-model``, ``-system``, ``-error``,
``-status``; with tools, ``-cards`` and ``-prompts`` (the Approve / Deny widgets, ``flotorch-approval``).

Safety: in JupyterLab, event handlers inside an ``ipywidgets.HTML`` value *execute*, so every HTML
value set here comes from ``_render`` (model Markdown sanitized, everything else escaped).

Width: the same panel fills a notebook cell and JupyterLab's narrow side area (docked). Its rows wrap
(``flex-flow: row wrap``) and no part insists on a width of its own (stock text widgets default to
300 px plus an 80 px label), so in a narrow area the system prompt drops under the model picker and
the buttons under the input instead of being cut off; a wide code block scrolls inside its reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from .. import _render
from .conversation import Turn

__all__ = ["PanelView", "TurnView"]


def _classed(widget: Any, *classes: str) -> Any:
    for name in classes:
        widget.add_class(name)
    return widget


def _row(children: list[Any], **layout: str) -> w.HBox:
    """A row whose children wrap onto the next line when the panel is narrow (docked)."""
    return w.HBox(children, layout=w.Layout(flex_flow="row wrap", width="100%", min_width="0", **layout))


def flow(html: str) -> str:
    """``html`` (ours, or sanitized by ``_render``) with a reading line height: an ``ipywidgets.HTML``
    sets its line height to a form field's (28 px), which double-spaces wrapped text."""
    return f'<div style="line-height:1.45">{html}</div>'


def status_html(text: str) -> str:
    """A status or totals line: small, grey, escaped."""
    return flow(f"<span style='font-size:0.9em;color:#4b5563'>{_render.escape_text(text)}</span>")


@dataclass(slots=True)
class TurnView:
    """The three transcript widgets of one turn: the question, the answer, its footer line."""

    turn: Turn
    user: w.HTML
    assistant: w.HTML
    meta: w.HTML
    #: A panel with tools: the turn's tool cards, and the Approve / Deny prompts waiting for a person.
    cards: w.HTML | None = None
    prompts: w.VBox | None = None

    def render(self) -> None:
        """Draw the turn as it is now (the answer so far, rendered and sanitized; its footer)."""
        if self.cards is not None:
            from ..tools._cards import cards_html

            self.cards.value = cards_html(self.turn.cards)
        self.assistant.value = flow(self.turn.reply_html())
        self.meta.value = flow(self.turn.meta_html)


class PanelView:
    """The panel's widgets and the small operations that draw on them."""

    def _build(self, model: str, system_prompt: str) -> None:
        self.model_picker = _classed(
            w.Dropdown(
                options=[model],
                value=model,
                description="Model",
                style={"description_width": "initial"},
                layout=w.Layout(flex="1 1 160px", width="auto", min_width="0", max_width="100%"),
            ),
            "flotorch-chat-model",
        )
        self.system = _classed(
            w.Text(
                value=system_prompt,
                placeholder="System prompt (optional)",
                layout=w.Layout(flex="2 1 160px", width="auto", min_width="0"),
            ),
            "flotorch-chat-system",
        )
        # Unbounded height: stock widgets cannot keep a scrolled box pinned to its newest message, so
        # the conversation grows with the output area, which the notebook itself scrolls.
        self.transcript = _classed(w.VBox([]), "flotorch-chat-transcript")
        self.error = _classed(w.HTML("", layout=w.Layout(display="none")), "flotorch-chat-error")
        self.status = _classed(w.HTML(status_html("Ready")), "flotorch-chat-status")
        self.totals = _classed(w.HTML(""), "flotorch-chat-totals")
        # continuous_update=False: the text reaches the kernel once, on Enter or blur (see EnterToSend).
        self.input = _classed(
            w.Text(placeholder="Ask something — Enter to send", continuous_update=False),
            "flotorch-chat-input",
        )
        self.input.layout = w.Layout(flex="1 1 180px", width="auto", min_width="0")
        self.buttons = [
            _classed(w.Button(description=name.title(), tooltip=tip), f"flotorch-chat-{name}")
            for name, tip in [
                ("send", "Send the question (Enter)"),
                ("stop", "Stop the running reply"),
                ("clear", "Forget this conversation"),
                ("export", "Save the chat as Markdown in the current folder"),
            ]
        ]
        self.send_button, self.stop_button, self.clear_button, self.export_button = self.buttons
        self.send_button.button_style = "primary"
        self.stop_button.disabled = True
        for button in self.buttons:
            button.layout = w.Layout(width="auto", min_width="64px", flex="0 0 auto")
        # The buttons keep their width but wrap among themselves once the area is narrower than four.
        buttons = w.HBox(
            self.buttons,
            layout=w.Layout(flex="0 1 auto", flex_flow="row wrap", max_width="100%", min_width="0"),
        )
        self.root = _classed(
            w.VBox(
                [
                    _row([self.model_picker, self.system]),
                    self.transcript,
                    self.error,
                    _row([self.status, self.totals], justify_content="space-between"),
                    _row([self.input, buttons]),
                ],
                layout=w.Layout(width="100%", max_width="100%", min_width="0"),
            ),
            "flotorch-chat",
        )
        self._busy_shown = False  # the error line says "still running" (cleared once it is not)

    def _add_view(self, turn: Turn) -> TurnView:
        user = _classed(w.HTML(flow(turn.user_html())), "flotorch-chat-msg", "flotorch-chat-user")
        assistant = _classed(
            w.HTML(
                "", layout=w.Layout(border_left="3px solid #d1d5db", padding="0 0 0 8px", overflow="auto")
            ),
            "flotorch-chat-msg",
            "flotorch-chat-assistant",
        )
        meta = _classed(
            w.HTML(flow(turn.meta_html), layout=w.Layout(margin="0 0 8px 0")), "flotorch-chat-meta"
        )
        view = TurnView(turn, user, assistant, meta)
        if getattr(self, "runs_tools", False):  # cards and approval prompts between question and answer
            view.cards = _classed(w.HTML(""), "flotorch-chat-cards")
            view.prompts = _classed(w.VBox([]), "flotorch-chat-prompts")
            parts: tuple[w.Widget, ...] = (user, view.cards, view.prompts, assistant, meta)
            self.transcript.children = (*self.transcript.children, *parts)  # one sync to the frontend
            return view
        self.transcript.children = (*self.transcript.children, user, assistant, meta)
        return view

    def _show_error(self, line: str | None, *, busy: bool = False) -> None:
        self._busy_shown = busy and line is not None
        self.error.value = (
            flow(f"<span style='color:#b91c1c'>⚠ {_render.escape_text(line)}</span>") if line else ""
        )
        self.error.layout.display = None if line else "none"

    def _set_status(self, text: str) -> None:
        self.status.value = status_html(text)

    def _show_buttons(self, running: bool) -> None:
        self.stop_button.disabled = not running
        self.send_button.disabled = running
