"""Streaming: deltas as they arrive, a complete final ``LLMResponse``, and never a silently short answer."""

from __future__ import annotations

import time

import httpx2
import pytest

from flotorch_nb import FlotorchLLM, StreamError, ToolCall
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import (
    KEY,
    SYNC,
    SYNC_IDS,
    USER,
    Recorder,
    chunk,
    completion,
    invoke,
    live_llm,
    mock_llm,
    sse,
    sse_response,
    stream,
)

LONG_PROMPT = [{"role": "user", "content": "Write three sentences about the sea and the wind."}]
USAGE_CHUNK = {
    "id": "chatcmpl-test",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11},
}


# -- over loopback, against the offline gateway ------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_stream_yields_deltas_that_add_up_to_the_invoke_answer(
    gateway: OfflineGateway, sync: bool
) -> None:
    async with live_llm(gateway.url) as llm:
        deltas, response = await stream(llm, sync, LONG_PROMPT, temperature=0)
        whole = await invoke(llm, sync, LONG_PROMPT, temperature=0)
    assert len(deltas) > 1
    assert all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas) == response.content == whole.content
    assert response.metadata["usageKnown"] is True
    assert response.metadata["totalTokens"] == whole.metadata["totalTokens"] > 0
    assert response.metadata["outputTokens"] > 0
    assert response.finish_reason == "stop"
    assert response.offline is True
    streamed, invoked = gateway.requests[0], gateway.requests[1]
    assert streamed["body"]["stream"] is True
    assert streamed["body"]["stream_options"] == {"include_usage": True}
    assert "stream" not in invoked["body"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault(end_without_done=3), "without \\[DONE\\]"),
        (Fault(cut_after=3), "broke"),
        (Fault(malformed_after=2), "not JSON"),
        (Fault(inband_error="the model crashed"), "the model crashed"),
    ],
    ids=["no-done", "cut", "malformed", "inband-error"],
)
async def test_a_damaged_gateway_stream_raises_stream_error(
    gateway: OfflineGateway, sync: bool, fault: Fault, words: str
) -> None:
    gateway.faults.add(fault)
    seen: list[str] = []
    async with live_llm(gateway.url) as llm:
        with pytest.raises(StreamError, match=words):
            if sync:
                for delta in llm.stream(LONG_PROMPT):
                    seen.append(delta)
            else:
                async for delta in llm.astream(LONG_PROMPT):
                    seen.append(delta)
        # The client stays usable after a broken stream.
        deltas, response = await stream(llm, sync, LONG_PROMPT)
    assert "".join(deltas) == response.content
    assert len(gateway.requests) == 2


