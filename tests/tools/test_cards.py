"""Tool cards (``tools._cards``): what a call shows, sanitized (a tool result is untrusted text), long
results folded, each state labelled; the tracker the magic and the panel draw from; the pydantic-ai
mapping of an agent's tool parts; the Approve / Deny prompt's first answer counting."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from flotorch_nb import ToolCall
from flotorch_nb.tools._cards import FOLD_CHARS, CardData, CardTracker, card_html, card_text, cards_html
from flotorch_nb.tools._loop import ToolCallRecord
from tests.support.html import XSS_PAYLOADS, assert_safe_html


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_a_result_an_argument_a_name_and_an_error_render_inert(payload: str) -> None:
    for card in [
        CardData("get_page", json.dumps({"url": payload}), result=payload),
        CardData("get_page", "{}", error=f"ValueError: {payload}", state="error"),
        CardData(payload, payload, result="x"),
    ]:
        html = card_html(card)
        assert_safe_html(html, own_markup=True)  # every tag and attribute is ours; the payload is text


def test_a_result_in_script_tags_is_shown_as_text() -> None:
    html = card_html(CardData("f", "{}", result="<script>window.pwned=1</script>"))
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html and "<script>" not in html


def test_long_results_fold_short_ones_do_not() -> None:
    short = card_html(CardData("f", "{}", result="18 degrees"))
    long = card_html(CardData("f", "{}", result="x" * (FOLD_CHARS + 1)))
    lines = card_html(CardData("f", "{}", result="\n".join(["row"] * 20)))
    assert "<details" not in short
    assert f'<details class="flotorch-tool-fold"><summary>result ({FOLD_CHARS + 1} characters)' in long
    assert "<details" in lines
    assert len(card_text(CardData("f", "{}", result="x" * 5000))) < 600  # plain text is cut, not folded


@pytest.mark.parametrize(
    ("card", "says"),
    [
        (CardData("f", "{}", result="1", duration_s=0.012, approved=True), "approved · 12 ms"),
        (CardData("f", "{}", error="denied: no", approved=False, state="denied"), "denied"),
        (CardData("f", "{}", error="ZeroDivisionError: x", duration_s=1.5, state="error"), "error · 1.50 s"),
        (CardData("f", "{}", state="waiting"), "waiting for approval"),
        (CardData("f", "{}", state="running"), "running…"),
    ],
)
def test_every_state_says_what_happened(card: CardData, says: str) -> None:
    assert says in card_html(card) and says in card_text(card)
    assert f"flotorch-tool-{card.state}" in card_html(card)


def test_arguments_are_shown_as_compact_json() -> None:
    assert '{"a": 1, "b": [2]}' in card_text(CardData("f", '{ "a" :1,\n "b":[2] }', result="3"))
    assert "not json" in card_text(CardData("f", "not json", error="bad", state="error"))


def test_the_tracker_follows_a_run() -> None:
    changes: list[str] = []
    tracker = CardTracker(lambda: changes.append("change"), on_delta=lambda: changes.append("delta"))
    record = ToolCallRecord("c1", "f", '{"x": 1}')

    tracker.delta("Let me look.")
    tracker.step(SimpleNamespace(calls=[record]))
    assert tracker.text == "" and [c.state for c in tracker.cards()] == ["running"]

    async def ask(call: ToolCall) -> bool | str:
        assert [c.state for c in tracker.cards()] == ["waiting"]
        assert tracker.cards(waiting=False) == []
        return True

    async def asked() -> bool | str:
        return await tracker.asking(ask)(ToolCall("c1", "f", "{}"))

    assert asyncio.run(asked()) is True
    record.result, record.approved = 1, True
    tracker.call_done(record)
    assert [(c.state, c.result, c.approved) for c in tracker.cards()] == [("ok", "1", True)]
    assert changes[0] == "delta" and changes.count("change") == 4
    assert cards_html([]) == ""


def test_agent_parts_become_cards() -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai.messages import ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart

    from flotorch_nb.pydantic_ai import agent_cards

    messages: list[Any] = [
        ModelResponse(parts=[ToolCallPart("add", {"a": "x"}, "c1")]),
        ModelRequest(parts=[ToolReturnPart("add", "a: not an int", "c1", outcome="retried")]),
        ModelResponse(parts=[ToolCallPart("add", {"a": 1}, "c1"), ToolCallPart("mul", {"a": 2}, "c2")]),
        ModelRequest(parts=[ToolReturnPart("add", 1, "c1")]),
    ]
    bad, good, lost = agent_cards(messages)
    assert (bad.state, bad.error) == ("error", "a: not an int")
    assert (good.state, good.result, good.arguments) == ("ok", "1", '{"a":1}')
    assert (lost.name, lost.state, lost.error) == ("mul", "error", "no result")


def test_the_first_answer_of_a_prompt_counts() -> None:
    from flotorch_nb.notebook.approval import ApprovalPrompt

    async def main() -> Any:
        prompt = ApprovalPrompt(ToolCall("c1", "f", "{}"), asyncio.get_running_loop())
        prompt.reason.value = "too risky"
        prompt.deny_button.click()
        prompt.approve_button.click()  # disabled now: a second click changes nothing
        return await asyncio.wait_for(prompt.future, 5), prompt

    verdict, prompt = asyncio.run(main())
    assert verdict == "too risky" and "Denied: too risky" in prompt.decided.value
    assert prompt.approve_button.disabled and prompt.deny_button.disabled and prompt.reason.disabled
