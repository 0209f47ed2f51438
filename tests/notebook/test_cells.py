"""What a ``%%flotorch`` / ``%flotorch`` cell does at the edges: how it fails, how it streams in a
terminal, what the launcher's gateway is called, paths as typed, JSON that is JSON, and text that
cannot be encoded. Through IPython's real ``InteractiveShell``, against the offline gateway.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from flotorch_nb import BudgetExceededError, LLMResponse, ResponseError, ServerError
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook import lab
from flotorch_nb.notebook import magics as flotorch_magics
from flotorch_nb.notebook.session import get_session
from tests.support.shell import Shell

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def shown_lines(text: str) -> list[str]:
    return [line for line in ANSI.sub("", text).splitlines() if line.strip()]


# -- 4a: the launcher's offline gateway is called offline everywhere --------------------------------------
@pytest.mark.parametrize("model", [None, "my-team/default-model"])
def test_under_the_lab_launcher_config_says_offline_as_the_banner_does(
    shell: Shell,
    offline_env: OfflineGateway,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    model: str | None,
) -> None:
    """``python -m flotorch_nb.lab`` starts the gateway outside the kernel and sets the environment."""
    given = {"FLOTORCH_MODEL_ID": model} if model else {}
    for name, value in lab.offline_env(given, offline_env.url, "offline-launcher-key").items():
        if name.startswith("FLOTORCH_"):
            monkeypatch.setenv(name, value)
    capsys.readouterr()
    flotorch_magics.load_ipython_extension(shell.ip)
    banner = capsys.readouterr().out
    shell.line("")
    config = capsys.readouterr().out
    assert "OFFLINE gateway" in banner
    assert "mode      OFFLINE (embedded gateway)" in config, config


def test_a_real_gateway_is_still_called_live(
    shell: Shell,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLOTORCH_BASE_URL", "https://gateway.example.com")
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "openai/gpt-4o-mini")
    capsys.readouterr()
    shell.line("")
    assert "mode      live" in capsys.readouterr().out


# -- 4b: a failing cell fails, in one line ------------------------------------------------------------------
def test_a_gateway_failure_fails_the_cell_in_one_clear_line(
    shell: Shell,
    offline_env: OfflineGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    offline_env.faults.add(Fault(status=503, message="upstream is down"))
    capsys.readouterr()
    result = shell.run("%%flotorch\nhi")
    assert isinstance(result.error_in_exec, ServerError)  # the cell failed (what nbclient reports)
    out = capsys.readouterr()
    lines = shown_lines(out.out + out.err)
    assert len(lines) == 1, lines
    assert lines[0].startswith("ServerError: HTTP 503") and "upstream is down" in lines[0]


def test_a_spent_budget_fails_the_cell_in_one_line_and_xmode_verbose_shows_everything(
    shell: Shell,
    offline_env: OfflineGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shell.cell("--no-stream", "What is a tide?")
    shell.line("budget 1")
    capsys.readouterr()
    result = shell.run("%%flotorch\nOne more")
    assert isinstance(result.error_in_exec, BudgetExceededError)
    (line,) = shown_lines(capsys.readouterr().out)
    assert line.startswith("BudgetExceededError: token budget spent")
    shell.ip.run_line_magic("xmode", "Verbose")
    try:
        shell.run("%%flotorch\nOne more")
        assert len(shown_lines(capsys.readouterr().out)) > 5  # the frames, for whoever debugs us
    finally:
        shell.ip.run_line_magic("xmode", "Context")


# -- 4c: terminal IPython streams plain text -----------------------------------------------------------------
@pytest.fixture
def terminal(offline_env: OfflineGateway, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """A shell whose display publisher can only print text, as terminal IPython's."""
    ip = InteractiveShell.instance()
    monkeypatch.setenv("FLOTORCH_NO_NEST_ASYNCIO", "1")
    monkeypatch.setattr(ip, "display_pub", DisplayPublisher(shell=ip))
    flotorch_magics.load_ipython_extension(ip)
    yield ip


