"""``%%flotorch --tools / --approve / --max-steps / --agent`` through IPython's InteractiveShell, against
``offline/scripted``: names from the namespace, the live cards, the cell's value (the ToolRun, shown as
static sanitized cards), approval on stdin without a kernel, and the awaited form with its widget."""

from __future__ import annotations

import builtins
import json
import re
from typing import Any

import pytest
from IPython.core.error import UsageError

from flotorch_nb import BadRequestError
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook import tool_cell
from flotorch_nb.notebook.approval import ApprovalPrompt
from flotorch_nb.tools import ToolRun
from tests.support.html import assert_safe_html
from tests.support.shell import Shell, data_of

PAYLOAD = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def _script(*turns: dict[str, Any]) -> str:
    return json.dumps({"script": {"turns": list(turns)}})


def _calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"name": n, "arguments": a, "id": f"call_{i}"} for i, (n, a) in enumerate(calls)]}


def _define(shell: Shell, ran: list[str]) -> None:
    def get_weather(city: str) -> str:
        """Current weather.

        Args:
            city: The city.
        """
        ran.append(city)
        return f"18 degrees in {city} {PAYLOAD}"

    shell.ip.user_ns["get_weather"] = get_weather
    shell.ip.user_ns["not_a_tool"] = 42


def test_tools_run_the_loop_and_the_value_is_the_tool_run(shell: Shell, gateway: OfflineGateway) -> None:
    ran: list[str] = []
    _define(shell, ran)
    body = _script(_calls(("get_weather", {"city": "Paris"})), {"content": "It is **18** in Paris."})
    value = shell.cell("-m offline/scripted --tools get_weather --no-interpolate", body)
    assert isinstance(value, ToolRun) and value.content == "It is **18** in Paris." and ran == ["Paris"]
    data = data_of(value)
    html = data["text/html"]
    assert (
        'class="flotorch-tool-card flotorch-tool-ok"' in html
        and "get_weather" in html
        and "<strong>18</strong>" in html
    )
    assert_safe_html(
        html, own_markup=True
    )  # the tool's result holds <script> and onerror: shown as text, inert
    assert "&lt;script&gt;window.pwned=2&lt;/script&gt;" in html
    assert "[tool] get_weather" in data["text/plain"] and "It is **18** in Paris." in data["text/plain"]
    # the live preview showed the card while the loop ran, and was cleared for the value
    live = [e for e in shell.pub.published if "flotorch-tool-live" in e.data.get("text/html", "")]
    assert any("flotorch-tool-card" in e.data["text/html"] for e in live)
    assert "It is <strong>18</strong>" in live[-1].data["text/html"]  # the streamed text, as it came
    assert any(e.kind == "clear" for e in shell.pub.events)
    # the run's tokens are the conversation's turn, every step counted
    from flotorch_nb.notebook.session import get_session

    turn = get_session().conversation.turns[-1]
    assert turn.reply == value.content and len(gateway.requests) == 2
    assert turn.footer is not None and turn.footer.total_tokens == value.usage.total_tokens


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("--tools nope", "no 'nope' in the notebook"),
        ("--tools not_a_tool", "not_a_tool is a int, not a function"),
        ("--tools get_weather,", "an empty name"),
        ("--approve", "go with --tools"),
        ("--tools get_weather --max-steps 0", "--max-steps must be"),
        ("--tools get_weather -m a,b", "drop -m a,b"),
        ("--tools get_weather --agent x", "pick one"),
        ("--agent missing", "no such name"),
        ("--agent not_a_tool", "not a pydantic-ai Agent"),
    ],
)
def test_mistakes_are_usage_errors_before_any_request(
    shell: Shell, gateway: OfflineGateway, line: str, says: str
) -> None:
    _define(shell, [])
    with pytest.raises(UsageError, match=says):
        shell.cell(f"-m offline/scripted {line} --no-interpolate", _script({"content": "x"}))
    assert gateway.requests == []


