"""Tool calling end to end: the model asks for a tool, we run it, send the result back, get the answer."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from flotorch_nb.gateway import OfflineGateway
from tests.support.client import SYNC, SYNC_IDS, invoke, live_llm, stream

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
STOCKS = {
    "type": "function",
    "function": {
        "name": "get_stock_price",
        "description": "Latest price of a stock ticker",
        "parameters": {
            "type": "object",
            "properties": {"ticker": {"type": "string"}},
            "required": ["ticker"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris today?"}]


def _round_trip_messages(first: Any) -> list[dict[str, Any]]:
    call = first.tool_calls[0]
    result = {"city": call.args["city"], "temperature": 21, "sky": "sunny"}
    return [
        *QUESTION,
        first.assistant_message(),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_tool_call_round_trip(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url) as llm:
        first = await invoke(llm, sync, QUESTION, tools=[STOCKS, WEATHER])
        assert first.content == ""
        assert first.finish_reason == "tool_calls"
        assert len(first.tool_calls) == 1
        call = first.tool_calls[0]
        assert call.name == "get_weather"
        assert call.id
        jsonschema.validate(call.args, WEATHER["function"]["parameters"])
        assert first.metadata["totalTokens"] > 0
        message = first.assistant_message()
        assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": call.arguments}

        final = await invoke(llm, sync, _round_trip_messages(first), tools=[STOCKS, WEATHER])
    assert final.tool_calls == []
    assert final.finish_reason == "stop"
    assert "sunny" in final.content
    sent = gateway.requests[1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": sent[2]["content"]}
    assert gateway.requests[0]["body"]["tools"] == [STOCKS, WEATHER]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_streamed_tool_call_is_assembled(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url) as llm:
        whole = await invoke(llm, sync, QUESTION, tools=[WEATHER])
        deltas, streamed = await stream(llm, sync, QUESTION, tools=[WEATHER])
    assert "".join(deltas) == streamed.content == ""
    assert streamed.finish_reason == "tool_calls"
    assert [(c.name, c.args) for c in streamed.tool_calls] == [(c.name, c.args) for c in whole.tool_calls]
    assert streamed.metadata["totalTokens"] == whole.metadata["totalTokens"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_tool_choice_passes_through(gateway: OfflineGateway, sync: bool) -> None:
    choice = {"type": "function", "function": {"name": "get_stock_price"}}
    async with live_llm(gateway.url) as llm:
        response = await invoke(llm, sync, QUESTION, tools=[WEATHER, STOCKS], tool_choice=choice)
        none = await invoke(llm, sync, QUESTION, tools=[WEATHER, STOCKS], tool_choice="none")
    assert [c.name for c in response.tool_calls] == ["get_stock_price"]
    assert gateway.requests[0]["body"]["tool_choice"] == choice
    assert none.tool_calls == [] and none.content
