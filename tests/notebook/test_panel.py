"""ChatPanel rough edges: a refused send's message does not outlive the reply it waited for, Stop
then Send starts the new question once the stopped one has ended, Clear during a reply leaves no
word about a reply that is gone, and text that cannot be encoded is still shown and exported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook.widgets import ChatBusyError, ChatPanel
from tests.support.widgets import text_of, until, widget_state_text

pytestmark = pytest.mark.anyio
SLOW = {"extra_body": {"offline": {"token_delay": 0.02}}}
STORY = "Tell me a long story about the sea."


@pytest.fixture
async def make_panel(llm: FlotorchLLM) -> AsyncIterator[Callable[..., ChatPanel]]:
    panels: list[ChatPanel] = []

    def make(**kwargs: Any) -> ChatPanel:
        panel = ChatPanel(llm, **kwargs)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.stop()
        await panel.wait(timeout=10)
    await llm.aclose()


async def test_a_refused_second_send_leaves_no_busy_message_once_the_reply_is_done(
    make_panel: Callable[..., ChatPanel],
) -> None:
    panel = make_panel(params=SLOW)
    panel.send(STORY)
    with pytest.raises(ChatBusyError):
        panel.send("second")
    assert "still running" in text_of(panel.error.value)
    turn = await panel.wait()
    assert turn is not None and turn.status == "done"
    assert panel.error.value == "" and panel.error.layout.display == "none"


async def test_stop_then_send_at_once_starts_the_new_turn_after_the_stopped_one(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel(model="offline/echo", params=SLOW)
    panel.send(STORY)
    first = panel.conversation.turns[0]
    await until(lambda: bool(first.reply))
    assert panel.stop() is True
    second_task = panel.send("the next question")  # no ChatBusyError: the running one is stopping
    second = await panel.wait()
    assert second_task.done() and second is not None and second.status == "done"
    assert first.status == "stopped" and second.reply == "the next question"
    # The stopped turn is not history for the new one.
    assert gateway.requests[-1].body["messages"] == [{"role": "user", "content": "the next question"}]
    assert panel.send_button.disabled is False and panel.stop_button.disabled is True
    assert panel.error.layout.display == "none"


async def test_clear_during_a_reply_leaves_a_clean_empty_panel(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel(params=SLOW)
    panel.send(STORY)
    await until(lambda: bool(panel.conversation.turns and panel.conversation.turns[0].reply))
    panel.clear()
    await panel.wait()
    await asyncio.sleep(0)  # let the cancelled task's callbacks run
    assert panel.transcript.children == ()
    status = text_of(panel.status.value)
    assert status == "Cleared", status  # not "the partial reply is kept": there is none to keep
    assert "(empty conversation)" in panel.conversation.transcript_html()


async def test_a_lone_surrogate_in_a_question_is_shown_and_exported(
    make_panel: Callable[..., ChatPanel], tmp_path: Path
) -> None:
    panel = make_panel(model="offline/echo")
    panel.send("summarize report\udcff.txt")
    turn = await panel.wait()
    assert turn is not None and turn.status == "done" and turn.reply == "summarize report\ufffd.txt"
    widget_state_text(panel).encode("utf-8")  # what the widgets send to the browser
    json.dumps(panel.conversation.transcript_bundle(), ensure_ascii=False).encode("utf-8")
    panel.export_markdown(tmp_path / "chat.md")
    assert "report\ufffd.txt" in (tmp_path / "chat.md").read_text(encoding="utf-8")