def test_approve_without_a_kernel_asks_on_stdin_and_a_denial_never_runs(
    shell: Shell, gateway: OfflineGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    _define(shell, ran)
    monkeypatch.setattr(builtins, "input", lambda prompt="": "not today")
    body = _script(_calls(("get_weather", {"city": "Oslo"})), {"content": "Sorry."})
    value = shell.cell("-m offline/scripted --tools get_weather --approve --no-interpolate", body)
    call = value.calls[0]
    assert ran == [] and call.denied and call.error == "denied: not today"
    tool_message = next(m for m in gateway.requests[1].body["messages"] if m["role"] == "tool")
    assert tool_message["content"] == "Error: denied: not today"
    assert "denied" in data_of(value)["text/html"]


def test_max_steps_stops_the_loop(shell: Shell) -> None:
    from flotorch_nb.tools import MaxStepsError

    _define(shell, [])
    again = _calls(("get_weather", {"city": "Rome"}))
    with pytest.raises(MaxStepsError) as caught:
        shell.cell(
            "-m offline/scripted --tools get_weather --max-steps 2 --no-interpolate",
            _script(again, again, again),
        )
    assert len(caught.value.run.steps) == 2
    assert "MaxStepsError" in caught.value._render_traceback_()[0]  # type: ignore[attr-defined]  # one line


def _same(text: str) -> str:
    """``text`` but for the request id, which differs from call to call."""
    return re.sub(r"req_[0-9a-f]+", "req_…", text)


def _untyped(city):  # type: ignore[no-untyped-def]  # no type hints: the loop cannot describe it
    return city


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tools", "script", "error", "says"),
    [
        # refused while the loop is prepared, before any request: an option mistake, no traceback
        ("untyped", _script({"content": "x"}), UsageError, "%%flotorch: .*untyped"),
        # a gateway failure: the cell fails, shown as one line
        (
            "get_weather",
            json.dumps({"script": {"error": {"status": 400, "message": "no such tool"}}}),
            BadRequestError,
            "no such tool",
        ),
    ],
)
async def test_the_blocking_and_the_awaited_cell_fail_alike(
    shell: Shell, gateway: OfflineGateway, tools: str, script: str, error: type[Exception], says: str
) -> None:
    """A terminal runs an ``--approve`` cell blocking, a kernel awaits it: the same failure is the same
    error, shown the same way, either way."""
    _define(shell, [])
    shell.ip.user_ns["untyped"] = _untyped
    line = f"-m offline/scripted --tools {tools} --approve --no-interpolate"
    with pytest.raises(error, match=says) as blocking:
        shell.cell(line, script)
    with pytest.raises(error, match=says) as awaited:
        await tool_cell.awaited_cell(shell.ip, line, script)
    failures = (blocking.value, awaited.value)
    assert _same(str(awaited.value)) == _same(str(blocking.value))
    assert [(e.__cause__, e.__suppress_context__) for e in failures] == [(None, error is UsageError)] * 2
    shown = [[_same(line) for line in getattr(e, "_render_traceback_", list)()] for e in failures]
    if error is UsageError:  # IPython's own one line, no traceback
        assert not any(hasattr(e, "_render_traceback_") for e in failures)
    else:
        blocking_lines, awaited_lines = shown
        (one,) = blocking_lines  # one line, not frames of library code
        assert awaited_lines == [one] and "BadRequestError" in one and _same(str(blocking.value)) in one
    assert all(r.body["model"] == "offline/scripted" for r in gateway.requests)
    assert len(gateway.requests) == (0 if error is UsageError else 2)  # once per path, never retried


def test_the_transformer_awaits_only_approval_cells_in_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = ["get_weather_call = 1\n"]
    magic = ["get_ipython().run_cell_magic('flotorch', '--tools f --approve', 'hi\\n')\n"]
    plain = ["get_ipython().run_cell_magic('flotorch', '--tools f', 'hi\\n')\n"]
    assert tool_cell.await_approval_cells(magic) == magic  # no kernel here: left alone
    monkeypatch.setattr(tool_cell, "_kernel_can_await", lambda: True)
    assert tool_cell.await_approval_cells(cell) == cell
    assert tool_cell.await_approval_cells(plain) == plain
    (awaited,) = tool_cell.await_approval_cells(magic)
    assert awaited.startswith("await __import__('flotorch_nb.notebook.tool_cell'")
    assert awaited.endswith("awaited_cell(get_ipython(), '--tools f --approve', 'hi\\n')\n")


def _prompts() -> list[ApprovalPrompt]:
    return [p for p in _LIVE if not p.approve_button.disabled]


_LIVE: list[ApprovalPrompt] = []


