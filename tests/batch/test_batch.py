"""``llm.batch`` / ``llm.abatch`` against the offline gateway on loopback: order, inputs, errors, stops.

``offline/echo`` answers each prompt with itself, so "item i holds the answer to input i" is checked
by content, not by count.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

from flotorch_nb import (
    BadRequestError,
    BatchError,
    BudgetExceededError,
    CallResult,
    FlotorchLLM,
    InvalidRequestError,
    ItemCancelledError,
    RateLimitError,
    ServerError,
)
from flotorch_nb.batch import BatchCancelled, BatchInterrupted, BatchItem, BatchResult
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.batch import Shaped, make_llm
from tests.support.batch import run_batch as run

KEY = "batch-test-key"
SYNC = [True, False]
SYNC_IDS = ["batch", "abatch"]


def test_batch_and_abatch_have_the_same_signature() -> None:
    sync = inspect.signature(FlotorchLLM.batch)
    async_ = inspect.signature(FlotorchLLM.abatch)
    assert sync == async_
    names = list(sync.parameters)
    assert names == [
        "self",
        "inputs",
        "template",
        "concurrency",
        "rpm",
        "tpm",
        "on_error",
        "progress",
        "cache",
        "response_format",
        "tools",
        "params",
    ]
    assert sync.parameters["concurrency"].default == 16 and sync.parameters["on_error"].default == "keep"


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_each_item_holds_the_answer_to_its_own_input_in_input_order(
    gw: OfflineGateway, shaping: Shaped, sync: bool
) -> None:
    shaping.latency = 0.01
    prompts = [f"prompt number {i}" for i in range(60)]
    async with make_llm(gw) as llm:
        result = await run(llm, sync, prompts, concurrency=7)
    assert len(result) == 60 and not result.errors
    assert [item.content for item in result] == prompts
    assert [r.content for r in result.responses] == prompts
    assert all(item.source == "offline" and item.attempts == 1 for item in result)
    assert sum(shaping.received.values()) == 60 and set(shaping.received.values()) == {1}


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_message_lists_series_and_dataframes_with_a_template(gw: OfflineGateway, sync: bool) -> None:
    async with make_llm(gw) as llm:
        system = {"role": "system", "content": "Be brief."}
        conversations = [[system, {"role": "user", "content": f"q{i}"}] for i in range(3)]
        result = await run(llm, sync, conversations)
        assert [i.content for i in result] == ["q0", "q1", "q2"]

        series = pd.Series(["alpha", "beta"], index=["x", "y"])
        frame = (await run(llm, sync, series, template="Say {item}")).to_pandas()
        assert list(frame.index) == ["x", "y"] and list(frame["answer"]) == ["Say alpha", "Say beta"]

        reviews = pd.DataFrame({"review": ["great", "awful"], "stars": [5, 1]}, index=[10, 20])
        result = await run(llm, sync, reviews, template="Classify ({stars}): {review} {{raw}}")
        frame = result.to_pandas()
    assert list(frame["answer"]) == ["Classify (5): great {raw}", "Classify (1): awful {raw}"]
    assert list(frame.index) == [10, 20]
    assert list(frame.columns) == [
        "answer",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "latency_ms",
        "model",
        "finish_reason",
        "request_id",
        "source",
        "error_type",
        "error",
    ]
    row = frame.loc[10]
    assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"] > 0
    assert row["model"] == "offline/echo" and row["source"] == "offline" and row["finish_reason"] == "stop"
    assert row["latency_ms"] > 0 and row["request_id"] and pd.isna(row["error_type"])


def test_an_unknown_template_field_is_refused_before_any_request(gw: OfflineGateway) -> None:
    frame = pd.DataFrame({"review": ["ok"], "stars": [3]})
    with make_llm(gw) as llm:
        with pytest.raises(InvalidRequestError, match=r"\{revew\}.*columns: review, stars"):
            llm.batch(frame, template="Classify: {revew}", progress=False)
        with pytest.raises(InvalidRequestError, match="needs template="):
            llm.batch(frame, progress=False)
        with pytest.raises(InvalidRequestError, match=r"\{text\}.*fields: item"):
            llm.batch(["a"], template="Say {text}", progress=False)
        with pytest.raises(InvalidRequestError, match="temperature"):
            llm.batch(["a"], temperature="hot", progress=False)
    assert gw.requests == []


class Verdict(BaseModel):
    label: str
    confidence: float


def test_a_response_format_class_fills_the_parsed_column(gw: OfflineGateway) -> None:
    with make_llm(gw, model="offline/assistant") as llm:
        result = llm.batch(["Is this good?", "Is this bad?"], response_format=Verdict, progress=False)
    frame = result.to_pandas()
    assert list(frame.columns[:2]) == ["answer", "parsed"]
    assert all(isinstance(v, Verdict) for v in frame["parsed"])
    assert isinstance(result[0].response.parsed, Verdict)  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_on_error_keep_records_typed_errors_and_goes_on(gw: OfflineGateway, sync: bool) -> None:
    gw.faults.add(Fault(status=400, message="bad item", times=2))
    async with make_llm(gw) as llm:
        result = await run(llm, sync, [f"p{i}" for i in range(8)], concurrency=1)
        again = result.retry_failed() if sync else await result.aretry_failed()
    assert len(result) == 8 and len(result.ok) == 6 and len(result.errors) == 2
    failed = [item.position for item in result.errors]
    assert failed == [0, 1] and all(isinstance(i.error, BadRequestError) for i in result.errors)
    assert result[0].response is None and result[2].content == "p2"
    frame = result.to_pandas()
    assert list(frame["error_type"][:2]) == ["BadRequestError"] * 2 and "bad item" in frame["error"][0]
    assert pd.isna(frame["answer"][0]) and frame["answer"][2] == "p2"
    with pytest.raises(BatchError, match="2 of 8 items have no answer"):
        _ = result.responses
    summary = result.summary()
    assert summary["errors"] == {"BadRequestError": 2} and summary["ok"] == 6
    assert "BadRequestError: 2" in result.summary_text()
    assert "BadRequestError: 2" in result._repr_mimebundle_()["text/html"]

    assert not again.errors and [i.content for i in again] == [f"p{i}" for i in range(8)]
    assert again[2].answer is result[2].answer  # kept, not asked again
    assert len(gw.requests) == 8 + 2


def test_the_preview_under_the_summary_shows_each_item_on_one_line() -> None:
    # An error's message may span lines (a gateway's body, a validation report): the preview row
    # collapses it as it does an answer's text, so each item stays one "[label] text  (status)" line.
    error = ItemCancelledError("not answered:\n  the batch was interrupted")
    text = BatchResult([BatchItem(0, "a", error=error)])._repr_mimebundle_()["text/plain"]
    assert "  [a] not answered: the batch was interrupted  (ItemCancelledError)" in text.splitlines()


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_on_error_raise_stops_at_the_first_error_and_keeps_what_finished(
    gw: OfflineGateway, shaping: Shaped, sync: bool
) -> None:
    shaping.latency = 0.05
    gw.faults.add(Fault(status=404, message="no such model", model="offline/echo", times=1))
    async with make_llm(gw) as llm:
        with pytest.raises(BatchError, match="first error") as caught:
            await run(llm, sync, [f"p{i}" for i in range(40)], concurrency=4, on_error="raise")
    result = caught.value.result
    assert len(result) == 40 and type(caught.value.error).__name__ == "NotFoundError"
    assert sum(1 for i in result if i.ok) + sum(1 for i in result.errors) == 40
    assert any(isinstance(i.error, ItemCancelledError) for i in result)
    assert sum(shaping.received.values()) < 40  # the rest was never sent


@pytest.mark.anyio
async def test_retries_follow_the_client_policy_and_a_429_pauses_the_whole_batch(
    gw: OfflineGateway, shaping: Shaped
) -> None:
    shaping.latency = 0.05
    # The fault names a model no other test of this module sends to: a request of an earlier test
    # still reaching the shared gateway must not take the one 429.
    gw.faults.add(Fault(status=429, retry_after="0.5", times=1, model="offline/concise"))
    async with make_llm(gw, model="offline/concise", retries=1) as llm:
        result = await llm.abatch([f"p{i}" for i in range(12)], concurrency=4, progress=False)
    assert not result.errors and result.stats.retries == 1 and result.stats.rate_limited == 1
    arrivals = sorted(shaping.arrivals)
    # The 429 came back at once, so the pause began no earlier than the first arrival. The four first
    # sends left before anyone could know; the other eight items and the retry waited out the 0.5 s
    # pause. Without a shared pause those eight would have arrived within ~0.2 s and only the retry
    # late. (A cancelled request of an earlier test may still land early in the list: it is early.)
    first = arrivals[0]
    late = [t for t in arrivals if t >= first + 0.45]
    assert len(late) >= 12 - 4 + 1, [round(t - first, 3) for t in arrivals]
    assert max(i.attempts for i in result) == 2

    gw.faults.add(Fault(status=503, times=2))
    async with make_llm(gw, retries=1) as llm:
        result = await llm.abatch(["only"], progress=False)
    assert isinstance(result[0].error, ServerError) and result[0].attempts == 2


@pytest.mark.anyio
async def test_every_item_goes_through_the_hooks_once_and_a_budget_stops_sending(gw: OfflineGateway) -> None:
    seen: list[CallResult] = []
    spent = {"calls": 0}

    def budget(request: Any) -> None:
        assert request.label == "batch"
        if spent["calls"] >= 5:
            raise BudgetExceededError("token budget spent")
        spent["calls"] += 1

    async with make_llm(gw) as llm:
        llm.hooks.before_request.append(budget)
        llm.hooks.after_call.append(seen.append)
        result = await llm.abatch([f"p{i}" for i in range(20)], concurrency=1, progress=False)
    assert len(gw.requests) == 5 and len(seen) == 5 and all(r.outcome == "ok" for r in seen)
    assert [i.ok for i in result] == [True] * 5 + [False] * 15
    assert all(isinstance(i.error, BudgetExceededError) for i in result.errors)
    assert {str(i.error) for i in result.errors} == {"token budget spent"}  # one cause, one wording
    assert "(15 never sent)" in result.summary_text()
    # The refused item was not sent: the summary's "sent" and each item's attempts say so.
    assert result.stats.requests == 5 and [i.attempts for i in result] == [1] * 5 + [0] * 15


@pytest.mark.anyio
async def test_work_is_fed_as_capacity_frees_up_not_one_task_per_item(gw: OfflineGateway) -> None:
    tasks: list[int] = []
    workers: list[int] = []

    def count(request: Any) -> None:
        running = asyncio.all_tasks()
        tasks.append(len(running))
        workers.append(sum(getattr(t.get_coro(), "__qualname__", "") == "_Run._worker" for t in running))

    async with make_llm(gw) as llm:
        await llm.ainvoke([{"role": "user", "content": "warm up"}])
        baseline = len(asyncio.all_tasks())
        llm.hooks.before_request.append(count)
        result = await llm.abatch([f"p{i}" for i in range(300)], concurrency=8, progress=False)
    assert len(result.ok) == 300 and max(workers) == 8
    # 300 items, yet only the 8 workers (plus the progress ticker and the pool's connections) exist
    assert max(tasks) - baseline <= 8 + 1 + 8


@pytest.mark.anyio
async def test_cancelling_abatch_closes_what_is_in_flight_and_keeps_what_finished(
    gw: OfflineGateway, shaping: Shaped
) -> None:
    shaping.latency = 0.2
    async with make_llm(gw) as llm:
        task = asyncio.create_task(llm.abatch([f"p{i}" for i in range(40)], concurrency=4, progress=False))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(BatchCancelled) as caught:
            await task
        result = caught.value.result
        assert 4 <= len(result.ok) < 40 and result.stats.interrupted
        assert all(isinstance(i.error, ItemCancelledError) for i in result.errors)
        await asyncio.sleep(0.1)
        assert shaping.disconnected >= 1  # the requests in flight were closed, not left to finish
        assert llm.in_flight == 0
        shaping.latency = 0
        assert (await llm.ainvoke([{"role": "user", "content": "still usable"}])).content == "still usable"


def test_an_interrupt_of_batch_returns_the_partial_result_and_a_rerun_with_the_cache_sends_only_the_rest(
    gw: OfflineGateway, shaping: Shaped, tmp_path: Any
) -> None:
    import _thread

    shaping.latency = 0.15
    prompts = [f"p{i}" for i in range(30)]
    cache = tmp_path / "answers.sqlite"

    def interrupt_after_three_answers() -> None:
        # A worker sends its next request only after its last item finished, so 6 arrivals at
        # concurrency 3 mean at least 3 answers are in (a clock would depend on the machine's load).
        deadline = time.monotonic() + 30
        while shaping.seen < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        _thread.interrupt_main()

    with make_llm(gw) as llm:
        timer = threading.Thread(target=interrupt_after_three_answers)
        timer.start()
        with pytest.raises(BatchInterrupted) as caught:
            llm.batch(prompts, concurrency=3, cache=cache, progress=False)
        timer.join()
        partial = caught.value.result
        done = [i.position for i in partial.ok]
        assert 3 <= len(done) < 30 and isinstance(caught.value, KeyboardInterrupt)
        sent_before = sum(shaping.received.values())
        shaping.latency = 0
        again = llm.batch(prompts, concurrency=3, cache=cache, progress=False)
    assert [i.content for i in again] == prompts
    assert sorted(i.position for i in again if i.source == "cache") == done
    assert sum(shaping.received.values()) - sent_before == 30 - len(done)


@pytest.mark.anyio
async def test_429s_and_503s_on_a_fifth_of_requests_still_end_with_every_item_answered(
    gw: OfflineGateway, shaping: Shaped
) -> None:
    shaping.fail_every = 5
    async with make_llm(gw, retries=6) as llm:
        result = await llm.abatch([f"p{i}" for i in range(50)], concurrency=6, progress=False)
    assert not result.errors and shaping.failed >= 10
    assert result.stats.retries == shaping.failed and result.stats.requests == 50 + shaping.failed


def test_an_error_type_is_typed_not_a_string(gw: OfflineGateway) -> None:
    gw.faults.add(Fault(status=429, retry_after="0", times=3))
    with make_llm(gw) as llm:
        result = llm.batch(["x"], progress=False)
    assert isinstance(result[0].error, RateLimitError) and result[0].attempts == 3
