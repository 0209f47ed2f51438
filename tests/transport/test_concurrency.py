"""Transport lifecycle: pooled clients created lazily, one per event loop, closable; and many concurrent
calls on one client."""

from __future__ import annotations

import asyncio
import gc

import anyio
import httpx2
import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb._transport import AsyncPool
from flotorch_nb.gateway import OfflineGateway
from tests.support.client import KEY, USER, live_llm


def test_no_pool_exists_before_the_first_call(gateway: OfflineGateway) -> None:
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url)
    assert llm._client is None
    assert llm._async_clients == {}
    llm.invoke(USER)
    pool = llm._client
    assert isinstance(pool, httpx2.Client)
    llm.invoke(USER)
    assert llm._client is pool  # one pooled client, reused
    assert llm._async_clients == {}  # the async pool is still not needed
    llm.close()
    assert pool.is_closed


@pytest.mark.anyio
async def test_the_async_pool_is_lazy_and_closed_by_aclose(gateway: OfflineGateway) -> None:
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url)
    assert llm._async_clients == {}
    await llm.ainvoke(USER)
    await llm.ainvoke(USER)
    assert len(llm._async_clients) == 1
    (pool,) = llm._async_clients.values()
    assert llm._client is None  # the sync pool was never needed
    await llm.aclose()
    assert pool.is_closed
    assert llm._async_clients == {}


@pytest.mark.anyio
async def test_context_managers_close_both_pools(gateway: OfflineGateway) -> None:
    async with FlotorchLLM("offline/assistant", KEY, gateway.url) as llm:
        llm.invoke(USER)
        await llm.ainvoke(USER)
        sync_pool = llm._client
        (async_pool,) = llm._async_clients.values()
    assert sync_pool is not None and sync_pool.is_closed
    assert async_pool.is_closed
    with FlotorchLLM("offline/assistant", KEY, gateway.url) as llm2:
        llm2.invoke(USER)
        sync_pool2 = llm2._client
    assert sync_pool2 is not None and sync_pool2.is_closed


def test_a_closed_client_can_be_used_again(gateway: OfflineGateway) -> None:
    """close() releases the pool; a later call simply opens a new one (notebook cells are re-run)."""
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url)
    llm.invoke(USER)
    llm.close()
    assert llm.invoke(USER).content
    llm.close()
    llm.close()  # idempotent


@pytest.mark.anyio
async def test_64_concurrent_ainvoke_on_one_client(gateway: OfflineGateway) -> None:
    async with live_llm(gateway.url, "offline/echo") as llm:
        prompts = [f"request number {i} of 64" for i in range(64)]
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            response = await llm.ainvoke([{"role": "user", "content": prompts[i]}])
            results[i] = response.content

        async with anyio.create_task_group() as tg:
            for i in range(64):
                tg.start_soon(one, i)
        assert len(llm._async_clients) == 1
    assert len(results) == 64
    for i, content in results.items():
        assert prompts[i] in content
    assert len(set(results.values())) == 64
    assert len(gateway.requests) == 64


@pytest.mark.anyio
async def test_concurrent_streams_on_one_client(gateway: OfflineGateway) -> None:
    async with live_llm(gateway.url, "offline/echo") as llm:

        async def one(i: int) -> tuple[int, str, str]:
            chat = llm.astream([{"role": "user", "content": f"stream {i} says hello"}])
            text = "".join([d async for d in chat])
            return i, text, chat.response.content

        results = await asyncio.gather(*(one(i) for i in range(16)))
    for i, text, content in results:
        assert text == content
        assert f"stream {i} says hello" in content