# -- pure edge cases on MockTransport ----------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_stream_assembles_text_tool_calls_and_usage(sync: bool) -> None:
    body = sse(
        chunk(role="assistant"),
        chunk("Hel"),
        chunk("lo"),
        chunk(tool_calls=[{"index": 0, "id": "call_9", "function": {"name": "get_", "arguments": '{"ci'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"name": "weather", "arguments": 'ty": "Oslo"}'}}]),
        chunk(finish_reason="tool_calls"),
        USAGE_CHUNK,
    )
    headers = {"x-request-id": "req-s1"}
    handler = Recorder(sse_response(body, 200, **headers))
    async with mock_llm(handler) as llm:
        deltas, response = await stream(llm, sync)
    assert deltas == ["Hel", "lo"]
    assert response.content == "Hello"
    assert response.tool_calls == [ToolCall("call_9", "get_weather", '{"city": "Oslo"}')]
    assert response.tool_calls[0].args == {"city": "Oslo"}
    assert response.finish_reason == "tool_calls"
    assert (response.metadata["inputTokens"], response.metadata["totalTokens"]) == (8, 11)
    assert response.request_id == "req-s1"
    assert response.id == "chatcmpl-test"
    sent = handler.bodies[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("body", "words"),
    [
        (sse(chunk("Hel"), chunk("lo"), done=False), "without \\[DONE\\]"),
        (b"", "without \\[DONE\\]"),
        (sse(chunk("Hel"), "{not json", chunk("lo")), "not JSON"),
        (sse(chunk("Hel"), {"error": {"message": "rate limited upstream"}}), "rate limited upstream"),
    ],
    ids=["no-done", "empty", "malformed", "inband-error"],
)
async def test_a_damaged_mock_stream_raises_stream_error(sync: bool, body: bytes, words: str) -> None:
    async with mock_llm(Recorder(sse_response(body))) as llm:
        with pytest.raises(StreamError, match=words):
            await stream(llm, sync)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_json_answer_to_a_stream_request_still_works(sync: bool) -> None:
    handler = Recorder(httpx2.Response(200, json=completion("Whole answer at once")))
    async with mock_llm(handler) as llm:
        deltas, response = await stream(llm, sync)
    assert deltas == ["Whole answer at once"]
    assert response.content == "Whole answer at once"
    assert response.metadata["totalTokens"] == 9


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_request_refused_with_a_status_raises_before_any_delta(sync: bool) -> None:
    from flotorch_nb import AuthenticationError

    handler = Recorder(httpx2.Response(401, json={"error": {"message": "bad key"}}))
    async with mock_llm(handler) as llm:
        with pytest.raises(AuthenticationError, match="bad key"):
            await stream(llm, sync)
    assert len(handler.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_the_response_is_there_only_after_the_end(sync: bool) -> None:
    handler = Recorder(sse_response(sse(chunk("a"), chunk("b"), chunk("c"))))
    async with mock_llm(handler) as llm:
        if sync:
            chat = llm.stream(USER)
            assert chat.response.content == "abc"  # reading it drains the stream
            assert list(chat) == []  # a finished stream yields nothing more
        else:
            achat = llm.astream(USER)
            with pytest.raises(StreamError, match="not finished"):
                _ = achat.response
            assert (await achat.get_response()).content == "abc"
            assert [d async for d in achat] == []
    assert len(handler.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_deltas_arrive_before_the_stream_ends(gateway: OfflineGateway, sync: bool) -> None:
    """Text is yielded as it arrives, not buffered: with a slow gateway, the first delta comes
    long before the last."""
    slow = {"offline": {"token_delay": 0.01}}
    async with live_llm(gateway.url) as llm:
        stamps: list[float] = []
        started = time.perf_counter()
        if sync:
            for _ in llm.stream(LONG_PROMPT, extra_body=slow):
                stamps.append(time.perf_counter() - started)
        else:
            async for _ in llm.astream(LONG_PROMPT, extra_body=slow):
                stamps.append(time.perf_counter() - started)
    assert len(stamps) > 5
    assert stamps[-1] - stamps[0] > 0.05


def test_early_break_and_close_release_the_connection(gateway: OfflineGateway) -> None:
    """With a pool of one connection, a second call only works if the first stream gave it back."""
    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    with (
        httpx2.Client(limits=limits) as http,
        FlotorchLLM("offline/assistant", KEY, gateway.url, http_client=http, max_retries=0) as llm,
    ):
        with llm.stream(LONG_PROMPT) as chat:
            for _ in chat:
                break
        again = llm.invoke(USER, timeout=2)
        assert again.content
        chat2 = llm.stream(LONG_PROMPT)
        for _ in chat2:
            break
        chat2.close()
        assert llm.invoke(USER, timeout=2).content


@pytest.mark.anyio
async def test_async_early_break_and_aclose_release_the_connection(gateway: OfflineGateway) -> None:
    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    async with (
        httpx2.AsyncClient(limits=limits) as http,
        FlotorchLLM("offline/assistant", KEY, gateway.url, async_http_client=http, max_retries=0) as llm,
    ):
        async with llm.astream(LONG_PROMPT) as chat:
            async for _ in chat:
                break
        assert (await llm.ainvoke(USER, timeout=2)).content


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_the_response_after_a_break_resumes_the_same_stream(sync: bool) -> None:
    """Reading the answer after stopping early must not send the request again (twice the tokens)
    nor glue a second answer onto the first."""
    handler = Recorder(sse_response(sse(chunk("a"), chunk("b"), chunk("c"), USAGE_CHUNK)))
    async with mock_llm(handler) as llm:
        if sync:
            chat = llm.stream(USER)
            first = next(iter(chat))
            assert list(chat) == ["b", "c"]
            response = chat.response
        else:
            achat = llm.astream(USER)
            first = await achat.__aiter__().__anext__()
            response = await achat.get_response()
    assert first == "a"
    assert response.content == "abc"
    assert response.metadata["totalTokens"] == 11
    assert len(handler.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_failed_or_closed_stream_has_no_response_and_is_not_resent(sync: bool) -> None:
    handler = Recorder(sse_response(sse(chunk("a"), "{oops")), sse_response(sse(chunk("a"))))
    async with mock_llm(handler) as llm:
        if sync:
            chat = llm.stream(USER)
            with pytest.raises(StreamError):
                list(chat)
            with pytest.raises(StreamError):
                _ = chat.response
            unstarted = llm.stream(USER)
            unstarted.close()
            assert list(unstarted) == []
            with pytest.raises(StreamError):
                _ = unstarted.response
        else:
            achat = llm.astream(USER)
            with pytest.raises(StreamError):
                [d async for d in achat]
            with pytest.raises(StreamError):
                await achat.get_response()
            aunstarted = llm.astream(USER)
            await aunstarted.aclose()
            assert [d async for d in aunstarted] == []
            with pytest.raises(StreamError):
                await aunstarted.get_response()
    assert len(handler.requests) == 1


@pytest.mark.anyio
async def test_cancelling_the_task_that_iterates_stops_the_stream_and_frees_the_connection(
    gateway: OfflineGateway,
) -> None:
    """The chat panel's Stop: cancelling the reading task closes the HTTP stream at once."""
    import anyio

    limits = httpx2.Limits(max_connections=1, max_keepalive_connections=1)
    seen: list[str] = []
    async with (
        httpx2.AsyncClient(limits=limits) as http,
        FlotorchLLM("offline/assistant", KEY, gateway.url, async_http_client=http, max_retries=0) as llm,
    ):
        chat = llm.astream(LONG_PROMPT, extra_body={"offline": {"token_delay": 0.05}})

        async def read() -> None:
            async with chat:
                async for delta in chat:
                    seen.append(delta)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            while len(seen) < 3:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert time.perf_counter() - started < 1.5
        with pytest.raises(StreamError):
            _ = chat.response
        assert (await llm.ainvoke(USER, timeout=2)).content  # the only connection is free again
    assert 3 <= len(seen) < 20


def test_empty_keepalive_events_are_ignored_not_errors() -> None:
    from flotorch_nb._response import ResponseInfo
    from flotorch_nb._sse import StreamAccumulator

    acc = StreamAccumulator()
    chunk = '{"choices": [{"index": 0, "delta": {"content": "hi"}}]}'
    assert [acc.feed(d) for d in ("", chunk, "  ", "[DONE]")] == ["", "hi", "", ""]
    assert acc.finish(ResponseInfo(latency_s=0.0)).content == "hi"
    with pytest.raises(StreamError, match="not JSON"):
        StreamAccumulator().feed("{oops")
