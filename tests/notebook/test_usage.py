"""Budget and usage go through the client's hooks: every call made with a session client is checked
against ``%flotorch budget`` before it is sent and counted in ``%flotorch usage`` exactly once,
whoever makes it — the magic, the chat panel, or the user's own code — and a reply that was stopped
or failed still counts what it cost, so stopping never gets around the budget.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flotorch_nb import BudgetExceededError, FlotorchLLM, LLMResponse
from flotorch_nb._pipeline._hooks import estimate_tokens
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook.session import get_session
from flotorch_nb.widgets import ChatPanel
from tests.support.shell import Shell

pytestmark = pytest.mark.anyio
USER = [{"role": "user", "content": "What is a tide?"}]
KINDS = ["invoke", "ainvoke", "stream", "astream"]


async def call(llm: FlotorchLLM, kind: str) -> LLMResponse:
    """One call, made the way plain user code would."""
    if kind == "invoke":
        return llm.invoke(USER)
    if kind == "ainvoke":
        return await llm.ainvoke(USER)
    if kind == "stream":
        chat = llm.stream(USER)
        "".join(chat)
        return chat.response
    achat = llm.astream(USER)
    async for _ in achat:
        pass
    return achat.response


@pytest.mark.parametrize("kind", KINDS)
async def test_a_call_from_plain_code_with_the_session_client_is_counted_once(
    offline_env: OfflineGateway, kind: str
) -> None:
    session = get_session()
    llm = session.client()
    try:
        resp = await call(llm, kind)
        assert resp.usage is not None
        (entry,) = session.ledger.entries
        assert (entry.source, entry.outcome, entry.usage_known) == ("code", "ok", True)
        assert entry.total_tokens == resp.usage.total_tokens == session.spent_tokens
        # The same client for another model (what -m does) carries the hooks too.
        other = session.client("offline/echo")
        await call(other, kind)
        assert [e.model for e in session.ledger.entries] == ["offline/assistant", "offline/echo"]
    finally:
        await llm.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_plain_code_cannot_get_around_the_budget(offline_env: OfflineGateway, kind: str) -> None:
    session = get_session()
    session.set_budget(estimate_tokens({"messages": USER}))  # exactly one call's worst case
    llm = session.client()
    try:
        await call(llm, kind)  # allowed: nothing spent yet, and its worst case fits
        sent = len(offline_env.requests)
        refused = r"token budget: \d+ of \d+ tokens used, and this call to offline/assistant may use up to"
        with pytest.raises(BudgetExceededError, match=refused):
            await call(llm, kind)
        assert len(offline_env.requests) == sent and len(session.ledger) == 1  # refused before sending
    finally:
        await llm.aclose()


def test_a_magic_cell_is_counted_once_as_magic(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.cell("", "What is a tide?")
    shell.cell("--no-stream", "What is a wave?")
    assert [e.source for e in get_session().ledger.entries] == ["magic", "magic"]


async def test_a_stopped_chat_reply_counts_its_estimated_tokens_against_the_budget(
    offline_env: OfflineGateway,
) -> None:
    session = get_session()
    slow = {"extra_body": {"offline": {"token_delay": 0.05}}}
    panel = ChatPanel(model="offline/echo", params=slow)
    question = " ".join(f"word{i}" for i in range(200))
    panel.send(question)
    turn = panel.conversation.turns[-1]
    deadline = asyncio.get_running_loop().time() + 10
    while len(turn.reply) < 40:
        assert asyncio.get_running_loop().time() < deadline, "the reply never started"
        await asyncio.sleep(0.01)
    panel.stop()
    assert await panel.wait() is None and turn.status == "stopped"
    (entry,) = session.ledger.entries
    assert (entry.source, entry.outcome, entry.usage_known) == ("chat", "stopped", False)
    # At least the question (about 4 characters a token) plus what had arrived.
    assert entry.total_tokens >= (len(question) + len(turn.reply)) // 4
    assert turn.footer is not None and turn.footer.total_tokens == entry.total_tokens
    meta = panel.transcript.children[2].value
    assert f"about {entry.total_tokens} tokens (estimated)" in meta and "STOPPED" in meta
    assert panel.conversation.totals.total_tokens == entry.total_tokens  # this chat's line counts it too
    assert "1 estimated" in panel.totals.value
    # What was spent is spent: with the budget at that, the next question is refused before sending.
    session.set_budget(entry.total_tokens)
    sent = len(offline_env.requests)
    panel.send("one more")
    refused = await panel.wait()
    assert refused is not None and refused.status == "error"
    assert "BudgetExceededError" in (refused.error or "")
    assert len(offline_env.requests) == sent
    await session.client().aclose()


async def test_a_client_given_to_the_panel_is_counted_too(offline_env: OfflineGateway, llm: Any) -> None:
    session = get_session()
    panel = ChatPanel(llm)
    panel.send("hello")
    assert (await panel.wait()) is not None
    llm.invoke(USER)  # the same client from code afterwards: it carries the session's hooks now
    assert [e.source for e in session.ledger.entries] == ["chat", "code"]
    await llm.aclose()


def test_an_interrupted_magic_stream_counts_its_estimate_and_is_kept_as_stopped(
    shell: Shell,
    offline_env: OfflineGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C (KeyboardInterrupt) while an answer streams into the cell: the call was paid for."""
    from flotorch_nb.notebook import views
    from flotorch_nb.notebook.pacing import Pacer

    real, drawn = views.preview_bundle, []

    def interrupt_on_the_third(text: str, fmt: str, **kwargs: Any) -> dict[str, str]:
        drawn.append(text)
        if len(drawn) == 3 and not kwargs:
            raise KeyboardInterrupt
        return real(text, fmt, **kwargs)

    monkeypatch.setattr(views, "preview_bundle", interrupt_on_the_third)
    monkeypatch.setattr(Pacer, "due", lambda self: True)  # redraw at every piece
    question = " ".join(f"word{i}" for i in range(100))
    with pytest.raises(KeyboardInterrupt):
        shell.cell("-m offline/echo", question)
    (entry,) = get_session().ledger.entries
    assert (entry.source, entry.outcome, entry.usage_known) == ("magic", "stopped", False)
    assert entry.total_tokens >= len(question) // 4
    (turn,) = get_session().conversation.turns
    assert turn.status == "stopped" and turn.reply and question.startswith(turn.reply)
    assert turn.footer is not None and turn.footer.total_tokens == entry.total_tokens
