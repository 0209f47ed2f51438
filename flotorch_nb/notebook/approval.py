"""Asking a person in a notebook: an Approve / Deny widget (and a reason field) for one tool call.

The loop awaits ``ApprovalPrompt.future``; the buttons' callbacks resolve it. That only works if the
kernel can run the callbacks while the loop waits: a cell that *blocks* never receives the click (its
comm message queues behind the running cell, on ipykernel 7 too). jupyter-ui-poll, the library made
to pump those messages from a blocking cell, calls ``kernel.do_one_iteration()``, which ipykernel 7.4
no longer has: on this kernel it processes nothing (tried, see the report of issue 15). What works is
a cell that *awaits*: ipykernel 7.4 dispatches comm messages while an async cell waits. So the
widget is used where the loop runs on the kernel's own event loop and the cell awaits it: the chat
panel (its turns are tasks on that loop), ``await llm.arun(..., approve=True)``, and
``%%flotorch --tools ... --approve``, which the extension turns into an awaited cell
(``tool_cell.await_approval_cells``). A blocking ``llm.run`` asks on stdin instead (the kernel shows an
input box).

The callbacks may run on another thread than the loop's (a test clicks from anywhere), so the future
is settled with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .. import _render
from .._response import ToolCall
from ..tools._approval import Asker, Verdict
from ..tools._cards import CardData, card_html

__all__ = ["ApprovalPrompt", "widget_asker"]


class ApprovalPrompt:
    """The card of one call waiting for a person, Approve / Deny, and a reason sent with a denial.

    CSS hooks: ``flotorch-approval`` (root), ``-approve``, ``-deny``, ``-reason``, ``-decided``.
    """

    def __init__(self, call: ToolCall, loop: asyncio.AbstractEventLoop) -> None:
        self.call = call
        self._loop = loop
        self.future: asyncio.Future[Verdict] = loop.create_future()
        card = CardData(call.name, call.arguments, state="waiting")
        self.card = w.HTML(card_html(card))
        self.reason = w.Text(
            placeholder="Reason to deny (optional, sent to the model)",
            layout=w.Layout(flex="1 1 200px", width="auto", min_width="0"),
        )
        self.approve_button = w.Button(description="Approve", button_style="success", icon="check")
        self.deny_button = w.Button(description="Deny", button_style="danger", icon="times")
        self.decided = w.HTML("")
        for widget, name in [
            (self.reason, "reason"),
            (self.approve_button, "approve"),
            (self.deny_button, "deny"),
            (self.decided, "decided"),
        ]:
            widget.add_class(f"flotorch-approval-{name}")
        self.approve_button.on_click(lambda _b: self.decide(True))
        self.deny_button.on_click(lambda _b: self.decide(self.reason.value.strip() or False))
        row = w.HBox(
            [self.approve_button, self.deny_button, self.reason],
            layout=w.Layout(flex_flow="row wrap", max_width="100%"),
        )
        self.root = w.VBox([self.card, row, self.decided])
        self.root.add_class("flotorch-approval")
        self.root._flotorch_prompt = self  # from the widget back to its prompt (tests, the panel)

    def decide(self, verdict: Verdict) -> None:
        """Record the person's answer (the first one counts) and let the waiting loop go on."""
        if self.approve_button.disabled:
            return
        for widget in (self.approve_button, self.deny_button, self.reason):
            widget.disabled = True
        reason = f": {verdict}" if isinstance(verdict, str) else ""
        said = "Approved" if verdict is True else f"Denied{reason}"
        self.decided.value = f"<span style='font-size:0.9em;color:#4b5563'>{_render.escape_text(said)}</span>"
        self._loop.call_soon_threadsafe(self._settle, verdict)

    def _settle(self, verdict: Verdict) -> None:
        if not self.future.done():
            self.future.set_result(verdict)


def widget_asker(show: Callable[[Any], None] | None = None) -> Asker:
    """An asker that shows an ``ApprovalPrompt`` per call (``show``: where; default the cell's output)
    and waits for its answer without blocking the event loop."""

    def in_cell(widget: Any) -> None:
        from IPython.display import display

        display(widget)  # type: ignore[no-untyped-call]

    place = show if show is not None else in_cell

    async def ask(call: ToolCall) -> Verdict:
        prompt = ApprovalPrompt(call, asyncio.get_running_loop())
        place(prompt.root)
        try:
            return await prompt.future
        finally:  # answered, or the run was stopped: the buttons are no longer live
            for widget in (prompt.approve_button, prompt.deny_button, prompt.reason):
                widget.disabled = True

    return ask
