"""ChatPanel driven from Python against the real offline gateway on loopback.

Widgets are driven the way the frontend drives them: buttons through ``.click()``, the input box through
the comm messages JupyterLab sends (``_handle_msg`` with an ``update`` of the value, and the ``custom``
``{"event": "submit"}`` message the Text view sends on Enter). Requests are real HTTP, run as tasks
on the test's event loop exactly as on the kernel's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import pytest

from flotorch_nb import FlotorchLLM, RetryPolicy, call_label
from flotorch_nb._render import render_markdown
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.gateway._faults import Fault
from flotorch_nb.notebook.chat import EnterToSend, error_line, export_path
from flotorch_nb.notebook.pacing import Throttle
from flotorch_nb.notebook.panel_view import flow
from flotorch_nb.notebook.session import get_session, reset
from flotorch_nb.notebook.widgets import ENTER_GRACE_S, ChatBusyError, ChatPanel
from tests.support.html import XSS_PAYLOADS, assert_safe_html
from tests.support.widgets import all_widgets, text_of, until, widget_state_text

pytestmark = pytest.mark.anyio

KEY = "offline-test-key"
SLOW = {"extra_body": {"offline": {"token_delay": 0.02}}}
CSS_HOOKS = {
    "flotorch-chat",
    "flotorch-chat-transcript",
    "flotorch-chat-msg",
    "flotorch-chat-user",
    "flotorch-chat-assistant",
    "flotorch-chat-meta",
    "flotorch-chat-totals",
    "flotorch-chat-input",
    "flotorch-chat-send",
    "flotorch-chat-stop",
    "flotorch-chat-clear",
    "flotorch-chat-export",
    "flotorch-chat-model",
    "flotorch-chat-system",
    "flotorch-chat-error",
    "flotorch-chat-status",
}


# -- helpers ---------------------------------------------------------------------------------------
def frontend_update(widget: w.Widget, **state: Any) -> None:
    """What the kernel receives when the browser syncs a changed value."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state}}, "buffers": []})


def frontend_enter(widget: w.Widget) -> None:
    """What the kernel receives when Enter is pressed in a Text view (ipywidgets 8 TextView)."""
    data = {"method": "custom", "content": {"event": "submit"}}
    widget._handle_msg({"content": {"data": data}, "buffers": []})


@pytest.fixture(autouse=True)
def fresh_session() -> Iterator[None]:
    """The notebook session (ledger, budget, client) is process-wide: start and end each test clean."""
    reset()
    yield
    reset()


# -- structure -------------------------------------------------------------------------------------
async def test_every_css_hook_is_present(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel()
    panel.send("hello")
    await panel.wait()
    panel._show_error("shown")
    classes = {c for x in all_widgets(panel.root) for c in getattr(x, "_dom_classes", ())}
    assert classes >= CSS_HOOKS, CSS_HOOKS - classes
    assert "flotorch-chat" in panel.root._dom_classes


async def test_repr_and_defaults(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel(models=["offline/echo"])
    assert panel.models == ["offline/assistant", "offline/echo"]
    assert panel.model == "offline/assistant"
    assert repr(panel) == "ChatPanel(model='offline/assistant', turns=0, stream=True)"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": ""}, ValueError),
        ({"models": "offline/echo"}, ValueError),
        ({"models": ["ok", 3]}, ValueError),
        ({"system_prompt": 5}, ValueError),
        ({"stream": "yes"}, ValueError),
        ({"params": ["temperature"]}, ValueError),
        ({"params": {"model": "x"}}, ValueError),
    ],
)
async def test_bad_arguments_are_typed_errors(llm: FlotorchLLM, kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        ChatPanel(llm, **kwargs)


def test_llm_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="FlotorchLLM"):
        ChatPanel("offline/assistant")  # type: ignore[arg-type]


def test_send_without_running_loop_explains(llm: FlotorchLLM) -> None:
    panel = ChatPanel(llm)
    with pytest.raises(RuntimeError, match="inside Jupyter"):
        panel.send("hi")
    assert panel.conversation.turns == []


