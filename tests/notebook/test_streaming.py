"""Long streamed answers cost close to linear time in their length, in the magic and in the panel.

Both redraw "everything received so far" while an answer streams. Before, the pause between redraws
was measured from the start of the previous one and never grew, so once a redraw took longer than
the pause every new piece triggered another full redraw: a 50,000-character answer took minutes.
These tests drive the real ``%%flotorch`` magic and the real ``ChatPanel`` against the offline
gateway (``offline/echo`` repeats the prompt, so a long prompt gives an equally long answer) and
count the characters the redraws rendered, not the seconds: a bound that holds on any machine.
A budget far above the fixed behaviour and far below the old one ends a regression at once instead
of letting it run for minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from flotorch_nb import _render
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook import views
from flotorch_nb.widgets import ChatPanel
from tests.support.shell import Shell

#: Short lines: Markdown rendering of such text is slow (a <br> per line), the worst common case.
LONG = "".join(f"line {i} of a long answer\n" for i in range(3000))[:60_000]
#: Characters redraws may render in all, as a multiple of the answer's length. The fixed code needs
#: a few times the length; the old code needed thousands of times it (and never finished).
BUDGET = 25


class RenderMeter:
    """Counts what a render function is given, and fails fast once the budget is exceeded."""

    def __init__(self, real: Any, limit: int) -> None:
        self.real, self.limit = real, limit
        self.calls, self.chars = 0, 0

    def __call__(self, text: str, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.chars += len(text)
        if self.chars > self.limit:
            raise AssertionError(f"redraws rendered {self.chars} characters in {self.calls} calls")
        return self.real(text, *args, **kwargs)


@pytest.fixture
def preview_meter(monkeypatch: pytest.MonkeyPatch) -> Iterator[RenderMeter]:
    meter = RenderMeter(views.preview_bundle, BUDGET * len(LONG))
    monkeypatch.setattr(views, "preview_bundle", meter)
    yield meter


def test_a_60000_character_answer_streams_through_the_magic_at_linear_cost(
    shell: Shell,
    offline_env: OfflineGateway,
    preview_meter: RenderMeter,
) -> None:
    resp = shell.cell("-m offline/echo --no-interpolate", LONG)
    assert resp.content == LONG  # the whole answer arrived, streamed
    updates = [e for e in shell.pub.published if e.update]
    assert len(updates) >= 1 and preview_meter.calls == len(updates) + 1  # the first display is empty
    assert preview_meter.chars <= BUDGET * len(LONG)
    print(f"magic: {len(updates)} redraws, {preview_meter.chars / len(LONG):.1f}x the answer rendered")


@pytest.mark.anyio
async def test_a_50000_character_reply_streams_through_the_panel_at_linear_cost(
    offline_env: OfflineGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = LONG[:50_000]
    meter = RenderMeter(_render.render_markdown, BUDGET * len(text))
    monkeypatch.setattr(_render, "render_markdown", meter)
    panel = ChatPanel(model="offline/echo")
    values: list[str] = []
    panel.send(text)
    panel.transcript.children[1].observe(lambda change: values.append(change["new"]), "value")
    turn = await asyncio.wait_for(panel.wait(), 120)
    assert turn is not None and turn.status == "done", turn and turn.error
    assert turn.reply == text
    assert len(values) >= 2  # it did stream: at least one partial redraw, then the final one
    assert meter.chars <= BUDGET * len(text)
    print(f"panel: {len(values)} redraws, {meter.chars / len(text):.1f}x the reply rendered")
