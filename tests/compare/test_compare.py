"""Comparisons against the real offline gateway on loopback: every model at once, one column each, a
fault injected for one model staying in that model's column, streaming callbacks, cancellation, the
static sanitized display with provenance in its metadata, replay, and label agreement."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flotorch_nb import (
    BudgetExceededError,
    Comparison,
    FlotorchLLM,
    InvalidRequestError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    StreamError,
)
from flotorch_nb._config import ENV_RECORD, ENV_REPLAY
from flotorch_nb._pipeline._hooks import CallRequest
from flotorch_nb._records import FIELDS, METADATA_KEY
from flotorch_nb.batch import ItemCancelledError
from flotorch_nb.compare import (
    ComparisonCancelled,
    ComparisonInterrupted,
    ModelResult,
    acompare,
    agreement,
    compare,
    normalize_label,
    parse_models,
    preview_bundle,
)
from flotorch_nb.compare import compare as compare_function
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.pricing import PriceTable
from flotorch_nb.spending import MoneyBudget
from tests.support.html import XSS_PAYLOADS, assert_safe_html, own_markup_removed

pytestmark = pytest.mark.anyio

KEY = "offline-test-key"
MODELS = ["offline/assistant", "offline/echo"]
PROMPT = "Name three colours of the sea."
USER = [{"role": "user", "content": PROMPT}]
#: A comparison whose second column answers only after 20 s. The delay is scripted in the request
#: itself, not a fault queued on the shared gateway: a request of an earlier test that reaches the
#: gateway late (sent just before that test stopped it) cannot take the delay and answer at once.
SLOW_MODELS = ["offline/assistant", "offline/scripted"]
SLOW = [{"role": "user", "content": json.dumps({"script": {"content": "too late", "delay": 20}})}]


def client(gateway: OfflineGateway) -> FlotorchLLM:
    return FlotorchLLM("offline/assistant", KEY, gateway.url, retry=RetryPolicy(max_retries=0))


async def run(llm: FlotorchLLM, sync: bool, *args: Any, **kwargs: Any) -> Comparison:
    """One test body for both paths (the sync twin blocks on the bridge's background loop)."""
    if sync:
        return llm.compare(*args, **kwargs)
    return await llm.acompare(*args, **kwargs)


# -- answers side by side ----------------------------------------------------------------------------
@pytest.mark.parametrize("sync", [True, False])
async def test_every_model_answers_in_its_own_column_in_the_order_asked(
    gateway: OfflineGateway, sync: bool
) -> None:
    prices = PriceTable()
    prices.set("offline/assistant", "0.15", "0.60")
    with client(gateway) as llm:
        comparison = await run(
            llm, sync, USER, ["offline/echo", "offline/assistant"], prices=prices, temperature=0
        )
    assert comparison.models == ("offline/echo", "offline/assistant")
    assert comparison.errors == {}
    assert list(comparison.responses) == ["offline/echo", "offline/assistant"]
    assert comparison["offline/echo"].text == PROMPT  # the echo model repeats the prompt
    assert comparison["offline/assistant"].text != PROMPT
    assert sorted(r.body["model"] for r in gateway.requests) == MODELS  # one request per model
    assert all(r.body["temperature"] == 0 for r in gateway.requests)
    # Cost: priced model exact, unpriced "unknown".
    usage = comparison.responses["offline/assistant"].usage
    assert usage is not None
    assert (
        comparison["offline/assistant"].cost
        == (usage.input_tokens * Decimal("0.15") + usage.output_tokens * Decimal("0.60")) / 1_000_000
    )
    assert comparison["offline/echo"].cost is None
    # One provenance record per answer, in column order.
    assert [p["model"] for p in comparison.provenance] == ["offline/echo", "offline/assistant"]
    assert all(tuple(p) == FIELDS and p["source"] == "offline" for p in comparison.provenance)


async def test_the_table_has_one_row_per_model(gateway: OfflineGateway) -> None:
    gateway.faults.add(Fault(status=503, message="down for maintenance", model="offline/echo"))
    prices = PriceTable()
    prices.set("offline/assistant", 1, 2)
    with client(gateway) as llm:
        frame = (await llm.acompare(USER, MODELS, prices=prices)).to_pandas()
    assert list(frame.columns) == [
        "model",
        "answer",
        "input_tokens",
        "output_tokens",
        "tokens",
        "latency_ms",
        "cost",
        "source",
        "error_type",
        "error",
    ]
    ok, failed = frame.to_dict("records")
    assert ok["model"] == "offline/assistant" and ok["tokens"] > 0 and ok["latency_ms"] > 0
    assert ok["cost"] == pytest.approx((ok["input_tokens"] * 1 + ok["output_tokens"] * 2) / 1e6)
    assert ok["source"] == "offline" and pd.isna(ok["error_type"])
    assert failed["error_type"] == "ServerError" and "down for maintenance" in failed["error"]
    assert pd.isna(failed["answer"]) and pd.isna(failed["tokens"]) and pd.isna(failed["cost"])


@pytest.mark.parametrize("sync", [True, False])
async def test_a_model_that_fails_shows_its_typed_error_while_the_others_finish(
    gateway: OfflineGateway, sync: bool
) -> None:
    gateway.faults.add(Fault(status=503, message="down for maintenance", model="offline/echo"))
    with client(gateway) as llm:
        comparison = await run(llm, sync, USER, MODELS)
    assert list(comparison.responses) == ["offline/assistant"]
    (error,) = comparison.errors.values()
    assert isinstance(error, ServerError) and error.status_code == 503
    data, metadata = comparison._repr_mimebundle_()
    assert 'class="flotorch-compare-error"' in data["text/html"] and "ServerError" in data["text/html"]
    assert "1 of 2 models answered" in data["text/plain"]
    assert [p["model"] for p in metadata[METADATA_KEY]["provenance"]] == ["offline/assistant"]
    # What a %%flotorch -m a,b cell does without --keep-errors: fail, with the typed error.
    with pytest.raises(ServerError, match="down for maintenance") as caught:
        comparison.raise_for_errors()
    assert "in a comparison of offline/assistant, offline/echo: offline/echo failed" in caught.value.__notes__


async def test_an_unknown_model_and_a_refusing_hook_stay_in_their_columns(gateway: OfflineGateway) -> None:
    prices = PriceTable()
    prices.set("offline/assistant", 0.15, 0.6)
    seen: list[CallRequest] = []
    with client(gateway) as llm:
        MoneyBudget("$1", prices).attach(llm.hooks)  # the parent's hooks apply to every model
        llm.hooks.before_request.append(seen.append)
        comparison = await llm.acompare(
            USER, ["offline/assistant", "offline/echo", "offline/nope"], prices=prices
        )
    assert list(comparison.responses) == ["offline/assistant"]
    assert isinstance(comparison.errors["offline/echo"], BudgetExceededError)  # no price: refused
    assert isinstance(comparison.errors["offline/nope"], BudgetExceededError)
    # The budget is a gate: it refuses each attempt after the call's hooks ran, before any I/O.
    assert [r.model for r in seen] == ["offline/assistant", "offline/echo", "offline/nope"]
    assert [r["body"]["model"] for r in gateway.requests] == ["offline/assistant"]
    with client(gateway) as llm:
        comparison = await llm.acompare(USER, ["offline/assistant", "offline/<b>nope</b>"])
    assert isinstance(comparison.errors["offline/<b>nope</b>"], NotFoundError)
    html = comparison._repr_mimebundle_()[0]["text/html"]
    assert "offline/&lt;b&gt;nope&lt;/b&gt;" in html and "<b>" not in html


async def test_mistakes_in_the_request_itself_are_raised_not_shown_per_model(gateway: OfflineGateway) -> None:
    with client(gateway) as llm:
        with pytest.raises(InvalidRequestError, match="messages"):
            await llm.acompare([], MODELS)
        with pytest.raises(InvalidRequestError, match="listed twice"):
            await llm.acompare(USER, ["offline/echo", "offline/echo"])
        with pytest.raises(InvalidRequestError, match="at least one model"):
            await llm.acompare(USER, " , ")
        with pytest.raises(InvalidRequestError, match="not model="):
            await llm.acompare(USER, MODELS, model="x")
        for wrong in (None, 123):
            with pytest.raises(InvalidRequestError, match=rf"a list of model names .*got {wrong}"):
                await llm.acompare(USER, wrong)  # type: ignore[arg-type]
            with pytest.raises(InvalidRequestError, match="a list of model names"):
                llm.compare(USER, models=wrong)  # type: ignore[arg-type]
    assert gateway.requests == []
    assert parse_models("a, b,c") == ("a", "b", "c") and parse_models(("a",)) == ("a",)


# -- streaming, callbacks, cancellation --------------------------------------------------------------
@pytest.mark.parametrize("sync", [True, False])
async def test_streaming_hands_over_each_models_text_as_it_arrives(
    gateway: OfflineGateway, sync: bool
) -> None:
    pieces: dict[str, list[str]] = {m: [] for m in MODELS}
    finished: list[ModelResult] = []
    threads: set[int] = set()

    def on_delta(model: str, text: str) -> None:
        threads.add(threading.get_ident())
        pieces[model].append(text)

    def on_result(result: ModelResult) -> None:
        threads.add(threading.get_ident())
        finished.append(result)

    with client(gateway) as llm:
        comparison = await run(llm, sync, USER, MODELS, on_delta=on_delta, on_result=on_result)
    for model in MODELS:
        assert len(pieces[model]) > 1 and "".join(pieces[model]) == comparison[model].text
    assert sorted(r.model for r in finished) == MODELS and all(r.ok for r in finished)
    assert all(r.body["stream"] is True for r in gateway.requests)
    assert threads == {threading.get_ident()}  # callbacks on the caller's thread, also for sync


async def test_a_stream_cut_midway_keeps_what_arrived_marked_as_cut_off(gateway: OfflineGateway) -> None:
    gateway.faults.add(Fault(cut_after=4, model="offline/assistant"))
    with client(gateway) as llm:
        comparison = await llm.acompare(USER, MODELS, on_delta=lambda m, t: None)
    cut = comparison["offline/assistant"]
    assert isinstance(cut.error, StreamError) and cut.text and cut.response is None
    data, _ = comparison._repr_mimebundle_()
    assert "(answer cut off)" in data["text/html"] and "(answer cut off)" in data["text/plain"]
    assert comparison["offline/echo"].ok


@pytest.mark.parametrize("sync", [True, False])
async def test_a_callback_that_raises_stops_the_comparison_with_its_own_error(
    gateway: OfflineGateway, sync: bool
) -> None:
    def broken(model: str, text: str) -> None:
        raise LookupError("the display broke")

    with client(gateway) as llm, pytest.raises(LookupError, match="the display broke"):
        await run(llm, sync, USER, MODELS, on_delta=broken)


def test_interrupting_a_blocking_comparison_cancels_the_requests_in_flight(gateway: OfflineGateway) -> None:
    started = time.monotonic()

    def interrupt_on_first_delta(model: str, text: str) -> None:
        raise KeyboardInterrupt

    with client(gateway) as llm, pytest.raises(KeyboardInterrupt):
        compare_function(llm, SLOW, SLOW_MODELS, on_delta=interrupt_on_first_delta)
    assert time.monotonic() - started < 10  # the 20 s answer was not waited for
    assert not [t for t in threading.enumerate() if t.name == "flotorch-compare"]


def test_an_interrupt_keeps_the_columns_that_finished(gateway: OfflineGateway) -> None:
    """Ctrl-C once one model has answered: the slow one is cancelled, the answer is kept."""
    started = time.monotonic()

    def ctrl_c_after_the_first_answer(result: ModelResult) -> None:
        raise KeyboardInterrupt

    with client(gateway) as llm, pytest.raises(ComparisonInterrupted) as caught:
        compare_function(llm, SLOW, SLOW_MODELS, on_result=ctrl_c_after_the_first_answer)
    assert time.monotonic() - started < 10 and isinstance(caught.value, KeyboardInterrupt)
    kept = caught.value.result
    assert kept.models == tuple(SLOW_MODELS) and kept["offline/assistant"].ok
    assert kept["offline/assistant"].provenance == kept["offline/assistant"].response.provenance  # type: ignore[union-attr]
    assert isinstance(kept["offline/scripted"].error, ItemCancelledError)


async def test_a_cancelled_acompare_keeps_the_columns_that_finished(gateway: OfflineGateway) -> None:
    answered = asyncio.Event()
    with client(gateway) as llm:
        task = asyncio.create_task(acompare(llm, SLOW, SLOW_MODELS, on_result=lambda r: answered.set()))
        await asyncio.wait_for(answered.wait(), 10)
        task.cancel()
        with pytest.raises(ComparisonCancelled) as caught:
            await task
    kept = caught.value.result
    assert kept["offline/assistant"].ok and isinstance(kept["offline/scripted"].error, ItemCancelledError)


async def test_cancelling_the_task_cancels_every_model(gateway: OfflineGateway) -> None:
    gateway.faults.add(Fault(delay=20, times=2))
    with client(gateway) as llm:
        task = asyncio.create_task(acompare(llm, USER, MODELS))
        await asyncio.sleep(0.3)
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert time.monotonic() - started < 5


# -- what is displayed and saved ----------------------------------------------------------------------
@pytest.mark.parametrize("payload", XSS_PAYLOADS[:12])
async def test_the_side_by_side_view_is_sanitized(gateway: OfflineGateway, payload: str) -> None:
    with client(gateway) as llm:
        comparison = await llm.acompare([{"role": "user", "content": payload}], ["offline/echo"])
    html = comparison._repr_mimebundle_()[0]["text/html"]
    assert_safe_html(own_markup_removed(html), own_markup=True)
    live = preview_bundle(["offline/echo", "b"], {"b": payload}, {"offline/echo": comparison["offline/echo"]})
    assert_safe_html(own_markup_removed(live["text/html"]), own_markup=True)
    assert payload in live["text/plain"]


async def test_ipython_puts_the_provenance_into_the_output_metadata(gateway: OfflineGateway) -> None:
    from IPython.core.formatters import DisplayFormatter

    with client(gateway) as llm:
        comparison = await llm.acompare(USER, MODELS)
    data, metadata = DisplayFormatter().format(comparison)
    assert set(data) == {"text/plain", "text/html"}
    assert [p["model"] for p in metadata[METADATA_KEY]["provenance"]] == MODELS
    json.dumps(metadata)  # plain JSON: it is saved in the .ipynb as it is
    assert repr(comparison) == str(comparison) == data["text/plain"]  # the table in plain Python too
    assert repr(comparison).splitlines()[0].split() == ["model", "tokens", "latency"]
    assert f"── offline/echo\n{comparison['offline/echo'].text}" in repr(comparison)


def test_the_live_view_shows_finished_columns_final_and_others_streaming() -> None:
    done = ModelResult("a", error=ServerError("HTTP 503", status_code=503, gateway_message="down"))
    bundle = preview_bundle(["a", "b"], {"b": "partial <i>answer</i>"}, {"a": done})
    assert "ServerError" in bundle["text/html"] and "streaming…" in bundle["text/html"]
    assert "partial &lt;i&gt;answer&lt;/i&gt;" in bundle["text/html"]
    assert bundle["text/plain"].startswith("── a (done)\nServerError")


async def test_a_comparison_replays_with_the_recorded_request_hash(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_RECORD, str(tmp_path))
    with client(gateway) as llm:
        live = await llm.acompare(USER, MODELS, temperature=0.5)
    keys = {json.loads(p.read_text())["key"] for p in tmp_path.glob("*.json")}
    assert {p["request_hash"] for p in live.provenance} == keys and len(keys) == 2

    monkeypatch.delenv(ENV_RECORD)
    monkeypatch.setenv(ENV_REPLAY, str(tmp_path))
    with FlotorchLLM("offline/assistant") as llm:  # no key, no gateway
        replayed = await llm.acompare(USER, MODELS, temperature=0.5)
    assert {p["source"] for p in replayed.provenance} == {"replay"}
    assert [r.text for r in replayed.results] == [r.text for r in live.results]
    assert [p["request_hash"] for p in replayed.provenance] == [p["request_hash"] for p in live.provenance]


def test_the_blocking_compare_works_where_an_event_loop_is_already_running(gateway: OfflineGateway) -> None:
    """As in a notebook cell: the kernel's loop is running in this thread."""

    async def cell() -> Comparison:
        with client(gateway) as llm:
            return compare(llm, USER, MODELS)

    assert asyncio.run(cell()).errors == {}


# -- agreement between label answers ------------------------------------------------------------------
def test_labels_are_compared_without_case_quotes_emphasis_or_a_final_full_stop() -> None:
    assert normalize_label("**Positive.**") == normalize_label(' "positive" ') == "positive"
    assert normalize_label("  Not   sure ") == "not sure"
    assert normalize_label("") is None and normalize_label(None) is None


def test_agreement_counts_items_where_every_model_gave_the_same_label() -> None:
    result = agreement(
        {
            "a": ["Positive", "negative", "positive", None],
            "b": ["positive.", "Negative", "negative", "positive"],
            "c": ["POSITIVE", "negative", "positive", "positive"],
        }
    )
    assert (result.items, result.compared, result.agreed) == (4, 3, 2)
    assert result.per_item == (True, True, False, None)
    assert result.share == pytest.approx(2 / 3)
    assert result.pairwise[("a", "b")] == pytest.approx(2 / 3)
    assert result.pairwise[("b", "c")] == pytest.approx(3 / 4)
    assert (
        str(result)
        == "all 3 models agree on 2 of 3 items (67%) (1 item without a label from every model left out)"
    )
    matrix = result.to_pandas()
    assert matrix.loc["a", "a"] == 1.0 and matrix.loc["c", "b"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="one answer per item"):
        agreement({"a": ["x"], "b": []})
    with pytest.raises(ValueError, match="at least two models"):
        agreement({"a": ["x"]})
    assert agreement({"a": [None], "b": ["x"]}).share is None


def test_labels_are_told_from_prose() -> None:
    from flotorch_nb.compare._agreement import looks_like_labels

    assert looks_like_labels(["Positive", "negative.", None])
    assert not looks_like_labels(["The sea is blue, green and grey on most days of the year."])
    assert not looks_like_labels([None, ""])