@pytest.mark.anyio
async def test_the_awaited_cell_shows_approve_deny_and_waits_for_the_click(
    shell: Shell, gateway: OfflineGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form a kernel runs (``awaited_cell``): each call waits for its widget, clicked from Python."""
    import asyncio

    ran: list[str] = []
    _define(shell, ran)
    original = ApprovalPrompt.__init__

    def keep(self: ApprovalPrompt, *args: Any) -> None:
        original(self, *args)
        _LIVE.append(self)

    monkeypatch.setattr(ApprovalPrompt, "__init__", keep)
    body = _script(
        _calls(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lima"})),
        {"content": "Paris: 18."},
    )
    cell = asyncio.ensure_future(
        tool_cell.awaited_cell(
            shell.ip, "-m offline/scripted --tools get_weather --approve --no-interpolate", body
        )
    )
    for _ in range(500):
        if len(_prompts()) == 2:
            break
        await asyncio.sleep(0.01)
    paris, lima = sorted(_prompts(), key=lambda p: p.call.arguments)[::-1]
    assert not cell.done() and ran == []  # waiting for the person
    paris.approve_button.click()
    lima.reason.value = "not that one"
    lima.deny_button.click()
    value = await asyncio.wait_for(cell, 10)
    assert ran == ["Paris"] and value.content == "Paris: 18."
    approved, denied = value.calls
    assert approved.approved is True and denied.error == "denied: not that one"
    assert paris.approve_button.disabled and "Approved" in paris.decided.value
    widgets = [e for e in shell.pub.published if "application/vnd.jupyter.widget-view+json" in e.data]
    assert len(widgets) == 2  # one prompt per call, in the cell's output
    _LIVE.clear()


def test_agent_runs_a_pydantic_ai_agent_with_tool_cards(shell: Shell, gateway: OfflineGateway) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent

    from flotorch_nb import FlotorchLLM
    from flotorch_nb.pydantic_ai import FlotorchModel

    llm = FlotorchLLM("offline/scripted", "test-key-agent-cell", gateway.url)
    agent = Agent(FlotorchModel(llm))

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    shell.ip.user_ns["agent"] = agent
    body = _script(
        _calls(("add", {"a": "two", "b": 3})),  # invalid: pydantic-ai asks the model to retry
        _calls(("add", {"a": 2, "b": 3})),
        {"content": "2 + 3 = **5**"},
    )
    value = shell.cell("--agent agent --no-interpolate", body)
    assert value.output == "2 + 3 = **5**" and value.result.output == value.output
    bad, good = value.cards
    assert bad.state == "error" and bad.error is not None and "a" in bad.error
    assert (good.name, good.result, good.state) == ("add", "5", "ok")
    html = data_of(value)["text/html"]
    assert html.count('class="flotorch-tool-card ') == 2 and "<strong>5</strong>" in html
    assert_safe_html(html, own_markup=True)
    assert len(gateway.requests) == 3
    llm.close()


def test_a_terminal_prints_the_text_and_a_line_per_call(
    shell: Shell, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flotorch_nb.notebook.tool_cell.is_terminal", lambda _shell: True)
    ran: list[str] = []
    _define(shell, ran)
    body = _script(_calls(("get_weather", {"city": "Rome"})), {"content": "Rome: 18."})
    shell.cell("-m offline/scripted --tools get_weather --no-interpolate", body)
    out = capsys.readouterr().out
    assert '[tool] get_weather {"city": "Rome"} -> 18 degrees in Rome' in out and "Rome: 18." in out
    assert not any("flotorch-tool-live" in e.data.get("text/html", "") for e in shell.pub.published)


def test_a_terminal_shows_control_characters_of_tool_results_and_text_as_symbols(
    shell: Shell, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool's result and the model's text are printed with their control characters made visible:
    neither can clear the screen, set the title or hide what the call did."""
    monkeypatch.setattr("flotorch_nb.notebook.tool_cell.is_terminal", lambda _shell: True)
    escapes = "\x1b[2J\x1b]0;pwned\x07\x1b[8mhidden\rover\x9b1m"

    def read_file(path: str) -> str:
        """Read a file.

        Args:
            path: The file.
        """
        return f"contents {escapes}"

    shell.ip.user_ns["read_file"] = read_file
    body = _script(_calls(("read_file", {"path": "a.txt"})), {"content": f"Done.\t{escapes}"})
    run = shell.cell("-m offline/scripted --tools read_file --no-interpolate", body)
    assert run.calls[0].result == f"contents {escapes}"  # what the model got back is unchanged
    out = capsys.readouterr().out
    assert re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", out) is None
    assert "-> contents ␛[2J␛]0;pwned␇␛[8mhidden␍over\\x9b1m" in out and "Done.\t␛[2J" in out
    plain = data_of(run)["text/plain"]  # what terminal IPython prints as Out[n]
    assert re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", plain) is None and "Done.\t␛[2J" in plain


def test_an_agent_cell_fails_like_a_tools_cell(shell: Shell, gateway: OfflineGateway) -> None:
    """A gateway failure inside ``--agent`` fails the cell as one line, as it does inside ``--tools``."""
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent

    from flotorch_nb import FlotorchLLM
    from flotorch_nb.pydantic_ai import FlotorchModel

    llm = FlotorchLLM("offline/scripted", "test-key-agent-cell", gateway.url)
    shell.ip.user_ns["agent"] = Agent(FlotorchModel(llm))
    body = json.dumps({"script": {"error": {"status": 400, "message": "no such tool"}}})
    with pytest.raises(BadRequestError, match="no such tool") as caught:
        shell.cell("--agent agent --no-interpolate", body)
    (one,) = caught.value._render_traceback_()  # type: ignore[attr-defined]  # one line, no frames
    assert "BadRequestError" in one and "no such tool" in one
    llm.close()
