"""``%%flotorch`` / ``%flotorch`` through IPython's real ``InteractiveShell``, against the offline gateway.

Display output is recorded by a publisher that keeps *every* publish, update and clear in order
(``capture_output`` forgets what was cleared, and the streaming preview is cleared on purpose), and
a cell's value, as the displayhook sends it (the ``execute_result``), is recorded in the same list.
Requests are real HTTP on loopback; ``gateway.requests`` shows what the gateway received.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from flotorch_nb import (
    AuthenticationError,
    BudgetExceededError,
    FlotorchLLM,
    LLMResponse,
    ResponseError,
    ServerError,
    StreamError,
    StructuredOutputError,
)
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook import commands as _magic_commands
from flotorch_nb.notebook import magics as flotorch_magics
from flotorch_nb.notebook.session import get_session
from flotorch_nb.replay import ReplayMissError
from tests.support.html import assert_safe_html
from tests.support.shell import SECRET, XSS, Event, Shell, data_of, html_of


@pytest.fixture(scope="module")
def slow_gateway() -> Iterator[OfflineGateway]:
    """A gateway that pauses 10 ms between streamed tokens, so a preview has time to update."""
    with OfflineGateway(token_delay=0.01, record=True) as gw:
        yield gw


# -- loading ----------------------------------------------------------------------------------------
def test_load_ext_registers_both_magics_is_idempotent_and_names_the_gateway(
    shell: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    flotorch_magics.load_ipython_extension(shell.ip)  # the fixture loaded it once already
    flotorch_magics.load_ipython_extension(shell.ip)
    assert shell.ip.find_cell_magic("flotorch") is not None
    assert shell.ip.find_line_magic("flotorch") is not None
    out = capsys.readouterr().out
    url = os.environ["FLOTORCH_BASE_URL"]
    # Configured through the environment (as the lab launcher does), but still offline models: say so.
    banner = f"flotorch_nb: using the OFFLINE gateway at {url} (model offline/assistant;"
    assert out.count(banner) == 2
    assert os.environ["FLOTORCH_API_KEY"] not in out
    assert isinstance(shell.cell("--no-stream", "still works after loading twice"), LLMResponse)


def test_unload_removes_the_magics(shell: Shell) -> None:
    flotorch_magics.unload_ipython_extension(shell.ip)
    assert shell.ip.find_cell_magic("flotorch") is None and shell.ip.find_line_magic("flotorch") is None
    flotorch_magics.load_ipython_extension(shell.ip)
    assert shell.ip.find_cell_magic("flotorch") is not None


def test_help_documents_every_option_and_subcommand(shell: Shell) -> None:
    cell_doc = shell.ip.find_cell_magic("flotorch").__doc__
    options = "--model --temperature --max-tokens --system --format --schema --output --continue --new"
    options += " --no-stream --no-interpolate --map --concurrency --compare --keep-errors"
    for option in [*options.split(), "%%flotorch"]:
        assert option in cell_doc
    line_doc = shell.ip.find_line_magic("flotorch").__doc__
    subcommands = ["config", "model", "base_url", "login", "usage", "budget", "history", "reset"]
    subcommands += ["export", "record", "replay", "live", "cache", "price", "provenance", "log", "logs"]
    assert sorted([*_magic_commands.COMMANDS, "login"]) == sorted(subcommands)  # none undocumented
    for sub in subcommands:
        assert f"\n  {sub}" in line_doc


def _run_in_a_kernel_like_loop(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Load the extension and run the seed's ``asyncio.run(main())`` sample while a loop is running,
    as ipykernel runs cells; in a fresh interpreter, so nest-asyncio patches nothing of ours."""
    script = textwrap.dedent(
        """
        import asyncio
        from IPython.core.interactiveshell import InteractiveShell

        SEED = '''
        import asyncio
        from flotorch_nb import FlotorchLLM
        llm = FlotorchLLM()
        async def main():
            r = await llm.ainvoke([{"role": "user", "content": "A haiku about the sea."}])
            return r
        r = asyncio.run(main())
        print("SEED-OK", r.offline, len(r.content) > 0)
        '''

        async def kernel():
            ip = InteractiveShell.instance()
            ip.run_line_magic("load_ext", "flotorch_nb")
            ip.run_line_magic("reload_ext", "flotorch_nb")  # loading twice is harmless
            ip.run_cell(SEED)
            print("PATCHED", hasattr(asyncio, "_nest_patched"))

        asyncio.run(kernel())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    env.update(IPYTHONDIR=str(tmp_path / "ipython"), **env_extra)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )


def test_nest_asyncio_lets_the_seed_sample_run_inside_a_running_loop(tmp_path: Path) -> None:
    done = _run_in_a_kernel_like_loop({}, tmp_path)
    assert "SEED-OK True True" in done.stdout, done.stdout + done.stderr
    assert "PATCHED True" in done.stdout
    banners = [line for line in done.stdout.splitlines() if "using the OFFLINE gateway at" in line]
    assert len(banners) == 2 and banners[0] == banners[1]  # one gateway, started once


def test_nest_asyncio_opt_out_leaves_asyncio_alone(tmp_path: Path) -> None:
    done = _run_in_a_kernel_like_loop({"FLOTORCH_NO_NEST_ASYNCIO": "1"}, tmp_path)
    assert "PATCHED False" in done.stdout, done.stdout + done.stderr
    assert "SEED-OK True" not in done.stdout
    assert "asyncio.run() cannot be called from a running event loop" in done.stdout + done.stderr


def test_importing_the_package_imports_no_notebook_machinery() -> None:
    code = (
        "import sys, flotorch_nb\n"
        "print(sorted(m for m in ('IPython', 'ipywidgets', 'traitlets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- streaming and the final rendering --------------------------------------------------------------
def test_the_answer_streams_into_one_display_then_becomes_the_cells_value(
    shell: Shell, slow_gateway: OfflineGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_BASE_URL", slow_gateway.url)
    result = shell.run("%%flotorch\nWrite a python function that adds two numbers")
    resp = result.result
    assert isinstance(resp, LLMResponse)
    assert shell.ip.user_ns["_"] is resp and shell.ip.user_ns["Out"][result.execution_count] is resp
    first, *updates = shell.pub.published
    display_id = first.transient["display_id"]
    assert all(u.update and u.transient["display_id"] == display_id for u in updates)
    # Several intermediate renderings, each a growing prefix of the answer, but throttled.
    texts = [u.data["text/plain"].removesuffix("\n[streaming…]") for u in updates]
    assert len(texts) >= 3 and resp.usage is not None and len(texts) < resp.usage.output_tokens
    assert all(resp.content.startswith(t) for t in texts) and len(set(texts)) == len(texts)
    assert all('class="flotorch-streaming"' in u.data["text/html"] for u in updates)
    # The preview is cleared (wait=True: when the final output arrives), and nothing else is drawn:
    # the saved notebook holds one rendering, the LLMResponse as Out[n].
    assert shell.pub.events[-2:] == [Event("clear", wait=True), Event("result", data_of(resp))]
    html = html_of(resp)
    assert 'class="flotorch-answer"' in html and 'class="flotorch-footer"' in html
    assert "OFFLINE gateway" in html and f"total {resp.usage.total_tokens} tokens" in html
    assert slow_gateway.requests[-1].body["stream"] is True
    assert get_session().ledger.totals.calls == 1


def test_no_stream_shows_no_preview_and_returns_the_response(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    resp = shell.cell("--no-stream -o answer", "Say hello")
    assert isinstance(resp, LLMResponse) and shell.ip.user_ns["answer"] is resp
    assert shell.pub.events == []
    assert offline_env.requests[-1].body.get("stream") in (None, False)


def test_options_reach_the_gateway(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.cell('-m offline/echo -t 0.2 --max-tokens 50 -s "You are terse."', "echo this")
    body = offline_env.requests[-1].body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("offline/echo", 0.2, 50)
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "echo this"},
    ]


def test_model_output_is_sanitized_in_the_preview_and_the_final_html(shell: Shell) -> None:
    resp = shell.cell("-m offline/echo", XSS)
    assert resp.content == XSS  # the echo model really sent the payload back
    for html in [html_of(resp), *(e.data["text/html"] for e in shell.pub.published)]:
        assert_safe_html(html, own_markup=True)
    # The markup is shown as text, the Markdown is rendered.
    assert "&lt;img src=x onerror=" in html_of(resp) and "<strong>bold</strong>" in html_of(resp)


# -- formats ----------------------------------------------------------------------------------------
CITY = "from pydantic import BaseModel\nclass City(BaseModel):\n    name: str\n    population: int\n"
#: format -> (options, prompt)
FORMAT_CELLS = {
    "markdown": ("", "Write a python function that adds two numbers"),
    "text": ("-f text", "List three steps to make tea"),
    "code": ("-f code", "Write a python function that adds two numbers"),
    "json": ("-f json", "List three colors as JSON"),
    "schema": ("--schema City", "Describe Paris"),
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
@pytest.mark.parametrize("fmt", list(FORMAT_CELLS))
def test_in_every_format_the_cells_value_is_the_response_rendered_once(
    shell: Shell, offline_env: OfflineGateway, llm: FlotorchLLM, fmt: str, stream: bool
) -> None:
    shell.ip.run_cell(CITY)
    options, prompt = FORMAT_CELLS[fmt]
    options += " -o kept" + ("" if stream else " --no-stream")
    result = shell.run(f"%%flotorch {options}\n{prompt}")
    next_cell, shell.ip.rl_next_input = getattr(shell.ip, "rl_next_input", None), None
    n, value = result.execution_count, result.result
    assert result.error_in_exec is None
    # Out[n], _ and -o VAR are one object: an LLMResponse ...
    assert isinstance(value, LLMResponse)
    ns = shell.ip.user_ns
    assert ns["Out"][n] is value and ns["_"] is value and ns["kept"] is value
    # ... with every field of the response the client built (the one in the conversation and ledger) ...
    session = get_session()
    built = session.conversation.turns[-1].response
    assert built is not None
    for f in dataclasses.fields(LLMResponse):
        assert getattr(value, f.name) == getattr(built, f.name), f.name
    assert session.ledger.entries[-1].total_tokens == value.metadata["totalTokens"]
    # ... which is what the gateway answers to that request.
    sent = offline_env.requests[-1].body
    direct = llm.invoke(sent["messages"], response_format=sent.get("response_format"))
    assert (value.content, value.usage) == (direct.content, direct.usage) and value.usage is not None
    assert value.metadata["totalTokens"] == direct.metadata["totalTokens"] > 0

    # Exactly one final rendering: the execute_result. The only other output is the streaming
    # preview, drawn once, updated, and cleared when the result arrives.
    (final,) = shell.pub.results
    drawn = [e for e in shell.pub.published if not e.update]
    if stream:
        assert len(drawn) == 1 and "flotorch-streaming" in drawn[0].data["text/html"]
        assert shell.pub.events[-2:] == [Event("clear", wait=True), final]
    else:
        assert shell.pub.events == [final]
    data = final.data
    assert data == data_of(value)
    footer = f"total {value.usage.total_tokens} tokens"
    assert footer in data["text/plain"] and "OFFLINE gateway" in data["text/plain"]
    assert footer in data["text/html"] and 'class="flotorch-footer"' in data["text/html"]
    assert 'class="flotorch-answer"' in data["text/html"]
    assert_safe_html(data["text/html"], own_markup=True)
    if fmt == "text":
        assert data["text/plain"].startswith(value.content) and "<strong>" not in data["text/html"]
    elif fmt == "code":
        assert next_cell and data["text/plain"].startswith(next_cell) and "```" not in data["text/plain"]
    elif fmt == "json":
        assert data["application/json"] == value.parsed == json.loads(value.content)
    elif fmt == "schema":
        assert type(value.parsed).__name__ == "City"
        assert data["application/json"] == value.parsed.model_dump(mode="json")
    else:
        assert "application/json" not in data and next_cell is None

    # A later cell quotes the answer's text through {Out[n]}.
    shell.cell("-m offline/echo", f"Quote: {{Out[{n}]}}")
    assert offline_env.requests[-1].body["messages"][-1]["content"] == f"Quote: {value.content}"


def test_text_format_shows_plain_text_once(shell: Shell) -> None:
    value = shell.cell("-f text -m offline/echo -o r", XSS)
    assert value is shell.ip.user_ns["r"] and value.content == XSS
    clear = shell.pub.events.index(Event("clear", wait=True))
    assert shell.pub.events[clear + 1 :] == []  # the final rendering is the value's, not a display
    final = data_of(value)
    assert final["text/plain"].startswith(XSS) and "OFFLINE gateway" in final["text/plain"]
    html = final["text/html"]
    assert_safe_html(html, own_markup=True)
    assert "**bold**" in html and "&lt;img src=x" in html and 'class="flotorch-answer"' in html


def test_code_format_inserts_the_first_code_block_as_the_next_cell(shell: Shell) -> None:
    resp = shell.cell("-f code -o r", "Write a python function that adds two numbers")
    assert resp is shell.ip.user_ns["r"]
    code = shell.ip.rl_next_input
    shell.ip.rl_next_input = None
    assert code and "```" not in code and f"```python\n{code}\n```" in resp.content
    compile(code, "<answer>", "exec")  # it is the code, not prose
    final = data_of(resp)
    assert final["text/plain"].startswith(code)
    assert '<code class="language-python">' in final["text/html"]
    assert_safe_html(final["text/html"], own_markup=True)


def test_json_format_requests_json_and_shows_it_as_application_json(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    resp = shell.cell("-f json", "List three colors as JSON")
    assert offline_env.requests[-1].body["response_format"] == {"type": "json_object"}
    assert resp.parsed == json.loads(resp.content) and isinstance(resp.parsed, dict)
    final = data_of(resp)
    assert final["application/json"] == resp.parsed
    assert final["text/plain"].startswith(json.dumps(resp.parsed, indent=2))


def test_json_format_fails_the_cell_when_the_answer_is_not_json(shell: Shell) -> None:
    with pytest.raises(ResponseError, match="not JSON"):
        shell.cell("-f json -m offline/echo -o r", "plainly not json")
    assert shell.pub.published[-1].data["text/plain"].startswith("plainly not json")  # shown anyway
    assert shell.ip.user_ns["r"].content == "plainly not json"  # and kept for a look
    result = shell.run("%%flotorch -f json -m offline/echo\nplainly not json")
    assert isinstance(result.error_in_exec, ResponseError) and shell.pub.results == []


def test_schema_gives_a_validated_instance(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.ip.run_cell(CITY)
    resp = shell.cell("--schema City", "Describe Paris")
    assert type(resp.parsed).__name__ == "City" and isinstance(resp.parsed.population, int)
    assert offline_env.requests[-1].body["response_format"]["type"] == "json_schema"
    assert data_of(resp)["application/json"] == resp.parsed.model_dump(mode="json")


def test_a_formatted_response_is_still_a_plain_response_to_copy_pickle_and_replace() -> None:
    import copy
    import pickle

    from flotorch_nb._response import Usage
    from flotorch_nb.notebook.views import FormattedResponse, answer_bundle

    resp = LLMResponse("`x`", {"totalTokens": 3}, usage=Usage(1, 2, 3), model="m")
    shown = FormattedResponse.of(resp, answer_bundle(resp, "text"))
    assert repr(shown) == repr(resp) and str(shown) == "`x`"
    for twin in (copy.copy(shown), copy.deepcopy(shown), pickle.loads(pickle.dumps(shown))):
        assert data_of(twin) == data_of(shown) and twin.usage == resp.usage
    # A changed copy no longer is the answer the bundle showed: it renders as an LLMResponse again.
    changed = dataclasses.replace(shown, content="other")
    assert data_of(changed) == data_of(dataclasses.replace(resp, content="other"))


@pytest.mark.parametrize("stream", ["", "--no-stream "])
def test_an_answer_that_fails_the_schema_fails_the_cell_but_its_tokens_are_counted(
    shell: Shell, offline_env: OfflineGateway, stream: str
) -> None:
    shell.ip.run_cell(
        "from pydantic import BaseModel, field_validator\n"
        "class Strict(BaseModel):\n    name: str\n"
        "    @field_validator('name')\n    @classmethod\n"
        "    def never(cls, v):\n        raise ValueError('refused by the validator')\n"
    )
    with pytest.raises(StructuredOutputError, match="refused by the validator") as caught:
        shell.cell(f"{stream}--schema Strict", "Describe Paris")
    spent = caught.value.response
    assert spent is not None and spent.usage is not None and spent.usage.total_tokens > 0
    totals = get_session().ledger.totals
    assert (totals.calls, totals.total_tokens) == (1, spent.usage.total_tokens)


# -- interpolation ----------------------------------------------------------------------------------
def test_interpolation_fills_names_and_leaves_code_and_unknown_names(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns.update(topic="tides", cfg={"depth": 3})
    shell.run("x = 41 + 1")
    cell_number = shell.ip.execution_count - 1
    shell.cell(
        "-m offline/echo",
        f"About {{topic}} at depth {{cfg['depth']}}: {{In[{cell_number}]}} {{nope}} {{}} {{{{topic}}}}",
    )
    sent = offline_env.requests[-1].body["messages"][-1]["content"]
    assert sent == "About tides at depth 3: x = 41 + 1 {nope} {} {topic}"
    shell.cell("-m offline/echo --no-interpolate", "About {topic}")
    assert offline_env.requests[-1].body["messages"][-1]["content"] == "About {topic}"


def test_an_earlier_answer_can_be_quoted_by_name(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.cell("-m offline/echo -o first", "the first answer")
    shell.cell("-m offline/echo", "Improve: {first}")
    assert offline_env.requests[-1].body["messages"][-1]["content"] == "Improve: the first answer"


# -- conversation -----------------------------------------------------------------------------------
def test_each_cell_is_fresh_unless_continued(shell: Shell, offline_env: OfflineGateway) -> None:
    first = shell.cell("-s 'Be brief.'", "What is a tide?")
    shell.cell("-c", "And why twice a day?")
    sent = offline_env.requests[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a tide?"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "And why twice a day?"},
    ]
    shell.cell("", "Unrelated question")
    assert offline_env.requests[-1].body["messages"] == [{"role": "user", "content": "Unrelated question"}]
    shell.cell("-n", "Another fresh start")
    assert len(offline_env.requests[-1].body["messages"]) == 1
    (turn,) = get_session().conversation.turns
    assert turn.user == "Another fresh start" and turn.status == "done"


def test_history_export_and_reset(shell: Shell, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = shell.cell("", "What is a tide?")
    b = shell.cell("-c -m offline/echo", "Say <b>this</b> back")
    shell.line("history")
    history = shell.pub.published[-1].data
    assert "## You\n\nWhat is a tide?" in history["text/plain"]
    assert "&lt;b&gt;this&lt;/b&gt;" in history["text/html"]
    assert_safe_html(history["text/html"], own_markup=True)
    target = tmp_path / "chat.md"
    shell.line(f"export '{target}'")
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# FloTorch conversation")
    assert text.index("What is a tide?") < text.index(a.content) < text.index("Say <b>this</b> back")
    assert b.usage is not None and f"offline/echo · in {b.usage.input_tokens} · out " in text
    assert text.count("OFFLINE gateway") == 2
    capsys.readouterr()
    shell.line("reset")
    assert "cleared the conversation (2 turns) and the usage ledger (2 calls)" in capsys.readouterr().out
    assert get_session().conversation.turns == [] and len(get_session().ledger) == 0
    with pytest.raises(UsageError, match="no conversation"):
        shell.line(f"export {tmp_path / 'empty.md'}")


# -- usage and budget -------------------------------------------------------------------------------
def test_usage_table_numbers_are_the_sums_of_the_responses(shell: Shell) -> None:
    responses = [
        shell.cell("", "What is a tide?"),
        shell.cell("", "What is a wave?"),
        shell.cell("-m offline/echo", "echo me"),
    ]
    shell.line("usage")
    bundle, chart = (event.data for event in shell.pub.published[-2:])  # the table, then its chart
    assert chart["text/plain"].startswith("Tokens per model: offline/assistant: ")
    rows = {line.split()[0]: line.split()[1:] for line in bundle["text/plain"].splitlines()[1:]}
    for model in ("offline/assistant", "offline/echo", "total"):
        mine = [r for r in responses if model in ("total", r.model)]
        sums = [sum(r.metadata[k] for r in mine) for k in ("inputTokens", "outputTokens", "totalTokens")]
        assert rows[model] == [str(n) for n in (len(mine), *sums, 0)]
    assert '<table class="flotorch-usage">' in bundle["text/html"]


def test_the_budget_refuses_calls_before_sending_once_spent(
    shell: Shell, offline_env: OfflineGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.line("budget 300")
    assert "token budget: 300 tokens (0 used so far)" in capsys.readouterr().out
    shell.cell("", "Explain how rivers shape valleys over time")  # its worst case fits 300
    used = get_session().spent_tokens
    shell.line(f"budget {used + 100}")
    sent = len(offline_env.requests)
    # Without max_tokens a call reserves 256 tokens for its answer: more than the 100 left.
    uncapped = (
        rf"token budget: {used} of {used + 100} tokens used, and this call to offline/assistant may use "
        r"up to \d+ \(\d+ tokens for its prompt, 256 for its answer, the estimate used when no "
        r"max_tokens is set\)"
    )
    with pytest.raises(BudgetExceededError, match=uncapped):
        shell.cell("", "One more, please")
    assert len(offline_env.requests) == sent  # refused before any I/O
    assert isinstance(shell.cell("--max-tokens 5", "One more, please"), LLMResponse)  # capped: fits
    shell.line(f"budget {get_session().spent_tokens}")
    with pytest.raises(BudgetExceededError, match=r"token budget spent: \d+ of \d+ tokens"):
        shell.cell("--max-tokens 5", "One more, please")
    assert len(offline_env.requests) == sent + 1
    shell.line("usage")
    assert "budget: " in shell.pub.published[-2].data["text/plain"]
    shell.line("budget off")
    assert isinstance(shell.cell("", "One more, please"), LLMResponse)
    for bad in ("budget lots", "budget 0", "budget -3", "budget 1 2"):
        with pytest.raises(UsageError):
            shell.line(bad)


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "body", "match"),
    [
        ("-t hot", "hi", "invalid float value"),
        ("-t 5", "hi", "temperature"),
        ("--max-tokens 0", "hi", "max-tokens"),
        ("-f yaml", "hi", "invalid choice"),
        ("--bogus", "hi", "unrecognized arguments"),
        ("-c -n", "hi", "contradict"),
        ("-o 1x", "hi", "variable name"),
        ("-o class", "hi", "variable name"),
        ("--schema Missing", "hi", "no such name"),
        ("--schema topic", "hi", "not a pydantic BaseModel"),
        ("-s 'unbalanced", "hi", "quotes"),
        ("", "   \n", "cell is empty"),
        ("-m ''", "hi", "model_id"),
    ],
)
def test_option_mistakes_are_usage_errors_and_send_nothing(
    shell: Shell, offline_env: OfflineGateway, line: str, body: str, match: str
) -> None:
    shell.ip.user_ns["topic"] = "not a class"
    with pytest.raises(UsageError, match=match):
        shell.cell(line, body)
    assert offline_env.requests == []


def test_missing_configuration_is_a_usage_error_with_the_fix(
    shell: Shell, offline_env: OfflineGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOTORCH_API_KEY")
    with pytest.raises(UsageError, match=r"FLOTORCH_API_KEY not set\. Fix: %flotorch login"):
        shell.cell("", "hi")
    with pytest.raises(UsageError, match=r"configured: FLOTORCH_API_KEY not set\."):
        shell.cell("-m offline/echo", "hi")  # the model is given: only the key is missing
    monkeypatch.delenv("FLOTORCH_MODEL_ID")
    with pytest.raises(
        UsageError, match=r"FLOTORCH_MODEL_ID and FLOTORCH_API_KEY not set.*%flotorch model NAME"
    ):
        shell.cell("", "hi")
    assert offline_env.requests == []


@pytest.mark.parametrize("stream", [True, False])
def test_a_gateway_failure_fails_the_cell_with_the_typed_error(
    shell: Shell, offline_env: OfflineGateway, stream: bool
) -> None:
    offline_env.faults.add(Fault(status=500, message="upstream exploded"))
    with pytest.raises(ServerError, match=r"HTTP 500.*upstream exploded"):
        shell.cell("" if stream else "--no-stream", "hi")
    assert len(get_session().ledger) == 0  # it reached no model: it cost nothing
    (failed,) = get_session().conversation.turns  # kept on record, marked, never sent back as history
    assert failed.status == "error" and "upstream exploded" in (failed.error or "")
    assert get_session().conversation.messages("next") == [{"role": "user", "content": "next"}]
    assert Event("clear", wait=True) not in shell.pub.events


def test_a_cut_stream_fails_the_cell_and_keeps_the_partial_answer_visible(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    offline_env.faults.add(Fault(cut_after=6))
    with pytest.raises(StreamError):
        shell.cell("", "Explain how rivers shape valleys over time")
    last = shell.pub.published[-1]
    partial = last.data["text/plain"].removesuffix("\n[stopped: see the error below]")
    assert last.update and partial.strip() and partial != last.data["text/plain"]
    assert "stopped: see the error below" in last.data["text/html"]
    assert Event("clear", wait=True) not in shell.pub.events


def test_a_run_cell_failure_is_an_error_result_as_nbclient_sees_it(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    offline_env.faults.add(Fault(status=503))
    result = shell.run("%%flotorch\nhi")
    assert isinstance(result.error_in_exec, ServerError)


# -- %flotorch ----------------------------------------------------------------------------------------
def test_config_shows_the_setup_but_never_the_key(shell: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    shell.line("")
    out = capsys.readouterr().out
    assert "model     offline/assistant" in out and os.environ["FLOTORCH_BASE_URL"] in out
    assert "API key   set (••••) from FLOTORCH_API_KEY" in out
    assert "mode      OFFLINE (embedded gateway)" in out  # offline/ models: the banner says so too
    assert os.environ["FLOTORCH_API_KEY"] not in out
    shell.line("config")
    assert capsys.readouterr().out == out


def test_model_and_base_url_are_set_and_validated(
    shell: Shell, offline_env: OfflineGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.line("model offline/echo")
    shell.line(f"base_url {offline_env.url}/")
    assert "model: offline/echo" in capsys.readouterr().out
    assert shell.cell("", "same words back").content == "same words back"
    for bad in ("base_url ftp://example.com", "base_url nonsense", "model a b"):
        with pytest.raises(UsageError):
            shell.line(bad)
    assert get_session().base_url == offline_env.url


def test_unknown_subcommands_list_the_valid_ones(shell: Shell) -> None:
    with pytest.raises(UsageError, match="unknown subcommand 'fly'; use one of: config, model, base_url"):
        shell.line("fly")
    for bad in ("export", "record", "replay", "usage now", "export notes.txt"):
        with pytest.raises(UsageError):
            shell.line(bad)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        # an evaluation has no system prompt, fallbacks, comparison or tools of its own: not dropped
        ('--eval rows --score exact_match -s "Be terse."', "do not apply to an evaluation"),
        ("--eval rows --score exact_match --fallback offline/echo", "do not apply to an evaluation"),
        ("--eval rows --score exact_match --compare", "do not apply to an evaluation"),
        ("--eval rows --score exact_match --keep-errors", "do not apply to an evaluation"),
        ("--eval rows --score exact_match --approve", "do not apply to an evaluation"),
        ("--eval rows --score exact_match --max-steps 3", "do not apply to an evaluation"),
        # not "add --schema", which an evaluation refuses in turn
        ("--eval rows --score exact_match --validation-retries 1", "do not apply to an evaluation"),
        # a batch answers each item once: no tool loop runs in it
        ("--map rows --tools f", "--tools: options that do not apply to a batch"),
        ("--map rows --agent a", "--agent: options that do not apply to a batch"),
        (
            "--map rows --approve --max-steps 2",
            "--approve, --max-steps: options that do not apply to a batch",
        ),
        # what grades an evaluation, outside one: not a plain answer that ignores it
        ("--score exact_match", "--score go with --eval"),
        ("--target key", "--target go with --eval"),
        ('--judge "Is it right?"', "--judge go with --eval"),
        ("--map rows --judge-model offline/echo", "--judge-model go with --eval"),
    ],
)
def test_an_option_the_cell_would_ignore_is_refused(
    shell: Shell, offline_env: OfflineGateway, line: str, says: str
) -> None:
    shell.ip.user_ns["rows"] = [{"q": "2+2", "key": "4"}]
    with pytest.raises(UsageError, match=says):
        shell.cell(f"-m offline/echo {line}", "{q}")
    assert offline_env.requests == []


@pytest.mark.parametrize(
    ("models", "says"),
    [
        (",", "-m ,: compare needs at least one model"),
        ("offline/echo,offline/echo", "-m offline/echo,offline/echo: model 'offline/echo' is listed twice"),
    ],
)
@pytest.mark.parametrize("kind", ["", "--map rows", "--eval rows --target key --score exact_match"])
def test_every_cell_reads_a_model_list_by_one_rule(
    shell: Shell, offline_env: OfflineGateway, kind: str, models: str, says: str
) -> None:
    """An answer, a batch and an evaluation read ``-m a,b`` alike (``compare.parse_models``) and say
    the same about a list that is not one, before anything is sent."""
    shell.ip.user_ns["rows"] = [{"q": "2+2", "key": "4"}]
    with pytest.raises(UsageError) as refused:
        shell.cell(f"{kind} -m {models}", "{q}")
    assert str(refused.value).startswith(f"%%flotorch: {says}")
    assert offline_env.requests == []


def test_an_option_given_to_a_subcommand_is_refused_not_taken_as_its_value(shell: Shell) -> None:
    """``%flotorch model --help`` must not make ``--help`` the session's model (only logs has options)."""
    before = get_session().model_id
    for line in ("model --help", "budget -5", "cache --off", "price m -1 2"):
        with pytest.raises(UsageError, match="takes no options"):
            shell.line(line)
    assert get_session().model_id == before


def test_whether_a_subcommand_takes_options_is_said_by_its_table_entry(
    shell: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One place says it: a subcommand marked ``options`` receives its ``-...`` words as they are."""
    model = _magic_commands.COMMANDS["model"]
    monkeypatch.setitem(_magic_commands.COMMANDS, "model", model._replace(options=True))
    shell.line("model -dash-model")
    assert get_session().model_id == "-dash-model"
    assert sorted(name for name, command in _magic_commands.COMMANDS.items() if command.options) == [
        "logs",
        "model",
    ]


def test_login_asks_with_getpass_and_the_key_is_never_shown(
    shell: Shell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prompts: list[str] = []
    texts: list[str] = []
    with OfflineGateway(api_key=SECRET, record=True) as gw:
        monkeypatch.setenv("FLOTORCH_BASE_URL", gw.url)  # the environment's key is not this one
        with pytest.raises(AuthenticationError) as refused:
            shell.cell("", "hi")
        texts.append(str(refused.value))

        def fake_getpass(prompt: str = "") -> str:
            prompts.append(prompt)
            return SECRET

        monkeypatch.setattr(getpass, "getpass", fake_getpass)
        shell.line("login")
        assert prompts == ["FloTorch API key (input hidden): "]
        resp = shell.cell("-o r", "hi")
        assert isinstance(resp, LLMResponse)
        assert gw.requests[-1].headers["authorization"] != f"Bearer {SECRET}"  # masked in the log
        shell.line("config")
        shell.line("usage")
        shell.cell("-c", "again")
        shell.line("history")
        shell.line(f"export {tmp_path / 'chat.md'}")
        texts.append((tmp_path / "chat.md").read_text(encoding="utf-8"))
    out = capsys.readouterr()
    assert "from %flotorch login" in out.out
    session = get_session()
    texts += [out.out, out.err, shell.pub.everything(), repr(resp), html_of(resp)]
    texts += [repr(session), repr(session.client()), session.conversation.to_markdown()]
    texts += [repr(v) for v in shell.ip.user_ns.values() if not callable(v)]
    for text in texts:
        assert SECRET not in text and SECRET[-8:] not in text


@pytest.mark.parametrize(("answer", "match"), [("", "no key entered"), (EOFError(), "cannot ask for input")])
def test_login_without_a_key_changes_nothing(
    shell: Shell, monkeypatch: pytest.MonkeyPatch, answer: Any, match: str
) -> None:
    def fake_getpass(prompt: str = "") -> str:
        if isinstance(answer, BaseException):
            raise answer
        return str(answer)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    with pytest.raises(UsageError, match=match):
        shell.line("login")
    assert get_session().api_key_source == "FLOTORCH_API_KEY"


def test_record_then_replay_without_the_gateway_then_live(
    shell: Shell, offline_env: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cassettes = tmp_path / "cassettes"
    shell.line(f"record {cassettes}")
    assert os.environ["FLOTORCH_RECORD"] == str(cassettes)
    live = shell.cell("", "Tell me about tides")
    files = list(cassettes.glob("*.json"))
    assert len(files) == 1 and os.environ["FLOTORCH_API_KEY"] not in files[0].read_text(encoding="utf-8")

    shell.line(f"replay {cassettes}")
    assert os.environ["FLOTORCH_REPLAY"] == str(cassettes) and "FLOTORCH_RECORD" not in os.environ
    monkeypatch.setenv("FLOTORCH_BASE_URL", "http://127.0.0.1:9")  # nothing listens: no network used
    sent = len(offline_env.requests)
    replayed = shell.cell("", "Tell me about tides")
    assert replayed.content == live.content and len(offline_env.requests) == sent
    with pytest.raises(ReplayMissError, match="No recording"):
        shell.cell("", "Something never recorded")

    shell.line("live")
    assert "FLOTORCH_REPLAY" not in os.environ and "FLOTORCH_RECORD" not in os.environ
    with pytest.raises(UsageError, match="no such folder"):
        shell.line(f"replay {tmp_path / 'nowhere'}")


# -- a real kernel: what the saved notebook holds ---------------------------------------------------
@pytest.mark.slow
def test_in_a_real_kernel_each_answer_is_saved_once_and_the_seed_sample_runs(tmp_path: Path) -> None:
    """nbclient runs the cells in ipykernel, as JupyterLab would, and we read the saved outputs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cells = [
        "%load_ext flotorch_nb",
        "%%flotorch\nWrite a python function that adds two numbers",
        "%%flotorch -f text -m offline/echo\nSay hello",
        "%%flotorch --no-stream -o r\nSay hello again",
        "%%flotorch -f json\nList three colors as JSON",
        SEED_IN_A_CELL,
        "%flotorch usage",
        "%flotorch login",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    client = NotebookClient(nb, timeout=90, kernel_name="python3", startup_timeout=60)
    # nbclient cannot answer getpass: the last cell fails with a clear UsageError (the run fails, as
    # CI must) instead of hanging.
    with pytest.raises(CellExecutionError, match="UsageError: %flotorch login: this frontend cannot ask"):
        client.execute(cwd=str(tmp_path), env=env)
    outputs = [cell.outputs for cell in nb.cells]

    (banner,) = outputs[0]
    assert "using the OFFLINE gateway at http://127.0.0.1:" in banner.text
    # The streamed answer: its preview was cleared, one execute_result (the LLMResponse) remains.
    (answer,) = outputs[1]
    assert answer.output_type == "execute_result"
    assert 'class="flotorch-answer"' in answer.data["text/html"]
    assert "OFFLINE gateway" in answer.data["text/plain"]
    # Other formats too: the cell's value (the LLMResponse) is the one output, shown in that format.
    (text,) = outputs[2]
    assert text.output_type == "execute_result" and text.data["text/plain"].startswith("Say hello\n")
    (quiet,) = outputs[3]
    assert quiet.output_type == "execute_result"
    (colors,) = outputs[4]
    assert colors.output_type == "execute_result" and isinstance(colors.data["application/json"], dict)
    assert 'class="flotorch-answer"' in colors.data["text/html"]
    nbformat.validate(nb)  # the notebook, JSON output included, saves as a valid file
    assert "SEED-OK True" in "".join(o.get("text", "") for o in outputs[5])
    usage, chart = outputs[6]  # the table, and its chart beside it
    assert "image/png" in chart.data and chart.data["text/plain"].startswith(
        "Tokens per model"
    )  # no prices: no cost
    rows = {line.split()[0]: line.split()[1] for line in usage.data["text/plain"].splitlines()[1:]}
    # The magics' four answers; the seed sample's own FlotorchLLM is not a session surface.
    assert rows == {"offline/assistant": "3", "offline/echo": "1", "total": "4"}
    (refused,) = outputs[7]
    assert refused.name == "stderr" and "set FLOTORCH_API_KEY in the kernel's environment" in refused.text


SEED_IN_A_CELL = """\
import asyncio
from flotorch_nb import FlotorchLLM
llm = FlotorchLLM()
async def main():
    return await llm.ainvoke([{"role": "user", "content": "A haiku about the sea."}])
r = asyncio.run(main())
print("SEED-OK", r.offline)
"""
