"""Failure modes a review found: keys that cannot travel in a header, answers that trickle in or stall
behind keep-alive bytes, interleaved n>1 streams, redirects, credentials in URLs, and a stream closed
from another thread. Each must end in a typed error, promptly, with no secret in it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from flotorch_nb import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    FlotorchLLM,
    RetryPolicy,
    StreamError,
)
from flotorch_nb.gateway import OfflineGateway
from tests.support.client import (
    KEY,
    SYNC,
    SYNC_IDS,
    chunk,
    completion,
    invoke,
    mock_llm,
    sse,
    sse_response,
    stream,
)

ONCE = RetryPolicy(max_retries=0)


class Trickle(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body that arrives a piece at a time, ``gap`` seconds apart (bounded: it always ends)."""

    def __init__(self, pieces: list[bytes], gap: float) -> None:
        self.pieces, self.gap = pieces, gap

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.pieces:
            time.sleep(self.gap)
            yield piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            await asyncio.sleep(self.gap)
            yield piece


def trickling(content_type: str, body: bytes, gap: float, step: int = 1) -> httpx2.Response:
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    return httpx2.Response(200, headers={"content-type": content_type}, stream=Trickle(pieces, gap))


# -- keys and retry policies that are wrong before anything is sent ---------------------------------
@pytest.mark.parametrize("bad", ["sk-abc\ndef-SECRET", "sk-abc def-SECRET", "sk-abc\u201cdef-SECRET"])
def test_a_key_that_cannot_be_a_header_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be sent in an HTTP header") as caught:
        FlotorchLLM("m", bad, "http://127.0.0.1:9")
    assert "SECRET" not in str(caught.value) and "def" not in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [{"max_retries": -1}, {"max_retries": 1.5}, {"max_retries": True}, {"base_delay": -1}, {"jitter": 2}],
)
def test_an_impossible_retry_policy_is_a_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)


# -- nothing takes much longer than its timeout ------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_body_that_trickles_in_is_cut_off_at_the_timeout(sync: bool) -> None:
    body = json.dumps(completion("x" * 200)).encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return trickling("application/json", body, gap=0.02, step=4)  # about 2 s in all

    async with mock_llm(handler, retry=ONCE, timeout=0.3) as llm:
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"did not finish its answer within 0\.3 s"):
            await invoke(llm, sync)
    assert time.monotonic() - started < 1.5


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_kept_alive_by_comments_only_times_out(sync: bool) -> None:
    first = sse(chunk("Hel"), done=False)

    def handler(request: httpx2.Request) -> httpx2.Response:
        pieces = [first] + [b": keep-alive\n\n"] * 200  # 4 s of bytes, no data; bounded, never hangs
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Trickle(pieces, 0.02)
        )

    async with mock_llm(handler, retry=ONCE, timeout=0.3) as llm:
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"sent no stream data for 0\.3 s"):
            await stream(llm, sync)
    assert time.monotonic() - started < 1.5


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_request_answered_with_slow_json_is_a_typed_timeout(sync: bool) -> None:
    body = json.dumps(completion("whole answer")).encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return trickling("application/json", body, gap=0.02, step=2)

    async with mock_llm(handler, retry=ONCE, timeout=0.3) as llm:
        with pytest.raises(APITimeoutError):
            await stream(llm, sync)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_request_answered_with_json_is_one_delta(sync: bool) -> None:
    async with mock_llm(lambda r: httpx2.Response(200, json=completion("whole answer"))) as llm:
        deltas, response = await stream(llm, sync)
    assert deltas == ["whole answer"] and response.usage is not None


# -- streams that carry more than one answer, or odd shapes --------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_n_greater_than_one_streams_only_choice_zero(sync: bool) -> None:
    def choice(index: int, text: str) -> dict[str, Any]:  # OpenAI sends each choice in its own chunk
        event = chunk(text)
        event["choices"][0]["index"] = index
        return event

    body = sse(choice(0, "Paris "), choice(1, "Lyon "), choice(0, "is the capital."), choice(1, "is not."))
    async with mock_llm(lambda r: sse_response(body)) as llm:
        deltas, response = await stream(llm, sync, n=2)
    assert "".join(deltas) == response.content == "Paris is the capital."


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_tool_calls_that_are_not_a_list_are_a_stream_error(sync: bool) -> None:
    body = sse(chunk(tool_calls=1))
    async with mock_llm(lambda r: sse_response(body)) as llm:
        with pytest.raises(StreamError, match="'tool_calls' that is not a list"):
            await stream(llm, sync)


