"""Driving ChatPanel widgets from Python: building a panel, reading its text and state, waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import ipywidgets as w
import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.notebook.widgets import ChatPanel
from tests.support.html import XSS_PAYLOADS, assert_safe_html  # noqa: F401


def all_widgets(root: w.Widget) -> Iterator[w.Widget]:
    """Every widget reachable from ``root`` through its traits (children, layout, style...)."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if widget.model_id in seen:
            continue
        seen.add(widget.model_id)
        yield widget
        for name in widget.keys:
            value = getattr(widget, name)
            items = value if isinstance(value, list | tuple) else [value]
            stack.extend(item for item in items if isinstance(item, w.Widget))


def widget_state_text(panel: ChatPanel) -> str:
    return "\n".join(json.dumps(x.get_state(), default=str) for x in all_widgets(panel.root))


def text_of(html_value: str) -> str:
    """The visible text of an HTML value (as a browser's textContent would read it)."""
    from html.parser import HTMLParser

    parts: list[str] = []

    class P(HTMLParser):
        def handle_data(self, data: str) -> None:
            parts.append(data)

    P().feed(html_value)
    return "".join(parts)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` on the loop (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def make_panel(llm: FlotorchLLM) -> AsyncIterator[Callable[..., ChatPanel]]:
    """Build panels on the offline gateway; stop them and close the client's async pools afterwards."""
    panels: list[ChatPanel] = []

    def make(client: FlotorchLLM | None = None, **kwargs: Any) -> ChatPanel:
        panel = ChatPanel(client or llm, **kwargs)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.stop()
        await panel.wait(timeout=10)
    await llm.aclose()
