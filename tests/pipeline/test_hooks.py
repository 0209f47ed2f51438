"""Client hooks: code before every request and after every finished call, for every way of calling.

The notebook session's budget and ledger, and batch rate limits, attach here; so every path must
run ``before_request`` once before any I/O and ``after_call`` exactly once, whatever the outcome.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel

from flotorch_nb import (
    AuthenticationError,
    BudgetExceededError,
    CallRequest,
    CallResult,
    FlotorchLLM,
    HookError,
    Hooks,
    StructuredOutputError,
    call_label,
)
from flotorch_nb.gateway import OfflineGateway
from tests.support.client import (
    ONCE,
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

KINDS = ["invoke", "stream"]


class Seen:
    """Both hooks, recording what they were given."""

    def __init__(self) -> None:
        self.before: list[CallRequest] = []
        self.after: list[CallResult] = []

    def attach(self, llm: FlotorchLLM) -> Seen:
        llm.hooks.before_request.append(self.before.append)
        llm.hooks.after_call.append(self.after.append)
        return self


async def _call(llm: FlotorchLLM, kind: str, sync: bool, messages: Any = USER, **kw: Any) -> Any:
    if kind == "invoke":
        return await invoke(llm, sync, messages, **kw)
    return (await stream(llm, sync, messages, **kw))[1]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_every_path_runs_each_hook_once_with_what_was_sent_and_received(
    gateway: OfflineGateway, sync: bool, kind: str
) -> None:
    async with live_llm(gateway.url) as llm:
        seen = Seen().attach(llm)
        with call_label("test-surface"):
            response = await _call(llm, kind, sync, max_tokens=50)
    (request,) = seen.before
    (result,) = seen.after
    assert request.model == "offline/assistant"
    assert request.stream is (kind == "stream")
    assert request.body["messages"] == USER
    assert request.label == "test-surface"
    # "Say hello.": "Say" 1, "hello" 2 (4 characters a token), "." 1; 4 for the message's framing;
    # plus the answer's cap.
    assert request.estimated_tokens == 4 + 4 + 50
    assert (request.prompt_tokens, request.output_tokens, request.capped) == (8, 50, True)
    assert result.request is request
    assert result.outcome == "ok" and result.error is None
    assert result.response is response
    assert response is not None and response.usage is not None
    assert result.usage == response.usage and result.usage_known
    assert result.total_tokens == response.usage.total_tokens > 0
    assert result.model == response.model == "offline/assistant"
    assert result.source == response.source == "offline"
    assert 0 < result.latency_s < 30


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_before_hook_refuses_the_call_before_any_io(sync: bool, kind: str) -> None:
    recorder = Recorder()
    after: list[CallResult] = []

    def budget(request: CallRequest) -> None:
        raise BudgetExceededError("spent")

    async with mock_llm(recorder) as llm:
        llm.hooks.before_request.append(budget)
        llm.hooks.after_call.append(after.append)
        with pytest.raises(BudgetExceededError, match="spent"):
            await _call(llm, kind, sync)
    assert recorder.requests == []
    assert after == []  # a refused call never started, so it has no result


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_broken_before_hook_is_a_clear_error_and_leaves_the_client_usable(
    sync: bool, kind: str
) -> None:
    recorder = Recorder()

    def broken(request: CallRequest) -> None:
        raise KeyError("oops")

    async with mock_llm(recorder) as llm:
        llm.hooks.before_request.append(broken)
        refused = r"before_request hook .*broken failed.*not sent.*KeyError"
        with pytest.raises(HookError, match=refused) as info:
            await _call(llm, kind, sync)
        assert isinstance(info.value.__cause__, KeyError)
        assert info.value.hook.endswith("broken")
        assert recorder.requests == []
        llm.hooks.before_request.remove(broken)
        assert (await _call(llm, kind, sync)).content


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_broken_after_hook_keeps_the_answer_and_every_other_hook_runs(sync: bool, kind: str) -> None:
    answer = (
        sse_response(sse(chunk("Hel"), chunk("lo!"), chunk(finish_reason="stop")))
        if kind == "stream"
        else httpx2.Response(200, json=completion("Hello!"))
    )
    ran: list[str] = []

    def broken(result: CallResult) -> None:
        raise RuntimeError("ledger full")

    async with mock_llm(Recorder(answer)) as llm:
        llm.hooks.after_call.extend([broken, lambda r: ran.append(r.outcome)])
        with pytest.raises(HookError, match=r"after_call hook .*broken failed.*ledger full") as info:
            await _call(llm, kind, sync)
        assert info.value.response is not None and info.value.response.content == "Hello!"
        assert ran == ["ok"]
        llm.hooks.after_call.remove(broken)
        assert (await _call(llm, kind, sync)).content == "Hello!"
        assert ran == ["ok", "ok"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_failed_call_is_reported_once_as_an_error_with_no_tokens(sync: bool, kind: str) -> None:
    denied = httpx2.Response(401, json={"error": {"message": "bad key"}})
    async with mock_llm(Recorder(denied), retry=ONCE) as llm:
        seen = Seen().attach(llm)
        with pytest.raises(AuthenticationError):
            await _call(llm, kind, sync)
    (result,) = seen.after
    assert result.outcome == "error"
    assert isinstance(result.error, AuthenticationError)
    assert result.response is None and not result.usage_known
    assert result.total_tokens == 0  # the gateway refused it: no model ran


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_structured_output_failure_still_reports_the_tokens_it_spent(sync: bool) -> None:
    class City(BaseModel):
        name: str
        population: int

    answer = httpx2.Response(200, json=completion('{"name": "Oslo"}'))
    async with mock_llm(Recorder(answer)) as llm:
        seen = Seen().attach(llm)
        with pytest.raises(StructuredOutputError):
            await invoke(llm, sync, response_format=City)
    (result,) = seen.after
    assert result.outcome == "error"
    assert result.response is not None and result.total_tokens == 9  # completion()'s usage


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_stopped_midway_is_reported_as_stopped_with_estimated_tokens(
    gateway: OfflineGateway, sync: bool
) -> None:
    prompt = [{"role": "user", "content": "Write three sentences about the sea and the wind."}]
    async with live_llm(gateway.url) as llm:
        seen = Seen().attach(llm)
        if sync:
            chat = llm.stream(prompt)
            first = next(iter(chat))
            chat.close()
        else:
            achat = llm.astream(prompt)
            first = await achat.__aiter__().__anext__()
            await achat.aclose()
    (result,) = seen.after
    assert result.outcome == "stopped"
    assert result.response is None and not result.usage_known
    assert result.partial_chars == len(first) > 0
    # The prompt's estimate plus what arrived: stopping a reply does not make it free.
    assert result.total_tokens == seen.before[0].prompt_tokens + -(-len(first) // 4)


@pytest.mark.anyio
async def test_a_cancelled_astream_task_is_reported_as_stopped(gateway: OfflineGateway) -> None:
    results: list[CallResult] = []
    started = asyncio.Event()
    async with live_llm(gateway.url) as llm:
        llm.hooks.after_call.append(results.append)

        async def read() -> None:
            async with llm.astream([{"role": "user", "content": "List ten facts about the ocean."}]) as chat:
                async for _ in chat:
                    started.set()
                    await asyncio.sleep(0.05)

        task = asyncio.create_task(read())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r.outcome for r in results] == ["stopped"]
    assert isinstance(results[0].error, GeneratorExit | asyncio.CancelledError)


def test_with_model_starts_with_the_parent_hooks_in_lists_of_its_own(gateway: OfflineGateway) -> None:
    seen = Seen()
    parent = FlotorchLLM("offline/assistant", "k", gateway.url, hooks=Hooks([seen.before.append]))
    child = parent.with_model("offline/echo")
    assert child.hooks.before_request == parent.hooks.before_request
    child.hooks.after_call.append(seen.after.append)
    assert parent.hooks.after_call == []
    child.invoke(USER)
    assert [r.model for r in seen.before] == ["offline/echo"]
    assert [r.model for r in seen.after] == ["offline/echo"]
    parent.close()
    child.close()
