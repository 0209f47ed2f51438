"""Prices, cost, the money budget and provenance, wired into ``%%flotorch`` and ``%flotorch``.

Through IPython's real shell against the offline gateway: ``%flotorch price`` and a ``FLOTORCH_PRICES``
file make footers, the usage table and comparisons show the cost ("cost unknown" for a model without
a price, nothing at all while no price is set); ``%flotorch budget $N`` refuses a call before it is
sent; every answer keeps its provenance in its output metadata and in ``%flotorch provenance``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from flotorch_nb import BudgetExceededError, Comparison
from flotorch_nb._records import FIELDS, METADATA_KEY
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook.session import get_session
from flotorch_nb.pricing import format_cost
from tests.support.shell import Shell, data_of

PRICES_TOML = """\
["offline/assistant"]
input_per_million = 150
output_per_million = 600
"""


def footer_text(value: object) -> str:
    text: str = data_of(value)["text/plain"]
    return text.rsplit("\n\n", 1)[-1]


def test_without_prices_nothing_about_cost_is_shown(shell: Shell) -> None:
    resp = shell.cell("--no-stream", "Name a colour.")
    assert "$" not in footer_text(resp) and "cost" not in footer_text(resp)
    shell.line("usage")
    table, chart = (e.data["text/plain"] for e in shell.pub.published[-2:])
    assert "cost" not in table and "cost" not in chart  # no "cost per model" panel either


def test_a_price_shows_the_cost_in_the_footer_the_usage_table_and_the_chart(
    shell: Shell,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shell.line("price offline/assistant 150 600")
    assert capsys.readouterr().out.strip() == "offline/assistant: $150 in / $600 out per 1M tokens"
    resp = shell.cell("--no-stream", "Name a colour.")
    usage = resp.usage
    expected = (Decimal(150) * usage.input_tokens + Decimal(600) * usage.output_tokens) / 1_000_000
    assert footer_text(resp).endswith(f" · {format_cost(expected)}")
    echo = shell.cell("--no-stream -m offline/echo", "Name a colour.")
    assert footer_text(echo).endswith(" · cost unknown")  # never a guess
    shell.line("usage")
    table, chart = (e.data for e in shell.pub.published[-2:])
    lines = table["text/plain"].splitlines()
    assert lines[0].split()[-1] == "cost"
    assert lines[1].startswith("offline/assistant") and lines[1].endswith(format_cost(expected))
    assert lines[2].startswith("offline/echo") and lines[2].endswith("cost unknown")
    assert lines[3].startswith("total") and lines[3].endswith("+ 1 call of unknown cost")
    assert "offline/echo: " in chart["text/plain"] and "cost unknown" in chart["text/plain"]
    shell.line("price")
    assert "offline/assistant: $150 in / $600 out" in capsys.readouterr().out
    shell.line("price offline/assistant off")
    assert "no price" in capsys.readouterr().out


def test_a_comparison_shows_each_models_cost_and_the_total(shell: Shell) -> None:
    shell.line("price offline/assistant 0.15 0.60")
    shell.line("price offline/concise 0.05 0.20")
    comparison = shell.cell("-m offline/assistant,offline/concise,offline/echo --no-stream", "Hello")
    assert isinstance(comparison, Comparison) and comparison.priced
    html = data_of(comparison)["text/html"]
    assert html.count("cost unknown") == 1 and len(re.findall(r" · \$0\.\d+</div>", html)) == 2
    assert "total $0.0" in html and "+ 1 call of unknown cost" in html


def test_a_money_budget_refuses_a_call_before_sending_it(
    shell: Shell,
    offline_env: OfflineGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shell.line("price offline/assistant 150 600")
    shell.line("budget $0.05")
    assert "money budget: $0.050 ($0.00 spent so far)" in capsys.readouterr().out
    shell.cell("--no-stream --max-tokens 20", "Hello")  # at most 0.012 + prompt: affordable
    spent = get_session().spent_money
    assert spent > 0
    sent = len(offline_env.requests)
    with pytest.raises(
        BudgetExceededError, match=r"money budget \$0\.050: \$0\.0\d+ spent, .* could cost up to \$0\.12"
    ):
        shell.cell("--no-stream --max-tokens 200", "Hello again")  # its cap alone costs $0.12
    with pytest.raises(BudgetExceededError, match="'offline/echo' has no price"):
        shell.cell("--no-stream -m offline/echo", "Hello")
    assert len(offline_env.requests) == sent  # refused before anything was sent
    # The budget covers every model of a comparison, checked before any is sent.
    comparison = shell.cell("-m offline/assistant,offline/echo --keep-errors --no-stream", "Hi")
    assert isinstance(comparison.errors["offline/echo"], BudgetExceededError)
    shell.line("config")
    assert "budget    $0.050 ($0.0" in capsys.readouterr().out
    shell.line("budget off")
    assert get_session().money_budget is None
    assert shell.cell("--no-stream -m offline/echo", "Hello") is not None


@pytest.mark.parametrize("bad", ["$", "$-1", "$lots"])
def test_a_bad_amount_is_a_usage_error(shell: Shell, bad: str) -> None:
    with pytest.raises(UsageError, match="an amount must be a number of dollars"):
        shell.line(f"budget {bad}")


def test_a_malformed_price_file_is_a_clear_error_naming_the_line_and_nothing_is_sent(
    shell: Shell,
    offline_env: OfflineGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES_TOML.replace("600", "-600"), encoding="utf-8")
    monkeypatch.setenv("FLOTORCH_PRICES", str(path))
    sent = len(offline_env.requests)
    with pytest.raises(UsageError, match=rf"price file {re.escape(str(path))}, line 3: .*-600"):
        shell.cell("--no-stream", "Hello")
    with pytest.raises(UsageError, match="line 3"):
        shell.line("price")
    assert len(offline_env.requests) == sent
    path.write_text(PRICES_TOML, encoding="utf-8")
    monkeypatch.setenv("FLOTORCH_PRICES", str(tmp_path / "prices-fixed.toml"))
    (tmp_path / "prices-fixed.toml").write_text(PRICES_TOML, encoding="utf-8")
    assert footer_text(shell.cell("--no-stream", "Hello")).split(" · ")[-1].startswith("$")


def test_every_answer_keeps_its_provenance_in_its_output_and_in_the_session(
    shell: Shell,
    offline_env: OfflineGateway,
    capsys: pytest.CaptureFixture[str],
) -> None:
    streamed = shell.cell("", "Name a colour.")
    quiet = shell.cell("--no-stream -f text", "Name a fruit.")
    with pytest.raises(Exception):  # noqa: B017 -- a failed call keeps no record
        shell.cell("--no-stream -m no-such/model", "Hello")
    mine = get_session().client().invoke([{"role": "user", "content": "Hi"}])  # user code
    for value in (streamed, quiet):
        (record,) = value._repr_mimebundle_()[1][METADATA_KEY]["provenance"]
        assert tuple(record) == FIELDS
        assert record["gateway"] == offline_env.url and record["source"] == "offline"
        assert record["request_id"] == value.request_id and record["request_hash"] == value.request_hash
        assert len(record["request_hash"]) == 64
    records = get_session().answers.records
    # One record per answer, made once: the cell's output, the answer and the session's log agree.
    for value, logged in zip((streamed, quiet), records, strict=False):
        (saved,) = value._repr_mimebundle_()[1][METADATA_KEY]["provenance"]
        assert saved == value.provenance == {k: v for k, v in logged.items() if k != "by"}
    assert [(r["by"], r["request_id"]) for r in records] == [
        ("magic", streamed.request_id),
        ("magic", quiet.request_id),
        ("code", mine.request_id),
    ]
    shell.line("provenance")
    table = shell.pub.published[-1].data
    lines = table["text/plain"].splitlines()
    assert lines[0].split()[:4] == ["#", "by", "model", "source"] and len(lines) == 4
    assert streamed.request_hash[:12] in lines[1] and "code" in lines[3]
    assert f'title="{streamed.request_hash}"' in table["text/html"]
    shell.line("reset")
    assert len(get_session().answers) == 3  # the outputs still exist: their records stay listed


def test_a_cost_priced_from_an_estimate_shows_as_unknown_in_footers_comparisons_and_usage(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    """pricing's one rule: no usage from the gateway, no dollar figure that looks billed."""
    shell.line("price offline/assistant 150 600")
    shell.line("price offline/concise 150 600")
    shell.line("budget $5")
    offline_env.faults.add(Fault(omit_usage=True, times=4))
    streamed = shell.cell("", "Name a colour.")
    whole = shell.cell("--no-stream", "Name a colour.")
    compared = shell.cell("-m offline/assistant,offline/concise", "Name a colour.")
    for value in (streamed, whole):
        assert footer_text(value).endswith(" · cost unknown") and "$" not in footer_text(value)
    assert "estimated" in footer_text(whole)  # the tokens say they are an estimate
    assert compared["offline/assistant"].cost is None and "cost unknown" in data_of(compared)["text/plain"]
    shell.line("usage")
    table = shell.pub.published[-2].data["text/plain"]
    assert table.splitlines()[1].endswith("cost unknown") and "$" not in table.splitlines()[1]
    assert "spent, estimates included" in table  # the money budget counts the estimates, and says so