def test_in_a_terminal_the_answer_streams_as_plain_text(
    terminal: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    resp = terminal.run_cell_magic("flotorch", "-m offline/echo", "one two three four five six")
    out = capsys.readouterr().out
    assert out == resp.content + "\n"  # the pieces, as they came: no previews, no status, no codes
    assert "\x1b" not in out and "[streaming" not in out


#: What a hostile answer or tool result could send a terminal: clear the screen, home the cursor, set
#: the window title, conceal text, back up over it, return to the line's start, a C1 CSI, and a bell.
ESCAPES = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b[8mhidden\x1b[0m ba\x08\x08ck\rover \x9b31m red"
#: Control characters a terminal acts on: everything in C0 and C1 but newline and tab, and DEL.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_in_a_terminal_an_answer_cannot_drive_the_terminal(
    terminal: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    """The answer keeps every character, but what is printed shows the control characters as
    symbols (newline and tab stay): an answer cannot clear the screen, set the title or hide text."""
    capsys.readouterr()
    resp = terminal.run_cell_magic("flotorch", "-m offline/echo", f"before\tafter\n{ESCAPES}")
    assert "\x1b[2J" in resp.content and "\x9b" in resp.content  # the value is the answer as it came
    out = capsys.readouterr().out
    assert CONTROL.search(out) is None
    assert "\t" in out and "\n" in out and "␛[2J" in out and "␛]0;pwned␇" in out and "\\x9b" in out


@pytest.mark.parametrize("fmt", ["markdown", "text", "code"])
def test_in_a_terminal_the_value_and_the_history_cannot_drive_the_terminal(
    terminal: InteractiveShell, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Terminal IPython prints the cell's value (``Out[n]``) and ``%flotorch history`` as their plain
    text: it shows the control characters as symbols too, while the answer keeps them."""
    resp = terminal.run_cell_magic("flotorch", f"-m offline/echo --no-stream -f {fmt}", f"x {ESCAPES}")
    terminal.rl_next_input = None  # -f code offered the code as the next cell: not the next test's
    assert "\x1b[2J" in resp.content
    data, _ = resp._repr_mimebundle_()
    assert CONTROL.search(data["text/plain"]) is None and "x ␛[2J␛[H␛]0;pwned␇" in data["text/plain"]
    capsys.readouterr()
    terminal.run_line_magic("flotorch", "history")
    out = capsys.readouterr().out
    assert CONTROL.search(out) is None and "x ␛[2J␛[H␛]0;pwned␇" in out


def test_in_a_terminal_an_error_message_cannot_drive_the_terminal(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-line error of a failed cell shows the gateway's message with its control characters
    made visible; only our own colour code is left."""
    body = json.dumps({"script": {"error": {"status": 400, "message": f"bad {ESCAPES}"}}})
    result = shell.run(f"%%flotorch -m offline/scripted --no-interpolate\n{body}")
    (line,) = result.error_in_exec._render_traceback_()
    assert line.startswith("\x1b[0;31mBadRequestError\x1b[0m: ")
    assert CONTROL.search(line.removeprefix("\x1b[0;31mBadRequestError\x1b[0m: ")) is None
    assert "bad ␛[2J␛[H␛]0;pwned␇␛[8mhidden␛[0m ba␈␈ck over \\x9b31m red" in line


# -- 5: paths arrive as typed -------------------------------------------------------------------------------
def test_paths_keep_their_backslashes(
    shell: Shell,
    tmp_path: Path,
) -> None:
    shell.cell("-m offline/echo", "remember this")
    typed = f"{tmp_path}/C:\\Users\\me\\chat.md"  # a Windows path is one odd file name here
    shell.run(f"%flotorch export {typed}")
    assert (tmp_path / "C:\\Users\\me\\chat.md").is_file()
    spaced = f"{tmp_path}/my notes\\chat.md"
    shell.run(f'%flotorch export "{spaced}"')
    assert (tmp_path / "my notes\\chat.md").is_file()  # quotes group and go, backslashes stay
    folder = tmp_path / "rec\\ordings"
    shell.run(f"%flotorch record {folder}")
    assert os.environ["FLOTORCH_RECORD"] == str(folder)
    shell.line("live")


def test_a_system_prompt_keeps_its_backslashes(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.cell('-m offline/echo -s "Match \\d+ in C:\\temp"', "hi")
    assert offline_env.requests[-1].body["messages"][0]["content"] == "Match \\d+ in C:\\temp"


# -- 6: JSON output is standard JSON and agrees with .parsed -------------------------------------------------
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_with_nan_or_infinity_is_refused_clearly(
    shell: Shell,
    constant: str,
) -> None:
    with pytest.raises(ResponseError, match=r"NaN or Infinity.*standard JSON"):
        shell.cell("-f json -m offline/echo -o r", f'{{"score": {constant}}}')
    assert not [e for e in shell.pub.events if "application/json" in e.data]  # never shown as JSON
    assert shell.ip.user_ns["r"].content == f'{{"score": {constant}}}'  # the answer is kept to look at


def test_a_schema_answer_with_nan_is_refused_too(shell: Shell) -> None:
    shell.ip.run_cell("from pydantic import BaseModel\nclass Score(BaseModel):\n    score: float\n")
    with pytest.raises(ResponseError, match="NaN or Infinity"):
        shell.cell("--schema Score -m offline/echo", '{"score": NaN}')


def test_json_shown_is_the_parsed_value_and_saves_as_json(shell: Shell) -> None:
    value = shell.cell("-f json -m offline/echo", '{"score": 1.5, "tags": ["a"], "none": null}')
    data = value._repr_mimebundle_()[0]["application/json"]
    assert data == value.parsed == {"score": 1.5, "tags": ["a"], "none": None}
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in data.values())


# -- 7: text that came in stays displayable and exportable ---------------------------------------------------
def test_a_lone_surrogate_in_a_prompt_is_shown_listed_and_exported(
    shell: Shell,
    offline_env: OfflineGateway,
    tmp_path: Path,
) -> None:
    shell.ip.user_ns["name"] = "report\udcff.txt"  # what os.listdir() gives for a badly encoded name
    value = shell.cell("-m offline/echo", "Summarize {name}")
    assert isinstance(value, LLMResponse)
    assert offline_env.requests[-1].body["messages"][-1]["content"] == "Summarize report\ufffd.txt"
    shell.line("history")
    for event in shell.pub.events:  # every display (preview, history) and the cell's value
        json.dumps(event.data, ensure_ascii=False).encode("utf-8")
    for text in cast(Any, value)._repr_mimebundle_()[0].values():
        text.encode("utf-8")
    target = tmp_path / "chat.md"
    shell.line(f"export {target}")
    assert "report\ufffd.txt" in target.read_text(encoding="utf-8")
    assert get_session().conversation.transcript_text().encode("utf-8")


def test_an_answer_holding_a_lone_surrogate_still_displays() -> None:
    """A gateway may send a "\\udcff" JSON escape: the text holds a surrogate the display cannot encode."""
    from flotorch_nb.notebook import views

    resp = LLMResponse("bad \udcff answer", {}, model="m")
    for bundle in (resp._repr_mimebundle_(), views.answer_bundle(resp, "text")):
        for text in bundle.values():
            assert "bad \ufffd answer" in text and text.encode("utf-8")
