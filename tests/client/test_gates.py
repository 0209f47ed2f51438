"""Gates in the send loop: every attempt of every path is admitted before it is sent and settled after.

A gate (``flotorch_nb._admission``) holds a limit that concurrent calls share; these tests hold the
loop to its side of the contract: one admit and one settle per attempt (retries included) for
``invoke``, ``ainvoke``, ``stream`` and ``astream``; a wait in seconds delays the attempt;
``UNTIL_SETTLED`` waits for another call's settle; a refusal sends nothing; and no way of ending a
call (cancelled, closed early, dropped) leaves a reservation unsettled.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import httpx2
import pytest

from flotorch_nb import BudgetExceededError, FlotorchLLM, ServerError
from flotorch_nb._admission import UNTIL_SETTLED, Asked, Spent, Ticket, gated
from tests.support.client import (
    SYNC,
    SYNC_IDS,
    Counting,
    Recorder,
    chunk,
    completion,
    invoke,
    mock_llm,
    sse,
    sse_response,
    stream,
)

KINDS = ["invoke", "stream"]
USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def _answer(kind: str) -> httpx2.Response:
    if kind == "invoke":
        return httpx2.Response(200, json=completion("Hello!"))
    return sse_response(
        sse(chunk("Hello!", finish_reason="stop"), {**chunk(), "choices": [], "usage": USAGE})
    )


async def _call(llm: FlotorchLLM, kind: str, sync: bool, **kw: Any) -> Any:
    if kind == "invoke":
        return await invoke(llm, sync, **kw)
    return (await stream(llm, sync, **kw))[1]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_each_attempt_is_admitted_once_and_settled_once_retries_included(sync: bool, kind: str) -> None:
    handler = Recorder(httpx2.Response(500, json={"error": {"message": "down"}}), _answer(kind))
    gate = Counting()
    async with mock_llm(handler) as llm:
        llm.hooks.gates.append(gate)
        response = await _call(llm, kind, sync, max_tokens=50)
    assert response.content == "Hello!"
    assert len(handler.requests) == 2
    assert len(gate.admits) == 2
    assert gate.admits[0].stream is (kind == "stream")
    assert gate.admits[0].estimated_tokens >= 50  # the worst case: the output cap is in it
    failed, answered = gate.settles
    assert failed is not None and isinstance(failed.error, ServerError)
    assert failed.tokens == 0 and failed.response is None  # a 5xx reached no model
    assert answered is not None and answered.error is None
    assert answered.response is response
    assert (answered.tokens, answered.known) == (9, True)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_scoped_gates_apply_inside_the_block_only(sync: bool, kind: str) -> None:
    gate = Counting()
    async with mock_llm(Recorder(_answer(kind))) as llm:
        with gated(gate):
            await _call(llm, kind, sync)
        await _call(llm, kind, sync)
    assert len(gate.admits) == len(gate.settles) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_an_answer_without_usage_settles_an_estimate(sync: bool) -> None:
    gate = Counting()
    body = completion("x" * 40)
    del body["usage"]
    async with mock_llm(Recorder(httpx2.Response(200, json=body))) as llm:
        llm.hooks.gates.append(gate)
        await invoke(llm, sync)
    (spent,) = gate.settles
    assert spent is not None and not spent.known
    assert spent.tokens >= 10  # the prompt estimate plus 40 characters of answer


class Later:
    """Says "not now" (``wait`` seconds) to the first ask, then admits."""

    def __init__(self, wait: float) -> None:
        self.wait, self.asked, self.settled = wait, 0, 0

    def admit(self, request: Asked) -> Ticket | float:
        self.asked += 1
        return self.wait if self.asked == 1 else Ticket()

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        self.settled += 1


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_gate_that_answers_seconds_delays_the_attempt(sync: bool, kind: str) -> None:
    sent_at: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent_at.append(time.perf_counter())
        return _answer(kind)

    gate = Later(0.3)
    async with mock_llm(handler) as llm:
        llm.hooks.gates.append(gate)
        asked_at = time.perf_counter()
        await _call(llm, kind, sync)
    assert gate.asked == 2 and gate.settled == 1
    assert sent_at[0] - asked_at >= 0.29


class OneAtATime:
    """Capacity one: while a ticket is out, every other call waits for its settle."""

    def __init__(self) -> None:
        self.out = 0
        self.most = 0
        self.waited = 0
        self._lock = threading.Lock()

    def admit(self, request: Asked) -> Ticket | float:
        with self._lock:
            if self.out:
                self.waited += 1
                return UNTIL_SETTLED
            self.out += 1
            self.most = max(self.most, self.out)
            return Ticket()

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        with self._lock:
            self.out -= 1


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_until_settled_waits_for_another_calls_settle(kind: str) -> None:
    async def slow(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(0.05)
        return _answer(kind)

    gate = OneAtATime()
    transport = httpx2.MockTransport(slow)
    async with httpx2.AsyncClient(transport=transport) as http:
        llm = FlotorchLLM("test/model", "k-0123456789", "http://gateway.test", async_http_client=http)
        llm.hooks.gates.append(gate)
        started = time.perf_counter()
        answers = await asyncio.gather(*(_call(llm, kind, False) for _ in range(3)))
        elapsed = time.perf_counter() - started
        await llm.aclose()
    assert [a.content for a in answers] == ["Hello!"] * 3
    assert gate.most == 1 and gate.out == 0
    assert gate.waited >= 2  # the others were told to wait, and were let through after settles
    assert elapsed < 1.0  # woken by the settles, not by the one-second backstop


def test_until_settled_wakes_a_call_waiting_in_another_thread() -> None:
    gate = OneAtATime()
    release = threading.Event()

    def handler(request: httpx2.Request) -> httpx2.Response:
        release.wait(5)
        return httpx2.Response(200, json=completion())

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
        llm = FlotorchLLM("test/model", "k-0123456789", "http://gateway.test", http_client=http)
        llm.hooks.gates.append(gate)
        results: list[str] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(llm.invoke([{"role": "user", "content": "x"}]).content)
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while gate.waited == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        for thread in threads:
            thread.join(5)
    assert results == ["Hello!", "Hello!"]
    assert gate.most == 1 and gate.waited >= 1


def test_a_blocking_call_on_a_loops_thread_is_refused_instead_of_hanging_that_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A %%flotorch cell (sync, on the kernel's loop) waiting for a chat reply (a task on that same
    loop) would wait forever: the reply can only settle once the cell returns to the loop."""
    from flotorch_nb import _admission

    monkeypatch.setattr(_admission, "LOOP_THREAD_WAIT_S", 0.3)
    gate = OneAtATime()
    gate.out = 1  # the reply in flight on this loop holds the limit
    sent: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json=completion())

    async def cell() -> None:  # the cell's code runs on the loop's own thread, and blocks it
        with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
            llm = FlotorchLLM("test/model", "k-0123456789", "http://gateway.test", http_client=http)
            llm.hooks.gates.append(gate)
            started = time.monotonic()
            with pytest.raises(BudgetExceededError, match="calls in flight on this thread's event loop"):
                llm.invoke([{"role": "user", "content": "x"}])
            assert 0.25 <= time.monotonic() - started < 3

    asyncio.run(cell())
    assert sent == [] and gate.out == 1