# -- where the gateway points elsewhere, and what messages may show -------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_redirect_is_a_status_error_that_says_where(sync: bool) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(307, headers={"location": "https://new.example/api/openai/v1/chat"})

    async with mock_llm(handler, retry=ONCE) as llm:
        with pytest.raises(APIStatusError, match=r"redirects to https://new\.example") as caught:
            await invoke(llm, sync)
    assert caught.value.status_code == 307 and "2xx" not in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_credentials_in_the_base_url_are_never_shown(sync: bool) -> None:
    llm = FlotorchLLM("m", KEY, "http://alice:hunter2pw@127.0.0.1:9", retry=ONCE)
    assert "hunter2pw" not in repr(llm)
    with pytest.raises(APIConnectionError) as caught:
        await invoke(llm, sync)
    await llm.aclose()
    assert "hunter2pw" not in str(caught.value) and "127.0.0.1:9" in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_key_echoed_deep_in_an_error_body_is_scrubbed_from_it(sync: bool) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        echoed = request.headers["authorization"]
        return httpx2.Response(400, json={"error": {"message": "bad", "param": {"header": [echoed]}}})

    async with mock_llm(handler) as llm:
        with pytest.raises(APIStatusError) as caught:
            await invoke(llm, sync)
    assert KEY not in json.dumps(caught.value.body) and "***" in json.dumps(caught.value.body)


# -- a stream stopped from elsewhere ---------------------------------------------------------------
def test_closing_a_stream_from_another_thread_stops_its_reader(gateway: OfflineGateway) -> None:
    slow = {"offline": {"token_delay": 0.05}}
    prompt = [{"role": "user", "content": "Tell me a long story about the sea " * 5}]
    with FlotorchLLM("offline/echo", KEY, gateway.url, retry=ONCE) as llm:
        chat = llm.stream(prompt, extra_body=slow)
        seen: list[str] = []
        outcome: list[BaseException | None] = []

        def read() -> None:
            try:
                seen.extend(chat)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        chat.close()  # must not raise "generator already executing"
        reader.join(timeout=5)
    assert not reader.is_alive()
    assert seen and len("".join(seen)) < len(prompt[0]["content"])  # stopped before the end
    assert outcome and (outcome[0] is None or isinstance(outcome[0], StreamError))


def test_hand_run_loops_are_forgotten_quietly() -> None:
    """A loop closed by hand (no task cancellation) never runs the pool-closing helper: the registry
    must not keep it for ever, and closing it must not print "Task was destroyed but it is pending"."""
    from flotorch_nb._transport import _pools as pools_module

    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=completion()))
    hand_run = []
    for _ in range(3):
        loop = asyncio.new_event_loop()
        pool = httpx2.AsyncClient(transport=transport)
        pools_module.close_when_loop_ends(loop, pool)
        loop.run_until_complete(pool.aclose())  # runs the helper task up to its wait
        loop.close()  # by hand: the helper task stays pending
        hand_run.append(loop)
    last = asyncio.new_event_loop()
    try:
        pool = httpx2.AsyncClient(transport=transport)
        pools_module.close_when_loop_ends(last, pool)  # registering purges the closed loops
        assert not any(loop in pools_module._LOOP_POOLS for loop in hand_run)
        task, _ = pools_module._LOOP_POOLS[last]
        assert task._log_destroy_pending is False  # type: ignore[attr-defined]
        last.run_until_complete(asyncio.sleep(0))  # the helper starts waiting, as in a real run
        task.cancel()  # what asyncio.run does at its end: the helper closes the pool
        last.run_until_complete(asyncio.gather(task, return_exceptions=True))
        assert pool.is_closed and last not in pools_module._LOOP_POOLS
    finally:
        last.close()


def test_forget_closed_loops_drops_what_hand_closed_loops_left() -> None:
    """The notebook session's reset() forgets such loops at once instead of at the next new pool."""
    from flotorch_nb import llm as llm_module
    from flotorch_nb._transport import _pools as pools_module

    loop = asyncio.new_event_loop()
    pool = httpx2.AsyncClient(transport=httpx2.MockTransport(lambda r: httpx2.Response(200)))
    pools_module.close_when_loop_ends(loop, pool)
    loop.run_until_complete(pool.aclose())
    type(loop).close(loop)  # behind our back (a loop whose close() cannot be wrapped): no helper ran
    assert loop in pools_module._LOOP_POOLS
    llm_module.forget_closed_loops()
    assert loop not in pools_module._LOOP_POOLS
