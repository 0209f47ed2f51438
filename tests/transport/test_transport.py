"""The transport boundary over real loopback, for both libraries behind it (httpx2 for sync calls,
aiohttp for async ones): which pool serves which call, that aiohttp is imported only by the first
async call, and that whatever a broken server does ends in our error tree, with no key in it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable

import httpx2
import pytest

from flotorch_nb import APIConnectionError, APITimeoutError, FlotorchError, FlotorchLLM, StreamError
from flotorch_nb._transport._aio import AioPool
from flotorch_nb._transport._httpx import HttpxPool
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import (
    KEY,
    NO_WAIT,
    ONCE,
    SYNC,
    SYNC_IDS,
    USER,
    RawServer,
    completion,
    http_response,
    invoke,
    stream,
)

ANSWER = json.dumps(completion("over the wire")).encode()
Handler = Callable[[socket.socket, bytes], bool]


def _everything(error: BaseException) -> str:
    """What a person could see of an error: its chain's str/repr and a traceback with every local."""
    parts = ["".join(traceback.TracebackException.from_exception(error, capture_locals=True).format())]
    cause: BaseException | None = error
    while cause is not None:
        parts += [repr(cause), str(cause)] + [repr(v) for v in vars(cause).values()]
        cause = cause.__cause__ or cause.__context__
    return "\n".join(parts)


# -- which pool ----------------------------------------------------------------------------------------
def test_aiohttp_is_imported_by_the_first_async_call_only(gateway: OfflineGateway) -> None:
    code = (
        "import asyncio, sys, flotorch_nb\n"
        f"llm = flotorch_nb.FlotorchLLM('offline/assistant', 'k', {gateway.url!r})\n"
        "print('aiohttp' in sys.modules)\n"
        "llm.invoke([{'role': 'user', 'content': 'hi'}])\n"
        "print('aiohttp' in sys.modules)\n"
        "asyncio.run(llm.ainvoke([{'role': 'user', 'content': 'hi'}]))\n"
        "print('aiohttp' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]


@pytest.mark.anyio
async def test_live_async_calls_use_aiohttp_and_cassette_modes_httpx2(
    gateway: OfflineGateway, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    async with FlotorchLLM("offline/assistant", KEY, gateway.url) as llm:
        await llm.ainvoke(USER)
        (pool,) = llm._async_clients.values()
        assert isinstance(pool, AioPool)
    assert pool.is_closed
    monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path))
    async with FlotorchLLM("offline/assistant", KEY, gateway.url) as recording:
        await recording.ainvoke(USER)  # record mode wraps an httpx2 transport
        (pool,) = recording._async_clients.values()
        assert isinstance(pool, HttpxPool) and pool.owned


@pytest.mark.anyio
async def test_an_injected_async_client_serves_every_loop_and_is_not_closed(gateway: OfflineGateway) -> None:
    async with httpx2.AsyncClient() as http:
        llm = FlotorchLLM("offline/assistant", KEY, gateway.url, async_http_client=http)
        assert (await llm.ainvoke(USER)).content
        await llm.aclose()
        assert llm._async_clients == {} and not http.is_closed


# -- a broken server, whichever path meets it -------------------------------------------------------------
def _garbage(conn: socket.socket, request: bytes) -> bool:
    conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    return False


def _hang_up(conn: socket.socket, request: bytes) -> bool:
    return False  # closes without a word


def _short_body(conn: socket.socket, request: bytes) -> bool:
    conn.sendall(http_response(200, ANSWER, content_type="application/json")[:-20])
    return False


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("handler", "said"),
    [(_garbage, "could not reach"), (_hang_up, "could not reach"), (_short_body, "was cut off")],
    ids=["garbage", "hang-up", "short-body"],
)
async def test_a_broken_answer_is_a_retried_connection_error_without_the_key(
    sync: bool, handler: Handler, said: str
) -> None:
    with RawServer(handler) as server:
        llm = FlotorchLLM("m", KEY, server.url, retry=NO_WAIT)
        with pytest.raises(APIConnectionError, match=said) as caught:
            await invoke(llm, sync)
        await llm.aclose()
    assert not isinstance(caught.value, APITimeoutError)
    assert len(server.requests) == NO_WAIT.max_retries + 1
    assert KEY not in _everything(caught.value)
    assert "HTTP 400" not in str(caught.value)  # a parser's complaint is not the gateway's status


