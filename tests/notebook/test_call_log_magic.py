"""Issue 17 item 5 in a notebook: ``%flotorch log on|off``, ``%flotorch logs``, and the cell of each call.

Cells run through IPython's real ``InteractiveShell.run_cell`` (so ``pre_run_cell`` fires as in a
kernel) against the offline gateway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from flotorch_nb import calllog
from tests.support.html import assert_safe_html
from tests.support.shell import XSS, Shell


@pytest.fixture
def logged(shell: Shell, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    path = tmp_path / "calls.sqlite"
    shell.line(f"log on {path}")
    assert "call log on" in capsys.readouterr().out
    yield path
    calllog.disable()


def test_log_on_records_each_cell_with_its_execution_count_and_label(shell: Shell, logged: Path) -> None:
    shell.ip.user_ns["__session__"] = "/work/analysis.ipynb"  # what ipykernel sets in JupyterLab
    try:
        first = shell.run("%%flotorch\nWhat is the capital of France?")
        second = shell.run("%%flotorch\nAnd of Spain?")
    finally:
        del shell.ip.user_ns["__session__"]
    assert first.success and second.success
    rows = calllog.search_log(limit=None)
    assert [r["prompt"].strip() for r in rows] == ["And of Spain?", "What is the capital of France?"]
    assert [r["execution_count"] for r in rows] == [second.execution_count, first.execution_count]
    assert {r["label"] for r in rows} == {"magic"}
    assert {r["notebook"] for r in rows} == {"/work/analysis.ipynb"}
    assert os.environ[calllog.ENV_LOG] == str(logged)  # worker processes started later log too


def test_a_call_made_between_cells_has_no_cell(shell: Shell, logged: Path) -> None:
    shell.run("x = 1")  # a cell ran and ended: the call below belongs to no cell
    shell.line("model offline/echo")
    from flotorch_nb.notebook.session import get_session

    get_session().client().invoke([{"role": "user", "content": "from a widget callback"}])
    (row,) = calllog.search_log()
    assert (row["cell"], row["execution_count"]) == (None, None)


def test_logs_shows_an_escaped_table_filters_and_exports(
    shell: Shell, logged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.line("model offline/echo")
    shell.cell("", f"about France {XSS}")
    shell.cell("", "about the sea")
    shell.pub.events.clear()
    shell.line("logs -q France -n 5")
    (shown,) = shell.pub.published
    html, text = shown.data["text/html"], shown.data["text/plain"]
    # Our one class and html_table's alignment: model text brings neither.
    assert_safe_html(html.replace(' class="flotorch-logs"', "").replace(" style='text-align:left'", ""))
    assert "&lt;img src=x" in html and "<img" not in html
    assert "about France" in text and "about the sea" not in text
    shell.pub.events.clear()
    shell.line("logs -n 1")
    assert "about the sea" in shell.pub.published[0].data["text/plain"]
    out = tmp_path / "calls.jsonl"
    capsys.readouterr()
    shell.line(f"logs --export {out}")
    assert f"exported 2 calls to {out}" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["answer"] for line in lines] == [f"about France {XSS}", "about the sea"]


def test_log_off_stops_logging_and_log_says_where_it_writes(
    shell: Shell, logged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.cell("", "logged")
    shell.line("log")
    assert f"call log: {logged} (1 calls" in capsys.readouterr().out
    shell.line("log off")
    assert "call log off" in capsys.readouterr().out
    assert calllog.ENV_LOG not in os.environ
    shell.cell("", "not logged")
    assert len(calllog.search_log(limit=None, path=logged)) == 1
    shell.line("log")
    assert "call log: off" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("logs -n 0", "-n must be 1 or more"),
        ("logs --bogus", "unrecognized arguments"),
        ("logs --since yesterday", "ISO 8601"),
        ("logs -q ?!", "no word"),
        ("log maybe", "usage"),
    ],
)
def test_bad_log_options_are_usage_errors(shell: Shell, logged: Path, line: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        shell.line(line)


def test_log_on_a_file_that_cannot_be_used_is_a_usage_error_and_leaves_logging_off(
    shell: Shell, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=r"folder .* does not exist"):
        shell.line(f"log on {tmp_path / 'missing' / 'calls.sqlite'}")
    assert calllog.active() is None
    with pytest.raises(UsageError, match="no call log is on"):
        shell.line("logs")