def test_one_client_across_two_asyncio_runs(gateway: OfflineGateway) -> None:
    """The seed's ``asyncio.run(main())`` twice on one client: each loop gets its own pool, and the
    pool of a finished loop is closed with it (no socket leaks: filterwarnings=error would see it)."""
    llm = FlotorchLLM("offline/echo", KEY, gateway.url)

    async def main(text: str) -> tuple[str, AsyncPool]:
        response = await llm.ainvoke([{"role": "user", "content": text}])
        (pool,) = [c for loop, c in llm._async_clients.items() if loop is asyncio.get_running_loop()]
        return response.content, pool

    first, first_pool = asyncio.run(main("first run"))
    second, second_pool = asyncio.run(main("second run"))
    assert "first run" in first
    assert "second run" in second
    assert first_pool is not second_pool
    assert first_pool.is_closed  # closed when its loop ended
    assert second_pool.is_closed
    assert llm.invoke(USER).content  # the sync path is unaffected
    llm.close()
    asyncio.run(llm.aclose())
    gc.collect()


def test_one_client_across_asyncio_runs_with_streams(gateway: OfflineGateway) -> None:
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url)

    async def main() -> str:
        chat = llm.astream(USER)
        return "".join([d async for d in chat])

    assert asyncio.run(main()) == asyncio.run(main()) != ""
    llm.close()
    gc.collect()


def test_the_sync_path_works_inside_a_running_loop(gateway: OfflineGateway) -> None:
    """Jupyter runs cells inside a running loop: invoke must not call asyncio.run()."""
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url)

    async def cell() -> str:
        return llm.invoke(USER).content + "".join(llm.stream(USER))

    assert asyncio.run(cell())
    llm.close()


def test_with_model_shares_no_pool(gateway: OfflineGateway) -> None:
    with FlotorchLLM("offline/assistant", KEY, gateway.url) as llm:
        llm.invoke(USER)
        other = llm.with_model("offline/echo")
        with other:
            response = other.invoke([{"role": "user", "content": "ping 42"}])
            assert other._client is not llm._client
        assert "ping 42" in response.content
        assert llm._client is not None and not llm._client.is_closed
    assert gateway.requests[-1]["body"]["model"] == "offline/echo"


def test_aclose_closes_a_pool_of_a_loop_running_in_another_thread(gateway: OfflineGateway) -> None:
    import threading

    llm = FlotorchLLM("offline/assistant", KEY, gateway.url)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(llm.ainvoke(USER), other).result(timeout=10)
        (pool_elsewhere,) = llm._async_clients.values()
        closed_on: list[threading.Thread] = []
        real_aclose = pool_elsewhere.aclose

        async def recording_aclose() -> None:
            closed_on.append(threading.current_thread())
            await real_aclose()

        pool_elsewhere.aclose = recording_aclose  # type: ignore[method-assign]

        async def main() -> AsyncPool:
            await llm.ainvoke(USER)
            here = llm._async_clients[asyncio.get_running_loop()]
            await llm.aclose()
            return here

        pool_here = asyncio.run(main())
        assert pool_here.is_closed
        # Closed on its own loop (awaiting it from another loop would touch that loop's sockets).
        deadline = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.2), other)
        deadline.result(timeout=5)
        assert pool_elsewhere.is_closed
        assert closed_on == [thread]
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(timeout=5)
        other.close()


@pytest.mark.anyio
async def test_close_when_idle_waits_for_the_calls_in_flight(gateway: OfflineGateway) -> None:
    llm = FlotorchLLM("offline/echo", KEY, gateway.url)
    words = "one two three four five six"
    stream = llm.astream([{"role": "user", "content": words}], extra_body={"offline": {"token_delay": 0.02}})
    assert llm.in_flight == 0  # nothing is sent until the stream is iterated
    deltas = []
    async for delta in stream:
        deltas.append(delta)
        if len(deltas) == 1:
            assert llm.in_flight == 1
            llm.close_when_idle()
            assert llm._async_clients, "not closed under the running stream"
    assert "".join(deltas) == words and llm.in_flight == 0
    for _ in range(50):  # the close was scheduled on this loop by the end of the stream
        if not llm._async_clients:
            break
        await asyncio.sleep(0.01)
    assert llm._async_clients == {}
    llm.invoke(USER)  # later calls still work, and the client closes again once idle
    assert llm._client is None and llm.in_flight == 0