async def _call(llm: FlotorchLLM, sync: bool, kind: str) -> object:
    """``kind`` "stream": a stream request that the server answers with one JSON body."""
    return await (invoke(llm, sync) if kind == "invoke" else stream(llm, sync))


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("kind", ["invoke", "stream"])
async def test_an_answer_that_trickles_in_is_cut_at_the_timeout(sync: bool, kind: str) -> None:
    server_holder: list[RawServer] = []

    def trickle(conn: socket.socket, request: bytes) -> bool:
        whole = http_response(200, ANSWER, content_type="application/json")
        head, _, body = whole.partition(b"\r\n\r\n")
        conn.sendall(head + b"\r\n\r\n")
        for i in range(len(body)):  # a byte every 20 ms: several seconds in all, never silent for long
            if server_holder[0].stopped.wait(0.02):
                break
            conn.sendall(body[i : i + 1])
        return False

    with RawServer(trickle) as server:
        server_holder.append(server)
        llm = FlotorchLLM("m", KEY, server.url, timeout=0.5, retry=ONCE)
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"did not finish its answer within 0\.5 s"):
            await _call(llm, sync, kind)
        elapsed = time.monotonic() - started
        await llm.aclose()
    assert elapsed < 1.5


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("kind", ["invoke", "stream"])
async def test_a_head_and_then_silence_is_a_timeout(sync: bool, kind: str) -> None:
    server_holder: list[RawServer] = []

    def silent(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(http_response(200, ANSWER, content_type="application/json").partition(b"\r\n\r\n")[0])
        conn.sendall(b"\r\n\r\n")
        server_holder[0].stopped.wait(5)
        return False

    with RawServer(silent) as server:
        server_holder.append(server)
        llm = FlotorchLLM("m", KEY, server.url, timeout=0.4, retry=ONCE)
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"0\.4 s"):
            await _call(llm, sync, kind)
        elapsed = time.monotonic() - started
        await llm.aclose()
    assert elapsed < 1.5


# -- configuration the sync pool honours, the async one too ---------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_the_http_proxy_of_the_environment_is_used(sync: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    def proxy(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(http_response(200, ANSWER, content_type="application/json"))
        return True

    with RawServer(proxy) as server:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.setenv("http_proxy", server.url)
        llm = FlotorchLLM("m", KEY, "http://gateway.invalid", retry=ONCE)
        assert (await invoke(llm, sync)).content == "over the wire"
        await llm.aclose()
    (request,) = server.requests
    assert request.startswith(b"POST http://gateway.invalid/api/openai/v1/chat/completions HTTP/1.1")


def test_one_client_in_many_event_loops_at_once(gateway: OfflineGateway) -> None:
    """Threads each running their own loop share one client: each loop gets its own aiohttp pool."""
    import threading

    llm = FlotorchLLM("offline/echo", KEY, gateway.url)
    results: dict[int, str] = {}

    def run(i: int) -> None:
        async def main() -> str:
            return (await llm.ainvoke([{"role": "user", "content": f"loop {i}"}])).content

        results[i] = asyncio.run(main())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(f"loop {i}" in results[i] for i in range(4))
    assert all(pool.is_closed for pool in llm._async_clients.values())  # closed as each loop ended
    llm.close()


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_host_name_the_resolver_cannot_encode_is_a_connection_error(sync: bool) -> None:
    """``a..b`` passes URL parsing but makes getaddrinfo raise UnicodeError, which neither library
    maps: it must still end in our tree, like any failed DNS lookup."""
    llm = FlotorchLLM("m", KEY, "http://a..b", retry=ONCE)
    with pytest.raises(APIConnectionError, match="host name cannot be looked up"):
        await invoke(llm, sync)
    await llm.aclose()


DROPPED = """
import asyncio, gc, sys
from flotorch_nb import FlotorchLLM
URL = sys.argv[1]
USER = [{"role": "user", "content": "hi"}]

def hand_run_loops():  # closed by hand: no runner cancels our loop-end task
    llm = FlotorchLLM("offline/echo", "k", URL)
    for _ in range(2):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(llm.ainvoke(USER))
        loop.close()
    del llm, loop

async def dropped_in_a_running_loop():  # a notebook cell's client, never closed
    llm = FlotorchLLM("offline/echo", "k", URL)
    await llm.ainvoke(USER)
    del llm
    gc.collect()
    await asyncio.sleep(0.1)

hand_run_loops()
gc.collect()
asyncio.run(dropped_in_a_running_loop())
gc.collect()
print("ok")
"""


def test_pools_nobody_closed_do_not_make_aiohttp_complain(gateway: OfflineGateway) -> None:
    """A client dropped unclosed, or used on loops closed by hand, must not leave aiohttp to log
    "Unclosed client session" / "Unclosed connector" (into a notebook's output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    done = subprocess.run(
        [sys.executable, "-c", DROPPED, gateway.url], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr
    assert "Unclosed" not in done.stderr, done.stderr


# -- an answer cut short ---------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_cut_mid_answer_says_the_answer_was_cut_and_chains_no_library_error(
    gateway: OfflineGateway, sync: bool
) -> None:
    """Issue 13 finding 11: the gateway was reached and began answering, so neither path may say
    "could not reach" nor pass on the library's words ("Response payload is not completed:
    <TransferEncodingError ...>"), and nothing in the chain is httpx2's or aiohttp's (they hold the key)."""
    gateway.faults.add(Fault(cut_after=3))
    llm = FlotorchLLM("offline/echo", KEY, gateway.url, retry=ONCE)
    with pytest.raises(StreamError) as caught:
        await stream(llm, sync, [{"role": "user", "content": "Tell me a long story about the sea and ships"}])
    await llm.aclose()
    message = str(caught.value)
    assert re.fullmatch(
        r"the stream broke after \d+ characters of the answer: the answer from http://127\.0\.0\.1:\d+/\S+ "
        r"was cut off: the connection closed before the answer was complete \(\w+\)",
        message,
    ), message
    assert "could not reach" not in message
    assert "not completed" not in message and "TransferEncodingError" not in message  # aiohttp's words
    chain: list[BaseException] = []
    link: BaseException | None = caught.value
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    assert all(isinstance(error, FlotorchError) for error in chain), chain
    assert KEY not in _everything(caught.value)
