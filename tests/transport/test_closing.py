"""Closing a client under a call in flight: ``close()`` from another thread, ``aclose()`` from another
task. The call fails with an ``APIConnectionError`` that says so, is not retried on the closed pool,
and the client stays usable: the next call opens a new pool."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from flotorch_nb import APIConnectionError, FlotorchError, FlotorchLLM, LLMResponse
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import KEY, NO_WAIT, USER

SLOW_FAILURE = Fault(delay=0.5, status=503, message="busy", times=5)


def _wait_for_request(gateway: OfflineGateway) -> None:
    deadline = time.monotonic() + 5
    while not gateway.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gateway.requests, "the call never reached the gateway"


def test_close_from_another_thread_fails_the_call_in_flight_cleanly(gateway: OfflineGateway) -> None:
    gateway.faults.add(SLOW_FAILURE)
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url, retry=NO_WAIT)
    outcome: list[LLMResponse | BaseException] = []

    def call() -> None:
        try:
            outcome.append(llm.invoke(USER))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    _wait_for_request(gateway)
    llm.close()
    caller.join(timeout=10)
    (error,) = outcome
    assert isinstance(error, APIConnectionError), repr(error)
    assert "closed while a call" in str(error) and "not retried" in str(error)
    assert len(gateway.requests) == 1  # no retry on the closed pool
    gateway.faults.clear()
    assert llm.invoke(USER).content  # a new pool, made on demand
    assert llm.in_flight == 0
    llm.close()


@pytest.mark.anyio
async def test_aclose_under_an_ainvoke_in_flight_fails_it_cleanly(gateway: OfflineGateway) -> None:
    gateway.faults.add(SLOW_FAILURE)
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url, retry=NO_WAIT)
    task = asyncio.ensure_future(llm.ainvoke(USER))
    while not gateway.requests:
        await asyncio.sleep(0.01)
    await llm.aclose()
    with pytest.raises(APIConnectionError, match="closed while a call") as caught:
        await task
    assert "not retried" in str(caught.value)
    assert len(gateway.requests) == 1
    gateway.faults.clear()
    assert (await llm.ainvoke(USER)).content
    await llm.aclose()


@pytest.mark.anyio
async def test_aclose_under_an_astream_in_flight_is_a_flotorch_error(gateway: OfflineGateway) -> None:
    llm = FlotorchLLM("offline/echo", KEY, gateway.url, retry=NO_WAIT)
    slow = {"offline": {"token_delay": 0.05}}
    seen: list[str] = []

    async def read() -> None:
        async for delta in llm.astream(
            [{"role": "user", "content": "a b c d e f g h i j k l"}], extra_body=slow
        ):
            seen.append(delta)

    task = asyncio.ensure_future(read())
    while not seen:
        await asyncio.sleep(0.01)
    await llm.aclose()
    with pytest.raises(FlotorchError):
        await asyncio.wait_for(task, 5)
    assert (await llm.ainvoke(USER)).content
    await llm.aclose()
