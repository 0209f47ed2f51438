"""What the magics say when a user gets something wrong or a limit stops them: typed, clear, and the
same words for the same cause (issue 13, findings 10, 12 and 18)."""

from __future__ import annotations

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError

from flotorch_nb.batch._progress import Progress
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook.session import get_session
from tests.support.shell import Shell, data_of


def test_an_absurd_money_budget_is_refused_and_the_budget_left_as_it_was(shell: Shell) -> None:
    shell.line("budget $5")
    with pytest.raises(UsageError, match=r"budget: .*at most \$1,000,000,000"):
        shell.line("budget $1e30")
    money = get_session().money_budget
    assert money is not None and str(money.limit) == "5"
    shell.line("budget")  # showing the budget still works


def test_budget_off_confirms_that_both_budgets_are_off(
    shell: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.line("budget 500")
    shell.line("budget $0.0001")
    capsys.readouterr()
    shell.line("budget off")
    said = capsys.readouterr().out
    assert "token budget: none" in said and "money budget: none" in said
    assert get_session().budget is None and get_session().money_budget is None


def test_map_refuses_an_output_name_that_is_not_a_variable_before_sending(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["xs"] = ["a", "b"]
    with pytest.raises(UsageError, match="-o needs a Python variable name, got '1bad'"):
        shell.cell("--map xs -o 1bad", "say {item}")
    assert "1bad" not in shell.ip.user_ns and offline_env.requests == []


def test_with_a_text_only_publisher_and_a_captured_stdout_the_cell_writes_plain_text(
    shell: Shell,
    offline_env: OfflineGateway,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What terminal IPython has under capture_output()/%%capture, its stdout a pipe or a log file.
    monkeypatch.setattr(shell.ip, "display_pub", CapturingDisplayPublisher(shell=shell.ip))
    capsys.readouterr()
    value = shell.cell("", "Why is the sky blue?")
    shell.cell("-m offline/assistant,offline/echo", "Why is the sky blue?")
    offline_env.faults.add(Fault(status=503, message="upstream is down"))
    shell.run("%%flotorch\nWhy is the sky blue?")
    out = capsys.readouterr().out
    assert value.content in out and "ServerError: " in out  # streamed as text, the error in one line
    assert "\x1b" not in out  # no ESC[2K\r from clear_output, no colour codes


def test_items_refused_by_the_same_budget_read_alike_and_are_counted_as_never_sent(
    shell: Shell, offline_env: OfflineGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.line("budget 100")
    shell.ip.user_ns["xs"] = list(range(6))
    result = shell.cell("--map xs --concurrency 1", "say {item} " * 3)
    refused = [item for item in result if not item.ok]
    assert len(refused) >= 2 and all(item.attempts == 0 for item in refused)
    assert len({str(item.error) for item in refused}) == 1  # one cause, one wording
    assert not str(refused[-1].error).startswith("not sent: ")
    assert f"({len(refused)} never sent)" in data_of(result)["text/plain"]
    bar = capsys.readouterr().err  # the progress bar: sent errors apart from items never sent
    assert f"errors=0, not sent={len(refused)}" in bar


def test_the_progress_line_counts_sent_and_unsent_items_apart() -> None:
    progress = Progress(total=5, show=False)
    for sent in (True, True, True, False, False):
        progress.item_done(error=not sent, tokens=10 if sent else 0, cached=False, sent=sent)
    assert progress.postfix() == "errors=0, not sent=2, tokens=30"