# -- sending ---------------------------------------------------------------------------------------
async def test_send_button_streams_a_reply_with_intermediate_renders(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel(params=SLOW)
    seen: list[str] = []
    frontend_update(panel.input, value="Explain photosynthesis in three short sentences.")
    panel.send_button.click()
    task = panel.task
    assert task is not None and not task.done()
    assert panel.input.value == ""  # taken from the box
    assert panel.stop_button.disabled is False
    assistant = panel.transcript.children[1]
    assistant.observe(lambda change: seen.append(change["new"]), names="value")
    turn = await panel.wait()
    assert turn is not None and turn.status == "done" and turn.reply
    # Updated while streaming (throttled), then once more at the end: more than one distinct value.
    partial = [v for v in seen[:-1] if v and v != seen[-1]]
    assert len(partial) >= 2, seen
    assert assistant.value == flow(render_markdown(turn.reply))
    assert panel.stop_button.disabled is True
    assert panel.send_button.disabled is False


async def test_meta_line_shows_tokens_latency_model_and_offline_badge(
    make_panel: Callable[..., ChatPanel],
) -> None:
    panel = make_panel()
    panel.send("What is two plus two?")
    turn = await panel.wait()
    assert turn is not None and turn.footer is not None
    meta = panel.transcript.children[2]
    assert "flotorch-chat-meta" in meta._dom_classes
    text = text_of(meta.value)
    f = turn.footer
    assert f.usage_known and f.total_tokens == f.input_tokens + f.output_tokens > 0
    assert f"in {f.input_tokens} · out {f.output_tokens} · total {f.total_tokens} tokens" in text
    assert "OFFLINE gateway" in text
    assert "offline/assistant" in text
    assert " ms" in text or " s" in text


async def test_non_streaming_mode(make_panel: Callable[..., ChatPanel], gateway: OfflineGateway) -> None:
    panel = make_panel(stream=False, model="offline/echo")
    panel.send("just once")
    turn = await panel.wait()
    assert turn is not None and turn.reply == "just once"
    assert gateway.requests[-1].body.get("stream") in (None, False)


async def test_enter_sends_when_value_follows_submit(make_panel: Callable[..., ChatPanel]) -> None:
    """The browser order: keypress Enter -> "submit" message, then change -> the value update."""
    panel = make_panel(model="offline/echo")
    frontend_enter(panel.input)
    assert panel.task is None  # nothing typed has reached the kernel yet
    frontend_update(panel.input, value="sent with Enter")
    assert panel.task is not None  # sent at once, no grace delay
    turn = await panel.wait()
    assert turn is not None and turn.user == "sent with Enter" and turn.reply == "sent with Enter"
    assert panel.input.value == ""


async def test_enter_with_an_unchanged_value_sends_after_the_grace_delay(
    make_panel: Callable[..., ChatPanel],
) -> None:
    """Text already synced (e.g. by a blur): Enter brings no new value, the grace timer sends it."""
    panel = make_panel(model="offline/echo")
    frontend_update(panel.input, value="already synced")
    assert panel.task is None  # a value change alone (blur) does not send
    frontend_enter(panel.input)
    assert panel.task is None
    await until(lambda: panel.task is not None, timeout=ENTER_GRACE_S + 2)
    turn = await panel.wait()
    assert turn is not None and turn.reply == "already synced"


async def test_enter_on_empty_input_does_nothing(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel()
    frontend_enter(panel.input)
    await asyncio.sleep(ENTER_GRACE_S + 0.1)
    assert panel.task is None
    assert panel.error.layout.display == "none"


async def test_send_while_running_is_refused_in_panel(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel(params=SLOW)
    first = panel.send("Tell me a long story about the sea.")
    frontend_update(panel.input, value="second question")
    panel._send_from_ui()  # what Enter / Send do; the button itself is disabled meanwhile
    assert panel.task is first
    assert "still running" in text_of(panel.error.value)
    assert panel.input.value == "second question"  # kept for later
    with pytest.raises(ChatBusyError):
        panel.send("third")
    await panel.wait()
    assert len(panel.conversation.turns) == 1


async def test_empty_message_is_refused(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel()
    with pytest.raises(ValueError, match="empty"):
        panel.send("   ")
    assert "empty" in text_of(panel.error.value)
    assert panel.conversation.turns == []


async def test_history_and_system_prompt_are_sent(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel(model="offline/echo", system_prompt="Be brief.")
    panel.send("one")
    await panel.wait()
    frontend_update(panel.system, value="Be very brief.")
    panel.send("two")
    await panel.wait()
    messages = gateway.requests[-1].body["messages"]
    assert messages == [
        {"role": "system", "content": "Be very brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "two"},
    ]


# -- stop, clear, model picker ----------------------------------------------------------------------
async def test_stop_cancels_a_slow_stream_and_keeps_the_partial_reply(
    make_panel: Callable[..., ChatPanel], llm: FlotorchLLM, gateway: OfflineGateway
) -> None:
    streams: list[Any] = []
    real_astream = llm.astream

    def spy(*args: Any, **kwargs: Any) -> Any:
        stream = real_astream(*args, **kwargs)
        streams.append(stream)
        return stream

    llm.astream = spy  # type: ignore[method-assign]
    panel = make_panel(model="offline/echo", params={"extra_body": {"offline": {"token_delay": 0.05}}})
    long_text = " ".join(f"word{i}" for i in range(200))
    panel.send(long_text)
    turn = panel.conversation.turns[-1]
    await until(lambda: len(turn.reply) > 10)
    panel.stop_button.click()
    assert await panel.wait() is None  # cancelled
    assert panel.task is not None and panel.task.cancelled()
    assert turn.status == "stopped"
    assert 10 < len(turn.reply) < len(long_text)
    assert long_text.startswith(turn.reply.strip())
    assert "STOPPED" in text_of(panel.transcript.children[2].value)
    assert panel.transcript.children[1].value == flow(render_markdown(turn.reply))
    assert "Stopped" in text_of(panel.status.value)
    assert streams and streams[0]._http is not None and streams[0]._http.is_closed
    # The stopped turn is not history for the next question.
    panel.send("next")
    await panel.wait()
    messages = gateway.requests[-1].body["messages"]
    assert messages == [{"role": "user", "content": "next"}]


async def test_stop_when_idle_says_so(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel()
    assert panel.stop() is False
    panel._stop_from_ui()
    assert "Nothing to stop" in text_of(panel.status.value)


async def test_clear_forgets_conversation_but_keeps_totals(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel(model="offline/echo")
    panel.send("remember me")
    await panel.wait()
    totals = panel.conversation.totals
    panel.clear_button.click()
    assert panel.transcript.children == ()
    assert panel.conversation.turns == []
    assert panel.conversation.totals == totals
    assert "Cleared" in text_of(panel.status.value)
    assert "remember me" not in panel.export_markdown()


async def test_clear_while_running_stops_first(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel(params=SLOW)
    panel.send("Tell me a long story about mountains.")
    await until(lambda: bool(panel.conversation.turns and panel.conversation.turns[0].reply))
    panel.clear()
    assert await panel.wait() is None
    assert panel.transcript.children == ()
    assert panel.send_button.disabled is False and panel.stop_button.disabled is True


async def test_stop_or_clear_before_the_task_ever_ran(make_panel: Callable[..., ChatPanel]) -> None:
    """Cancelled before its first step, the task's body never runs: the panel must still settle."""
    panel = make_panel()
    panel.send("never sent")
    turn = panel.conversation.turns[0]
    assert panel.stop() is True
    assert await panel.wait() is None
    assert turn.status == "stopped"
    assert "STOPPED" in text_of(panel.transcript.children[2].value)
    assert panel.send_button.disabled is False and panel.stop_button.disabled is True
    panel.send("and this one")
    panel.clear()
    assert await panel.wait() is None
    assert panel.transcript.children == ()
    assert panel.send_button.disabled is False
    panel.send("finally")
    final = await panel.wait()
    assert final is not None and final.status == "done"


async def test_model_picker_switches_model(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel(models=["offline/echo"])
    frontend_update(panel.model_picker, index=panel.models.index("offline/echo"))
    assert panel.model == "offline/echo"
    panel.send("echo this back")
    turn = await panel.wait()
    assert turn is not None and turn.reply == "echo this back"
    assert gateway.requests[-1].body["model"] == "offline/echo"
    assert "offline/echo" in text_of(panel.transcript.children[2].value)
    panel.model = "offline/assistant"
    panel.send("hello")
    await panel.wait()
    assert gateway.requests[-1].body["model"] == "offline/assistant"


async def test_models_setter(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel()
    panel.models = ["offline/echo", "offline/assistant"]
    assert panel.model == "offline/assistant"
    panel.models = ["offline/echo"]
    assert panel.model == "offline/echo"
    with pytest.raises(ValueError):
        panel.models = []
    panel.model = "other/model"
    assert panel.models == ["offline/echo", "other/model"]


# -- safety ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", XSS_PAYLOADS[:20] + XSS_PAYLOADS[-10:])
async def test_xss_through_echo_is_sanitized_everywhere(
    make_panel: Callable[..., ChatPanel], payload: str
) -> None:
    panel = make_panel(model="offline/echo")
    panel.send(payload)
    turn = await panel.wait()
    assert turn is not None and turn.reply == payload  # the gateway really echoed the payload
    for widget in all_widgets(panel.root):
        if isinstance(widget, w.HTML):
            assert_safe_html(widget.value, own_markup=True)
    assert text_of(panel.transcript.children[0].value) == f"You: {payload}"  # escaped, shown as text
    assert_safe_html(panel.conversation.transcript_html(), own_markup=True)


async def test_api_key_never_in_widget_state_static_copy_or_export(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel(models=["offline/echo"], system_prompt="sys")
    panel.send("hello")
    await panel.wait()
    panel.model = "offline/echo"
    panel.send("and again")
    await panel.wait()
    gateway.faults.add(Fault(status=401, message="bad key"))
    panel.send("fail please")
    await panel.wait()
    assert KEY not in widget_state_text(panel)
    assert KEY not in panel.conversation.transcript_html()
    assert KEY not in panel.conversation.transcript_text()
    assert KEY not in panel.export_markdown()
    assert KEY not in repr(panel)
    assert "hello" in widget_state_text(panel)  # the walk really reaches the transcript


async def test_wrong_key_shows_authentication_error_without_the_key(
    make_panel: Callable[..., ChatPanel],
) -> None:
    bad_key = "wrong-key-0123456789"
    with OfflineGateway(api_key="the-right-key") as strict:
        client = FlotorchLLM("offline/assistant", bad_key, strict.url, retry=RetryPolicy(max_retries=0))
        try:
            panel = make_panel(client)
            panel.send("hi")
            turn = await panel.wait()
            assert turn is not None and turn.status == "error"
            line = text_of(panel.error.value)
            assert "AuthenticationError" in line and "401" in line
            assert bad_key not in widget_state_text(panel)
            assert bad_key not in panel.export_markdown()
            assert bad_key not in panel.conversation.transcript_html()
        finally:
            await client.aclose()


# -- errors ----------------------------------------------------------------------------------------
async def test_server_error_is_shown_in_panel_and_not_sent_as_history(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel(model="offline/echo")
    gateway.faults.add(Fault(status=500, message="upstream exploded", times=3))  # llm retries twice
    panel.send("first")
    turn = await panel.wait()
    assert turn is not None and turn.status == "error"
    line = text_of(panel.error.value)
    assert line.startswith("⚠ ServerError: HTTP 500") and "upstream exploded" in line
    assert panel.error.layout.display is None  # visible
    assert "\n" not in line
    assert "ERROR" in text_of(panel.transcript.children[2].value)
    assert "Failed" in text_of(panel.status.value)
    panel.send("second")
    turn = await panel.wait()
    assert turn is not None and turn.status == "done"
    assert gateway.requests[-1].body["messages"] == [{"role": "user", "content": "second"}]
    assert panel.error.layout.display == "none"  # cleared by the next successful send
    assert "upstream exploded" in panel.export_markdown()  # the failure stays on record


async def test_broken_stream_is_shown_in_panel(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel()
    gateway.faults.add(Fault(inband_error="the model fell over"))
    panel.send("hello")
    turn = await panel.wait()
    assert turn is not None and turn.status == "error"
    assert "StreamError" in text_of(panel.error.value)


async def test_unexpected_exception_in_a_callback_is_shown(
    make_panel: Callable[..., ChatPanel], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    panel = make_panel()
    monkeypatch.setattr(Path, "cwd", lambda: tmp_path / "does-not-exist")
    panel.export_button.click()
    assert "FileNotFoundError" in text_of(panel.error.value)


# -- totals, export, static copy -------------------------------------------------------------------
async def test_totals_add_up(make_panel: Callable[..., ChatPanel]) -> None:
    panel = make_panel()
    footers = []
    for question in ["What is Python?", "And what is Rust?", "Compare them."]:
        panel.send(question)
        turn = await panel.wait()
        assert turn is not None and turn.footer is not None
        footers.append(turn.footer)
    totals = panel.conversation.totals
    assert totals.calls == 3
    assert totals.input_tokens == sum(f.input_tokens for f in footers)
    assert totals.output_tokens == sum(f.output_tokens for f in footers)
    assert totals.total_tokens == totals.input_tokens + totals.output_tokens
    t = totals
    expected = f"3 replies · in {t.input_tokens} · out {t.output_tokens} · total {t.total_tokens} tokens"
    session = f"3 calls · total {t.total_tokens} tokens"  # the panel's replies are the session's calls
    assert text_of(panel.totals.value) == f"This chat: {expected} — Session: {session}"


async def test_totals_show_this_chat_and_the_whole_session(
    make_panel: Callable[..., ChatPanel], llm: FlotorchLLM
) -> None:
    """%%flotorch answers and other panels count in the session's part of the line, not in the chat's."""
    session = get_session()

    def magic_call(prompt: str) -> int:
        """A call %%flotorch makes: through a client carrying the session's hooks, labelled "magic"."""
        with call_label("magic"):
            resp = session.watch(llm).invoke([{"role": "user", "content": prompt}])
        assert resp.usage is not None and resp.usage.total_tokens > 0
        return resp.usage.total_tokens

    magic = magic_call("What is a tide?")
    panel = make_panel()
    line = text_of(panel.totals.value)
    assert line == f"This chat: no replies yet — Session: 1 call · total {magic} tokens"
    panel.send("What is Python?")
    turn = await panel.wait()
    assert turn is not None and turn.footer is not None
    mine = turn.footer.total_tokens
    chat = f"1 reply · in {turn.footer.input_tokens} · out {turn.footer.output_tokens} · total {mine}"
    assert text_of(panel.totals.value) == (
        f"This chat: {chat} tokens — Session: 2 calls · total {magic + mine} tokens"
    )
    # Another panel's reply and another magic call: the session's part follows at the next chance
    # (here Clear), this chat's part does not move.
    other = make_panel(model="offline/echo")
    other.send("hello there")
    other_turn = await other.wait()
    assert other_turn is not None and other_turn.footer is not None
    theirs = other_turn.footer.total_tokens
    assert text_of(other.totals.value) == (
        f"This chat: 1 reply · in {other_turn.footer.input_tokens} · out "
        f"{other_turn.footer.output_tokens} · total {theirs} tokens"
        f" — Session: 3 calls · total {magic + mine + theirs} tokens"
    )
    magic += magic_call("What is a wave?")
    panel.clear_button.click()
    total = magic + mine + theirs
    assert session.ledger.totals.total_tokens == total
    line = text_of(panel.totals.value)
    assert line == f"This chat: {chat} tokens — Session: 4 calls · total {total} tokens"


async def test_export_markdown_and_button(
    make_panel: Callable[..., ChatPanel], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    panel = make_panel(model="offline/echo", system_prompt="Answer in **Markdown**.")
    panel.send("# A heading\n\nand *text*")
    await panel.wait()
    md = panel.export_markdown()
    assert md.startswith("# FloTorch chat\n")
    assert "> Answer in **Markdown**." in md
    assert "## You\n\n# A heading\n\nand *text*\n" in md
    assert "## Assistant (offline/echo)\n\n# A heading\n\nand *text*\n" in md
    assert "in " in md and "tokens" in md
    target = tmp_path / "chat.md"
    assert panel.export_markdown(target) == md
    assert target.read_text(encoding="utf-8") == md
    monkeypatch.chdir(tmp_path)
    panel.export_button.click()
    written = sorted(tmp_path.glob("flotorch-chat-*.md"))
    assert len(written) == 1 and written[0].read_text(encoding="utf-8") == md
    assert str(written[0]) in text_of(panel.status.value)
    panel.export_button.click()  # same second: a new name, never an overwrite
    assert len(sorted(tmp_path.glob("flotorch-chat-*.md"))) == 2


async def test_display_leaves_a_static_transcript_that_follows_the_conversation(
    make_panel: Callable[..., ChatPanel],
) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    panel = make_panel(model="offline/echo")
    with capture_output() as captured:
        panel._ipython_display_()
        panel.send("**static** <img src=x onerror=alert(1)>")
        await panel.wait()
    outputs = captured.outputs
    assert "application/vnd.jupyter.widget-view+json" in outputs[0].data
    first, last = outputs[1], outputs[-1]
    display_id = first.transient["display_id"]
    assert last.update and last.transient["display_id"] == display_id
    assert "Chat transcript (static copy)" in last.data["text/html"]
    assert "<strong>static</strong> &lt;img src=x onerror=alert(1)&gt;" in last.data["text/html"]
    assert "You: **static**" in last.data["text/plain"]
    assert_safe_html(last.data["text/html"], own_markup=True)


# -- the notebook session: client, ledger, budget -----------------------------------------------------
async def test_session_client_ledger_and_budget(offline_env: OfflineGateway) -> None:
    """No llm given: the session's client (FLOTORCH_* env); replies land in the shared ledger, and a
    spent budget refuses the next question before any request: the turn fails, shown in the panel."""
    session = get_session()
    panel = ChatPanel(models=["offline/echo"])
    try:
        assert panel.model == "offline/assistant"
        assert panel.client is session.client()
        panel.send("count me")
        turn = await panel.wait()
        assert turn is not None and turn.status == "done" and turn.footer is not None
        entries = session.ledger.entries
        assert len(entries) == 1 and entries[0].source == "chat"
        assert entries[0].total_tokens == turn.footer.total_tokens > 0
        session.set_budget(entries[0].total_tokens)  # exactly spent
        sent_before = len(offline_env.requests)
        frontend_update(panel.input, value="one more")
        panel.send_button.click()
        refused = await panel.wait()
        assert refused is not None and refused.status == "error"
        assert len(offline_env.requests) == sent_before  # nothing sent
        assert len(session.ledger) == 1  # and nothing spent
        line = text_of(panel.error.value)
        assert line.startswith("⚠ BudgetExceededError: token budget spent")
        assert "ERROR" in text_of(panel.transcript.children[-1].value)
        assert refused.user not in str(panel.conversation.messages("next"))  # not history
        session.set_budget(10_000)
        panel.send("again")
        turn = await panel.wait()
        assert turn is not None and turn.status == "done"
        assert "budget" in text_of(panel.totals.value)
        assert len(session.ledger.entries) == 2
        assert KEY not in widget_state_text(panel)
        assert KEY not in panel.conversation.transcript_html() + panel.export_markdown()
    finally:
        await session.client().aclose()


async def test_a_failed_turn_that_reached_no_model_costs_nothing(
    make_panel: Callable[..., ChatPanel], gateway: OfflineGateway
) -> None:
    panel = make_panel()
    gateway.faults.add(Fault(status=400, message="nope"))
    panel.send("hello")
    turn = await panel.wait()
    assert turn is not None and turn.status == "error"
    assert len(get_session().ledger) == 0 and panel.conversation.totals.calls == 0


# -- the pure helpers behind the panel ---------------------------------------------------------------
def test_error_line_is_one_bounded_line() -> None:
    line = error_line(ValueError("first\n  second\tthird " + "x" * 1000))
    assert line.startswith("ValueError: first second third x")
    assert "\n" not in line and len(line) < 430 and line.endswith("…")
    assert error_line(RuntimeError()) == "RuntimeError: no details"


async def test_throttle_limits_calls_and_never_drops_the_last() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    throttle = Throttle(lambda: calls.append(loop.time()), 0.05)
    for _ in range(50):
        throttle()
        await asyncio.sleep(0.004)
    last_request = loop.time()
    await asyncio.sleep(0.1)
    assert 2 <= len(calls) < 50, calls
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(calls))  # never closer than the interval
    assert calls[-1] >= last_request - 0.05  # the deferred call for the end of the burst happened
    throttle()  # due at once (the interval has passed)
    throttle()  # deferred...
    throttle.cancel()  # ...and dropped
    count = len(calls)
    await asyncio.sleep(0.1)
    assert len(calls) == count


def test_enter_to_send_without_a_loop_sends_at_once() -> None:
    sent: list[int] = []
    enter = EnterToSend(lambda: sent.append(1), grace=10)
    enter.value_changed("typed")  # a blur: no send
    assert sent == []
    enter.submitted()  # no running loop: nothing to wait for
    assert sent == [1]
    enter.value_changed("more")  # the submit was used up
    assert sent == [1]


def test_export_path_never_overwrites(tmp_path: Path) -> None:
    import datetime as dt

    now = dt.datetime(2025, 1, 2, 3, 4, 5)
    first = export_path(tmp_path, now)
    assert first.name == "flotorch-chat-20250102-030405.md"
    first.write_text("x")
    assert export_path(tmp_path, now).name == "flotorch-chat-20250102-030405-2.md"