def test_a_blocking_call_on_a_loops_thread_still_gets_a_settle_from_another_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flotorch_nb import _admission

    monkeypatch.setattr(_admission, "LOOP_THREAD_WAIT_S", 5.0)
    gate = OneAtATime()
    gate.out = 1  # held by a call of another thread, which settles soon

    def other_thread_settles() -> None:
        time.sleep(0.2)
        gate.settle(Ticket(), None)
        _admission._SETTLES.bump()

    async def cell() -> str:
        with httpx2.Client(
            transport=httpx2.MockTransport(lambda r: httpx2.Response(200, json=completion()))
        ) as http:
            llm = FlotorchLLM("test/model", "k-0123456789", "http://gateway.test", http_client=http)
            llm.hooks.gates.append(gate)
            threading.Thread(target=other_thread_settles).start()
            return llm.invoke([{"role": "user", "content": "x"}]).content

    assert asyncio.run(cell()) == "Hello!"


class Refusing:
    def admit(self, request: Asked) -> Ticket | float:
        raise BudgetExceededError("the budget is spent")

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        raise AssertionError("nothing was admitted, so nothing is settled")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_gate_that_raises_refuses_before_any_io(sync: bool, kind: str) -> None:
    handler = Recorder(_answer(kind))
    counting = Counting()
    async with mock_llm(handler) as llm:
        llm.hooks.gates.extend([counting, Refusing()])
        with pytest.raises(BudgetExceededError):
            await _call(llm, kind, sync)
    assert handler.requests == []
    assert len(counting.admits) == 1 and counting.settles == [None]  # handed back: never sent


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancelled_attempt_settles_its_reservation(kind: str) -> None:
    arrived = asyncio.Event()

    async def hang(request: httpx2.Request) -> httpx2.Response:
        arrived.set()
        await asyncio.sleep(30)
        raise AssertionError("cancelled before this")

    gate = Counting()
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(hang)) as http:
        llm = FlotorchLLM("test/model", "k-0123456789", "http://gateway.test", async_http_client=http)
        llm.hooks.gates.append(gate)
        task = asyncio.create_task(_call(llm, kind, False))
        await asyncio.wait_for(arrived.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await llm.aclose()
    (spent,) = gate.settles
    assert spent is not None and isinstance(spent.error, asyncio.CancelledError)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_settles_when_closed_early(sync: bool) -> None:
    body = sse(chunk("one "), chunk("two "), chunk("three", finish_reason="stop"))
    gate = Counting()
    async with mock_llm(Recorder(sse_response(body))) as llm:
        llm.hooks.gates.append(gate)
        if sync:
            with llm.stream([{"role": "user", "content": "x"}]) as chat:
                assert next(iter(chat)) == "one "
        else:
            async with llm.astream([{"role": "user", "content": "x"}]) as achat:
                assert await anext(aiter(achat)) == "one "
        assert len(gate.admits) == len(gate.settles) == 1
    (closed,) = gate.settles
    assert closed is not None and isinstance(closed.error, GeneratorExit)
    assert closed.tokens > 0  # stopped after the answer began: an estimate, not nothing


def test_a_stream_dropped_mid_answer_settles() -> None:
    body = sse(chunk("one "), chunk("two "), chunk("three", finish_reason="stop"))
    gate = Counting()
    with httpx2.Client(transport=httpx2.MockTransport(Recorder(sse_response(body)))) as http:
        llm = FlotorchLLM("test/model", "k-0123456789", "http://gateway.test", http_client=http)
        llm.hooks.gates.append(gate)
        dropped = llm.stream([{"role": "user", "content": "x"}])
        assert next(iter(dropped)) == "one "
        assert gate.settles == []
        del dropped
        gc.collect()
    assert len(gate.admits) == len(gate.settles) == 1
