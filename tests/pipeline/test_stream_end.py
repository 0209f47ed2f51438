"""How a stream ends, over real loopback: ``data: [DONE]`` is the end of the answer whatever the
connection does next, and only the gateway's silence counts towards the stall timeout, never the time
the caller spends between deltas."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from flotorch_nb import APITimeoutError
from flotorch_nb.gateway import OfflineGateway
from tests.support.client import (
    ONCE,
    SYNC,
    SYNC_IDS,
    RawServer,
    chunk,
    chunked,
    live_llm,
    stream,
)

SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
USAGE = {
    "id": "c",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11},
}


def _event(data: Any) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


ANSWER = [_event(chunk("Hel")), _event(chunk("lo", finish_reason="stop")), _event(USAGE), _event("[DONE]")]


class AfterDone:
    """Sends the whole answer and ``[DONE]`` without the terminating chunk, then closes the connection
    or keeps it open (until the test ends)."""

    def __init__(self, then: str) -> None:
        self.then = then
        self.server: RawServer | None = None

    def __call__(self, conn: socket.socket, request: bytes) -> bool:
        conn.sendall(SSE_HEAD + chunked(*ANSWER, end=False))
        if self.then == "keep-open":
            assert self.server is not None
            self.server.stopped.wait(10)
        return False


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("then", ["close", "keep-open"])
async def test_done_ends_the_stream_whatever_the_connection_does_next(sync: bool, then: str) -> None:
    """A gateway that sent [DONE] has sent the answer: one that then drops the connection without the
    final chunk, or keeps it open, must not turn a complete answer into a StreamError or a timeout."""
    handler = AfterDone(then)
    with RawServer(handler) as server:
        handler.server = server
        async with live_llm(server.url, "m", timeout=3, retry=ONCE) as llm:
            started = time.monotonic()
            deltas, response = await stream(llm, sync)
            elapsed = time.monotonic() - started
            # The connection was let go: the next stream works, on a new connection.
            again, _ = await stream(llm, sync)
    assert deltas == again == ["Hel", "lo"]
    assert response.content == "Hello" and response.finish_reason == "stop"
    assert response.usage is not None and response.usage.total_tokens == 11
    assert elapsed < 1.5, f"waited {elapsed:.1f} s after [DONE]"
    assert server.connections == 2


@pytest.mark.anyio
async def test_a_complete_stream_gives_its_connection_back_to_the_async_pool() -> None:
    """[DONE] followed by the final chunk: the connection goes back to the pool and carries the next
    call (aiohttp releases it when the body has ended, and closes it otherwise)."""

    def answer(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(SSE_HEAD + chunked(*ANSWER))
        return True

    with RawServer(answer) as server:
        async with live_llm(server.url, "m", retry=ONCE) as llm:
            for _ in range(3):
                assert "".join((await stream(llm, False))[0]) == "Hello"
                await asyncio.sleep(0.05)  # the final chunk may come just after [DONE]
    assert len(server.requests) == 3 and server.connections == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_slow_reader_does_not_make_a_healthy_stream_time_out(
    gateway: OfflineGateway, sync: bool
) -> None:
    """The caller may take longer than ``timeout`` between deltas: the gateway was not silent, the
    deltas were waiting for the caller."""
    words = "one two three"
    prompt = [{"role": "user", "content": words}]
    fast = {"offline": {"token_delay": 0.01}}
    got: list[str] = []
    async with live_llm(gateway.url, "offline/echo", timeout=0.5, retry=ONCE) as llm:
        if sync:
            chat = llm.stream(prompt, extra_body=fast)
            for delta in chat:
                got.append(delta)
                time.sleep(0.6)
            response = chat.response
        else:
            achat = llm.astream(prompt, extra_body=fast)
            async for delta in achat:
                got.append(delta)
                await asyncio.sleep(0.6)
            response = achat.response
    assert len(got) > 1 and "".join(got) == response.content == words


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_keep_alive_comments_alone_still_time_out_over_loopback(sync: bool) -> None:
    """The other side of the rule: a gateway that sends one delta and then only ``: ping`` comments
    is silent as far as the answer goes, and times out after about ``timeout``."""
    holder: list[RawServer] = []

    def pinging(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(SSE_HEAD + chunked(_event(chunk("Hel")), end=False))
        for _ in range(100):  # 5 s at most
            if holder[0].stopped.wait(0.05):
                break
            conn.sendall(chunked(b": ping\n\n", end=False))
        return False

    with RawServer(pinging) as server:
        holder.append(server)
        async with live_llm(server.url, "m", timeout=0.5, retry=ONCE) as llm:
            started = time.monotonic()
            with pytest.raises(APITimeoutError, match=r"sent no stream data for 0\.5 s"):
                await stream(llm, sync)
    assert time.monotonic() - started < 2.5
