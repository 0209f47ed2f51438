"""A real pydantic-ai ``Agent`` on ``FlotorchModel``: every model request rides our client (hooks see it,
the gateway receives it), tool calls and structured output round-trip, usage is reported, and a gateway
failure stays our typed error. ``offline/scripted`` answers from the user prompt, which pydantic-ai sends
as the last user message (its instructions go in a system message, which the script ignores)."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from flotorch_nb import FlotorchLLM, Hooks, InvalidRequestError, RateLimitError, RetryPolicy
from flotorch_nb._pipeline._hooks import CallResult
from flotorch_nb.gateway import OfflineGateway

pydantic_ai = pytest.importorskip("pydantic_ai")
from pydantic_ai import Agent  # noqa: E402

from flotorch_nb.pydantic_ai import FlotorchModel  # noqa: E402


class City(BaseModel):
    name: str
    population: int


@pytest.fixture(autouse=True)
def _close_the_run_sync_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """``Agent.run_sync`` creates an event loop, sets it on this thread and never closes it; close it
    after the test (and after ``llm`` closed its pool there) so a later test's garbage collection does
    not see a leaked loop. Async tests run on anyio's loop, which is left alone."""
    yield
    if request.node.get_closest_marker("anyio") is not None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = asyncio.get_event_loop()
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def seen() -> list[CallResult]:
    return []


@pytest.fixture
def llm(gateway: OfflineGateway, seen: list[CallResult]) -> Iterator[FlotorchLLM]:
    with FlotorchLLM(
        "offline/scripted",
        "test-key-pai",
        gateway.url,
        hooks=Hooks(after_call=[seen.append]),
        retry=RetryPolicy(max_retries=0),
    ) as client:
        yield client


def _script(script: dict[str, Any]) -> str:
    return json.dumps({"script": script})


def test_a_plain_answer_with_its_usage(
    llm: FlotorchLLM, seen: list[CallResult], gateway: OfflineGateway
) -> None:
    start = len(gateway.requests)
    agent = Agent(FlotorchModel(llm), instructions="Answer briefly.")
    result = agent.run_sync(
        _script({"content": "Hello", "usage": {"prompt_tokens": 11, "completion_tokens": 3}})
    )
    assert result.output == "Hello"
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.requests) == (11, 3, 1)
    assert len(seen) == 1 and seen[0].response is not None and seen[0].response.content == "Hello"
    sent = gateway.requests[start].body["messages"]
    assert sent[0] == {"role": "system", "content": "Answer briefly."}  # instructions reach the gateway
    assert result.response.model_name == "offline/scripted"


def test_an_agent_tool_is_called_and_its_result_used(
    llm: FlotorchLLM, seen: list[CallResult], gateway: OfflineGateway
) -> None:
    calls: list[tuple[int, int]] = []
    agent = Agent(FlotorchModel(llm))

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    start = len(gateway.requests)
    call = {"name": "add", "arguments": {"a": 2, "b": 3}, "id": "call_1"}
    turns = [
        {"tool_calls": [call], "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
        {"content": "2 + 3 = 5", "usage": {"prompt_tokens": 20, "completion_tokens": 4}},
    ]
    result = agent.run_sync(_script({"turns": turns}))
    assert result.output == "2 + 3 = 5" and calls == [(2, 3)]
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.requests, usage.tool_calls) == (30, 9, 2, 1)
    assert len(seen) == 2  # every model request seen once by the client's hooks
    first, second = (gateway.requests[i].body for i in (start, start + 1))
    assert first["tools"][0]["function"]["name"] == "add"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
    assert second["messages"][-2]["tool_calls"][0]["function"] == {
        "name": "add",
        "arguments": '{"a":2,"b":3}',
    }


def test_structured_output_through_the_output_tool(llm: FlotorchLLM, gateway: OfflineGateway) -> None:
    agent = Agent(FlotorchModel(llm), output_type=City)
    start = len(gateway.requests)
    call = {"name": "final_result", "arguments": {"name": "Paris", "population": 2100000}, "id": "call_9"}
    result = agent.run_sync(_script({"tool_calls": [call]}))
    assert result.output == City(name="Paris", population=2100000)
    assert gateway.requests[start].body["tool_choice"] == "required"  # text is no valid answer here


def test_an_invalid_tool_argument_goes_back_to_the_model(llm: FlotorchLLM, gateway: OfflineGateway) -> None:
    agent = Agent(FlotorchModel(llm), output_type=City)
    start = len(gateway.requests)
    bad = {"name": "final_result", "arguments": {"name": "Paris", "population": "many"}, "id": "call_1"}
    good = {"name": "final_result", "arguments": {"name": "Paris", "population": 2}, "id": "call_2"}
    result = agent.run_sync(_script({"turns": [{"tool_calls": [bad]}, {"tool_calls": [good]}]}))
    assert result.output == City(name="Paris", population=2)
    retry = gateway.requests[start + 1].body["messages"][-1]
    assert retry["role"] == "tool" and retry["tool_call_id"] == "call_1" and "population" in retry["content"]


def test_a_gateway_error_is_our_typed_error(llm: FlotorchLLM, seen: list[CallResult]) -> None:
    agent = Agent(FlotorchModel(llm))
    with pytest.raises(RateLimitError, match="slow down"):
        agent.run_sync(_script({"error": {"status": 429, "message": "slow down"}}))
    assert len(seen) == 1 and seen[0].error is not None


@pytest.mark.anyio
async def test_async_run_rides_the_same_client(llm: FlotorchLLM, seen: list[CallResult]) -> None:
    result = await Agent(FlotorchModel(llm)).run(_script({"content": "async hello"}))
    assert result.output == "async hello" and len(seen) == 1


@pytest.mark.anyio
async def test_a_streamed_run_rides_astream(
    llm: FlotorchLLM, seen: list[CallResult], gateway: OfflineGateway
) -> None:
    agent = Agent(FlotorchModel(llm))

    @agent.tool_plain
    def shout(word: str) -> str:
        """Say it louder."""
        return word.upper()

    start = len(gateway.requests)
    turns = [
        {"tool_calls": [{"name": "shout", "arguments": {"word": "hi"}, "id": "call_1"}]},
        {"chunks": ["You said ", "HI"], "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
    ]
    async with agent.run_stream(_script({"turns": turns})) as run:
        deltas = [delta async for delta in run.stream_text(delta=True, debounce_by=None)]
    assert "".join(deltas) == "You said HI" and len(deltas) == 2  # text arrives as it is streamed
    assert all(gateway.requests[i].body["stream"] for i in (start, start + 1))
    assert gateway.requests[start + 1].body["messages"][-1]["content"] == "HI"
    assert run.usage.output_tokens >= 2 and len(seen) == 2


def test_a_prompt_we_cannot_send_is_refused_before_any_io(
    llm: FlotorchLLM, seen: list[CallResult], gateway: OfflineGateway
) -> None:
    from pydantic_ai import ImageUrl

    start = len(gateway.requests)
    with pytest.raises(InvalidRequestError, match="text user prompts only"):
        Agent(FlotorchModel(llm)).run_sync(["Describe:", ImageUrl(url="https://example.invalid/cat.png")])
    assert len(gateway.requests) == start and seen == []
