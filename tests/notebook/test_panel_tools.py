"""ChatPanel with tools (cards inline, Approve / Deny in the turn, totals over every step) and with a
pydantic-ai agent (its tool calls as the same cards), on ``offline/scripted``; buttons clicked from
Python, as a person's click arrives in the kernel (the turn is a task on the running loop)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM, InvalidRequestError, tool
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook.approval import ApprovalPrompt
from flotorch_nb.notebook.widgets import ChatPanel
from tests.support.html import assert_safe_html
from tests.support.widgets import text_of, until

pytestmark = pytest.mark.anyio
PAYLOAD = "<img src=x onerror=alert(1)>"


def _script(*turns: dict[str, Any]) -> str:
    return json.dumps({"script": {"turns": list(turns)}})


def _calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    listed = [{"name": n, "arguments": a, "id": f"call_{i}"} for i, (n, a) in enumerate(calls)]
    return {"tool_calls": listed, "usage": {"prompt_tokens": 10, "completion_tokens": 2}}


def _answer(text: str) -> dict[str, Any]:
    return {"content": text, "usage": {"prompt_tokens": 20, "completion_tokens": 3}}


ran: list[str] = []


def get_weather(city: str) -> str:
    """Current weather."""
    ran.append(city)
    return f"18 degrees in {city} {PAYLOAD}"


@tool(requires_approval=True)
def send_mail(to: str) -> str:
    """Send a mail."""
    ran.append(to)
    return "sent"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    ran.clear()
    yield
    ran.clear()


def _prompts(panel: ChatPanel) -> list[ApprovalPrompt]:
    found: list[ApprovalPrompt] = []
    for child in panel.transcript.children:
        if "flotorch-chat-prompts" in child._dom_classes:
            found.extend(getattr(root, "_flotorch_prompt", None) for root in child.children)  # type: ignore[misc]
    return [p for p in found if p is not None]


async def test_tool_cards_and_approval_in_the_transcript(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel(model="offline/scripted", tools=[get_weather, send_mail], approve={"get_weather"})
    panel.send(
        _script(
            _calls(("get_weather", {"city": "Oslo"}), ("send_mail", {"to": "a@b.c"})), _answer("Oslo: 18.")
        )
    )
    await until(lambda: len(_prompts(panel)) == 2)
    assert ran == [] and panel.busy  # both wait for the person
    cards = next(c for c in panel.transcript.children if "flotorch-chat-cards" in c._dom_classes)
    asked = [text_of(p.card.value) for p in _prompts(panel)]
    assert all("waiting for approval" in a for a in asked)  # each prompt shows its call's card
    await until(lambda: text_of(cards.value) == "")  # not twice: the cards area leaves them to it
    weather, mail = sorted(_prompts(panel), key=lambda p: p.call.name)
    weather.approve_button.click()
    mail.reason.value = "no mail today"
    mail.deny_button.click()
    turn = await panel.wait()
    assert turn is not None and turn.status == "done" and turn.reply == "Oslo: 18."
    assert ran == ["Oslo"]  # the denied call never ran
    assert _prompts(panel) == []  # the prompts went with the turn; the cards say what was decided
    shown = text_of(cards.value)
    assert "approved" in shown and "denied: no mail today" in shown and "18 degrees in Oslo" in shown
    assert_safe_html(cards.value, own_markup=True)  # the tool's <img onerror> is text
    # the totals cover both steps of the turn: 10+2 and 20+3 tokens
    assert panel.conversation.totals.total_tokens == 35
    assert "in 30 · out 5 · total 35 tokens" in text_of(panel.transcript.children[-1].value)
    static = panel.conversation.transcript_html()
    assert "flotorch-tool-card" in static and "denied: no mail today" in static
    assert "[tool] get_weather" in panel.conversation.transcript_text()


async def test_a_failed_tool_turn_keeps_its_cards(make_panel: Callable[..., ChatPanel]) -> None:
    again = _calls(("get_weather", {"city": "Rome"}))
    panel = make_panel(model="offline/scripted", tools=[get_weather], max_steps=1)
    panel.send(_script(again, again))
    turn = await panel.wait()
    assert turn is not None and turn.status == "error" and "MaxStepsError" in (turn.error or "")
    assert len(turn.cards) == 1 and ran == ["Rome"]


def test_panel_tool_options_are_checked(llm: FlotorchLLM) -> None:
    with pytest.raises(InvalidRequestError, match="not both"):
        ChatPanel(llm, tools=[get_weather], agent=object())
    with pytest.raises(InvalidRequestError, match="goes with tools"):
        ChatPanel(llm, approve=True)
    with pytest.raises(InvalidRequestError, match="max_steps"):
        ChatPanel(llm, tools=[get_weather], max_steps=0)
    with pytest.raises(InvalidRequestError, match="Agent"):
        ChatPanel(llm, agent=42)


async def test_an_agent_run_with_its_tool_cards(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent

    from flotorch_nb.pydantic_ai import FlotorchModel

    scripted = FlotorchLLM("offline/scripted", "test-key-agent", gateway.url)
    agent = Agent(FlotorchModel(scripted))

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    panel = make_panel(agent=agent)
    call = {"name": "add", "arguments": {"a": 2, "b": 3}, "id": "call_1"}
    panel.send(_script({"tool_calls": [call]}, {"content": "2 + 3 = 5"}))
    turn = await panel.wait()
    assert turn is not None and turn.status == "done" and turn.reply == "2 + 3 = 5"
    assert [(c.name, c.result) for c in turn.cards] == [("add", "5")]
    cards = next(c for c in panel.transcript.children if "flotorch-chat-cards" in c._dom_classes)
    assert "add" in text_of(cards.value) and '{"a": 2, "b": 3}' in text_of(cards.value)
    assert turn.footer is not None and turn.footer.total_tokens > 0
    await scripted.aclose()


async def test_a_failed_agent_turn_ends_with_its_error(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    """An agent turn ends as every panel turn does (``chat.turn_calls``): ``error``, its one line."""
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent

    from flotorch_nb.pydantic_ai import FlotorchModel

    scripted = FlotorchLLM("offline/scripted", "test-key-agent", gateway.url)
    panel = make_panel(agent=Agent(FlotorchModel(scripted)))
    panel.send(json.dumps({"script": {"error": {"status": 400, "message": "no such tool"}}}))
    turn = await panel.wait()
    assert turn is not None and turn.status == "error"
    assert (turn.error or "").startswith("BadRequestError: ") and "no such tool" in (turn.error or "")
    assert turn.footer is not None
    await scripted.aclose()
