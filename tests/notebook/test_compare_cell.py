"""``%%flotorch -m a,b,c``: several models at once in one cell, through IPython's real shell.

What the cell shows is recorded by ``test_magics``' publisher (every display, update and clear, in
order, and the cell's value as the displayhook sends it). Requests are real HTTP to the offline
gateway, timed like a real one here (latency and a per-token delay, scaled per model), so the live
view really streams and the models' timings really differ.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
from IPython.core.error import UsageError

from flotorch_nb import Comparison, ServerError
from flotorch_nb._records import FIELDS, METADATA_KEY
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook.magics import load_ipython_extension
from flotorch_nb.notebook.session import get_session
from tests.support.html import (
    assert_safe_html,
    own_markup_removed,
)
from tests.support.shell import Shell, data_of

MODELS = "offline/concise,offline/assistant,offline/verbose"


@pytest.fixture(scope="module")
def timed_gateway() -> Iterator[OfflineGateway]:
    with OfflineGateway(latency=0.02, token_delay=0.004, record=True) as gw:
        yield gw


@pytest.fixture
def timed(shell: Shell, timed_gateway: OfflineGateway, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shell]:
    monkeypatch.setenv("FLOTORCH_BASE_URL", timed_gateway.url)
    yield shell
    timed_gateway.faults.clear()


def metadata_of(value: object) -> dict[str, object]:
    bundle = value._repr_mimebundle_()  # type: ignore[attr-defined]
    assert isinstance(bundle, tuple), "a final answer carries its provenance as output metadata"
    return bundle[1]


def test_three_models_stream_side_by_side_then_end_as_a_chart_and_the_comparison(timed: Shell) -> None:
    result = timed.run(f"%%flotorch -m {MODELS} -t 0\nExplain in two sentences why the sky is blue.")
    comparison = result.result
    assert isinstance(comparison, Comparison) and result.error_in_exec is None
    assert comparison.models == tuple(MODELS.split(",")) and not comparison.errors
    assert timed.ip.user_ns["_"] is comparison
    # One live view, redrawn in place while the answers arrive: each model's column grows.
    first, *updates = timed.pub.published[:-1]
    assert 'class="flotorch-compare flotorch-compare-live"' in first.data["text/html"]
    assert all(u.update and u.transient["display_id"] == first.transient["display_id"] for u in updates)
    assert len(updates) >= 3
    assert any("(streaming…)" in u.data["text/plain"] and "(done)" in u.data["text/plain"] for u in updates)
    # Then the preview is cleared, a chart is drawn, and the comparison is the cell's value.
    chart, result_event = timed.pub.events[-2:]
    assert timed.pub.events[-3].kind == "clear" and timed.pub.events[-3].wait
    assert chart.kind == "publish" and "image/png" in chart.data
    assert chart.data["text/plain"].startswith("Latency and tokens per model: offline/concise: ")
    assert result_event.kind == "result" and result_event.data == data_of(comparison)
    html = result_event.data["text/html"]
    assert html.count('class="flotorch-compare-model"') == 3 and html.count('class="flotorch-footer"') == 3
    assert_safe_html(own_markup_removed(html), own_markup=True)
    # The answers and timings differ as a real family of models' would.
    answers = comparison.responses
    tokens = {m: r.usage.output_tokens for m, r in answers.items()}
    assert tokens["offline/concise"] < tokens["offline/assistant"] < tokens["offline/verbose"]
    latency = {m: r.latency_s for m, r in answers.items()}
    assert latency["offline/concise"] < latency["offline/verbose"]
    assert len({r.content for r in answers.values()}) == 3
    # Each call went through the session client's hooks: counted as the magic's, with provenance.
    ledger = get_session().ledger
    assert {e.model for e in ledger.entries} == set(tokens) and {e.source for e in ledger.entries} == {
        "magic"
    }
    assert [r["by"] for r in get_session().answers.records] == ["magic"] * 3


def test_the_comparison_keeps_one_provenance_record_per_answer_in_its_output_metadata(timed: Shell) -> None:
    comparison = timed.cell(f"-m {MODELS} --no-stream", "Name a colour.")
    assert timed.pub.published[-1].data["text/plain"].startswith("Latency and tokens per model")
    records = metadata_of(comparison)[METADATA_KEY]["provenance"]  # type: ignore[index]
    assert [r["model"] for r in records] == MODELS.split(",")
    for record, response in zip(records, comparison.responses.values(), strict=True):
        assert tuple(record) == FIELDS and record["source"] == "offline"
        assert record["request_id"] == response.request_id and record["request_hash"] == response.request_hash
    session_records = get_session().answers.records
    assert [{k: v for k, v in r.items() if k != "by"} for r in session_records] == records


def test_a_failing_model_shows_its_error_in_its_column_and_fails_the_cell(
    timed: Shell, timed_gateway: OfflineGateway
) -> None:
    timed_gateway.faults.add(Fault(status=503, message="overloaded", model="offline/assistant"))
    result = timed.run(f"%%flotorch -m {MODELS} -o cmp\nName a colour.")
    error = result.error_in_exec
    assert isinstance(error, ServerError) and "overloaded" in str(error)
    assert cast(Any, error)._render_traceback_()[0].startswith("\x1b[0;31mServerError\x1b[0m: ")  # one line
    assert any("offline/assistant failed" in note for note in error.__notes__)
    # The others finished, and the whole comparison was shown before the cell failed.
    comparison = timed.ip.user_ns["cmp"]
    assert set(comparison.responses) == {"offline/concise", "offline/verbose"}
    shown = timed.pub.published[-1].data
    assert "ServerError" in shown["text/html"] and shown["text/html"].count('class="flotorch-footer"') == 2
    assert timed.pub.results == []


def test_keep_errors_leaves_the_error_in_its_column_and_the_cell_succeeds(
    timed: Shell, timed_gateway: OfflineGateway
) -> None:
    timed_gateway.faults.add(Fault(status=404, model="offline/verbose"))
    comparison = timed.cell(f"-m {MODELS} --keep-errors --no-stream", "Name a colour.")
    assert list(comparison.errors) == ["offline/verbose"] and len(comparison.responses) == 2
    assert "NotFoundError" in data_of(comparison)["text/html"]


def test_compare_takes_the_models_of_m_or_flotorch_compare_models_or_the_default_model(
    timed: Shell, monkeypatch: pytest.MonkeyPatch
) -> None:
    # %load_ext sees an offline gateway, so it offers the offline family, quickest first.
    load_ipython_extension(timed.ip)
    assert os.environ["FLOTORCH_COMPARE_MODELS"] == MODELS
    assert timed.cell("--compare --no-stream", "Say hi.").models == tuple(MODELS.split(","))
    monkeypatch.delenv("FLOTORCH_COMPARE_MODELS")
    one = timed.cell("--compare --no-stream", "Say hi.")
    assert isinstance(one, Comparison) and one.models == ("offline/assistant",)
    two = timed.cell("--compare -m offline/echo,offline/concise --no-stream", "Say hi.")
    assert two.models == ("offline/echo", "offline/concise") and two["offline/echo"].text == "Say hi."


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-m offline/echo,offline/echo", "listed twice"),
        ("-m offline/echo,offline/assistant -f json", "drop -f and --schema"),
        ("--keep-errors", "--keep-errors is for comparisons"),
        ("-m a,b -t 9", "temperature"),
    ],
)
def test_option_mistakes_are_one_line_usage_errors_and_nothing_is_sent(
    timed: Shell, timed_gateway: OfflineGateway, line: str, message: str
) -> None:
    sent = len(timed_gateway.requests)
    with pytest.raises(UsageError, match=message):
        timed.cell(line, "Say hi.")
    assert len(timed_gateway.requests) == sent


def test_a_comparison_is_not_part_of_the_conversation(timed: Shell) -> None:
    timed.cell("--no-stream", "My name is Ada.")
    timed.cell(f"-m {MODELS} --no-stream", "What is my name?")
    assert [t.user for t in get_session().conversation.turns] == ["My name is Ada."]
    follow = timed.cell(f"-m {MODELS} -c --no-stream", "What is my name?")
    assert all("Ada" in r.content for r in follow.responses.values())
