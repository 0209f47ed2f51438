"""offline/assistant calls the tools a prompt asks for, several in one turn, then answers from the results.

Assertions pin the protocol (which tools, how many calls, their arguments against the schema, the
stream's deltas, the finish reason, where a result shows up), never the assistant's wording.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import jsonschema
import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.gateway import OFFLINE_MODELS, OfflineGateway, _tool_calls
from flotorch_nb.gateway._models import plan_completion
from flotorch_nb.gateway._validate import parse_request

CHAT = "/api/openai/v1/chat/completions"


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


WEATHER = _tool(
    "get_weather",
    "Get the current weather in a city.",
    {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    ["city", "unit"],
)
STOCK = _tool("get_stock_price", "Latest price of a stock ticker", {"ticker": {"type": "string"}}, ["ticker"])
ADD = _tool(
    "add_numbers", "Add two numbers together", {"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]
)
FIND_USER = _tool("find_user", "Find a user's id by name", {"name": {"type": "string"}}, ["name"])
ORDERS = _tool("list_orders", "List the orders of a user id", {"user_id": {"type": "integer"}}, ["user_id"])
TOOLS = [WEATHER, STOCK, ADD, FIND_USER, ORDERS]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture
def client(gateway: OfflineGateway) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gateway.url, headers={"Authorization": "Bearer k-tools"}, timeout=10) as c:
        yield c


def _ask(client: httpx2.Client, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body = {"model": "offline/assistant", "messages": messages, "tools": TOOLS, **extra}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    choice: dict[str, Any] = response.json()["choices"][0]
    return choice


def _calls(choice: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The turn's calls as (name, arguments), each checked against its tool's schema."""
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert len({c["id"] for c in calls}) == len(calls), "each call has its own id"
    out = []
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        args = json.loads(call["function"]["arguments"])
        jsonschema.validate(args, SCHEMAS[call["function"]["name"]])
        out.append((call["function"]["name"], args))
    return out


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("What's the weather in Paris and in Rome?", [("get_weather", "Paris"), ("get_weather", "Rome")]),
        (
            "Compare the weather in Oslo, Lima and Cairo",
            [("get_weather", c) for c in ("Oslo", "Lima", "Cairo")],
        ),
        (
            "What is the weather in Oslo and the stock price of 'ACME'?",
            [("get_weather", "Oslo"), ("get_stock_price", "ACME")],
        ),
    ],
)
def test_one_turn_calls_every_tool_the_prompt_asks_for(
    client: httpx2.Client, prompt: str, expected: list[tuple[str, str]]
) -> None:
    calls = _calls(_ask(client, _user(prompt)))
    assert [(name, args.get("city", args.get("ticker"))) for name, args in calls] == expected


def test_values_and_enums_come_from_the_prompt(client: httpx2.Client) -> None:
    calls = _calls(_ask(client, _user("Compare the weather in Paris and Rome in fahrenheit")))
    assert [args for _, args in calls] == [
        {"city": "Paris", "unit": "fahrenheit"},
        {"city": "Rome", "unit": "fahrenheit"},
    ]
    (add,) = _calls(_ask(client, _user("Please add 2.5 and 40")))  # "and" between numbers: one call
    assert add == ("add_numbers", {"a": 2.5, "b": 40})


def test_parallel_tool_calls_false_makes_one_call(client: httpx2.Client) -> None:
    calls = _calls(_ask(client, _user("What's the weather in Paris and in Rome?"), parallel_tool_calls=False))
    assert calls == [("get_weather", {"city": "Paris", "unit": "celsius"})]


def test_a_prompt_that_asks_for_no_tool_is_answered_in_text(client: httpx2.Client) -> None:
    choice = _ask(client, _user("Tell me a joke"))
    assert choice["finish_reason"] == "stop" and choice["message"]["content"]
    assert "tool_calls" not in choice["message"]
    # A value the tool takes (a city) is enough for a real model to reach for it, and for this one.
    (call,) = _calls(_ask(client, _user("Should I take a coat in Oslo today?")))
    assert call == ("get_weather", {"city": "Oslo", "unit": "celsius"})


_PLAN_SCRIPT = (
    "import dataclasses, json, sys\n"
    "from flotorch_nb.gateway import OFFLINE_MODELS\n"
    "from flotorch_nb.gateway._models import plan_completion\n"
    "from flotorch_nb.gateway._validate import parse_request\n"
    "plan = plan_completion(parse_request(json.load(sys.stdin), OFFLINE_MODELS))\n"
    "print(json.dumps(dataclasses.asdict(plan)))\n"
)


def planned_here_and_elsewhere(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan of ``body`` in this process and in a new interpreter with other string hashes (set orders).

    Over HTTP a repeated request is answered from the gateway's plan cache, so asking twice there cannot
    tell a deterministic model from one that answers differently on each run, as a replay would see it.
    """
    here = dataclasses.asdict(plan_completion(parse_request(body, OFFLINE_MODELS)))
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "2" else "2"
    run = subprocess.run(
        [sys.executable, "-c", _PLAN_SCRIPT],
        input=json.dumps(body),
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(json.dumps(here)), json.loads(run.stdout)]


def test_the_same_request_makes_the_same_calls(client: httpx2.Client) -> None:
    prompt = _user("What is the weather in Oslo and the stock price of 'ACME'?")
    first, second = _ask(client, prompt), _ask(client, prompt)
    assert first["message"]["tool_calls"] == second["message"]["tool_calls"]
    body = {"model": "offline/assistant", "messages": prompt, "tools": TOOLS}
    one, other = planned_here_and_elsewhere(body)
    assert one == other and [c["name"] for c in one["tool_calls"]] == ["get_weather", "get_stock_price"]
    assert [c["id"] for c in one["tool_calls"]] == [c["id"] for c in first["message"]["tool_calls"]]


def test_a_streamed_turn_sends_each_call_as_openai_does(client: httpx2.Client) -> None:
    prompt = _user("What is the weather in Oslo and the stock price of 'ACME'?")
    whole = _ask(client, prompt)["message"]["tool_calls"]
    assert len(whole) == 2
    body = {"model": "offline/assistant", "messages": prompt, "tools": TOOLS, "stream": True}
    text = client.post(CHAT, json=body).text
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"]]
    parts = [part for delta in deltas if delta for part in delta]
    # Each call opens once (index, id, type, name, empty arguments), then argument fragments by index.
    openings = [p for p in parts if "id" in p]
    assert [(p["index"], p["id"], p["type"], p["function"]) for p in openings] == [
        (i, call["id"], "function", {"name": call["function"]["name"], "arguments": ""})
        for i, call in enumerate(whole)
    ]
    for index, call in enumerate(whole):
        fragments = [p["function"]["arguments"] for p in parts if p["index"] == index and "id" not in p]
        assert len(fragments) > 1 and "".join(fragments) == call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert text.rstrip().endswith("data: [DONE]")


def _round(messages: list[dict[str, Any]], choice: dict[str, Any], results: dict[str, Any]) -> None:
    messages.append(choice["message"])
    for call in choice["message"]["tool_calls"]:
        content = json.dumps(results[call["function"]["name"]])
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})


def test_with_the_results_in_it_answers_in_text_quoting_each(client: httpx2.Client) -> None:
    messages = _user("What's the weather in Paris and in Rome?")
    first = _ask(client, messages)
    _round(messages, first, {"get_weather": {"temperature": 21, "sky": "sunny"}})
    final = _ask(client, messages)
    assert final["finish_reason"] == "stop" and "tool_calls" not in final["message"]
    assert final["message"]["content"].count('{"temperature": 21, "sky": "sunny"}') == 2


def test_then_orders_the_calls_over_turns_with_values_from_earlier_results(client: httpx2.Client) -> None:
    messages = _user("Find the user Ada Lovelace, then list her orders")
    first = _ask(client, messages)
    assert _calls(first) == [("find_user", {"name": "Ada Lovelace"})]
    _round(messages, first, {"find_user": {"user_id": 42}})
    second = _ask(client, messages)
    assert _calls(second) == [("list_orders", {"user_id": 42})]
    _round(messages, second, {"list_orders": {"orders": ["book", "pen"]}})
    final = _ask(client, messages)["message"]["content"]
    assert '{"user_id": 42}' in final and '{"orders": ["book", "pen"]}' in final


def get_weather(city: str, unit: str = "celsius") -> dict[str, Any]:
    """Get the current weather in a city.

    Args:
        city: The city.
        unit: celsius or fahrenheit.
    """
    return {"city": city, "temperature": len(city) * 3, "unit": unit}


def test_llm_run_drives_a_whole_loop_on_the_offline_assistant(gateway: OfflineGateway) -> None:
    with FlotorchLLM("offline/assistant", "k-tools", gateway.url) as llm:
        run = llm.run(_user("What's the weather in Paris and in Rome?"), tools=[get_weather])
    first, last = run.steps
    assert [(c.name, json.loads(c.arguments)["city"], c.result) for c in first.calls] == [
        ("get_weather", "Paris", get_weather("Paris")),
        ("get_weather", "Rome", get_weather("Rome")),
    ]
    assert last.calls == [] and last.response.finish_reason == "stop"
    assert all(json.dumps(call.result) in run.content for call in first.calls)


def _long_document_request() -> Any:
    rows = "\n".join(f"row {i}, value {i * 7}, note and more" for i in range(8000))
    return parse_request(
        {"model": "offline/assistant", "messages": _user("Get the weather for: " + rows), "tools": TOOLS},
        OFFLINE_MODELS,
    )


def test_a_long_document_with_tools_is_read_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each part of a prompt was once compared with the whole text of its call so far (quadratic: minutes
    for this CSV). Counted, not timed: the prompt text read for words and facts stays a few times its
    length (a quadratic reading is thousands of times it)."""
    read: list[int] = []

    def counted(original: Callable[[str], Any]) -> Callable[[str], Any]:
        def reading(text: str) -> Any:
            read.append(len(text))
            return original(text)

        return reading

    for name in ("hints_from", "_said"):
        monkeypatch.setattr(_tool_calls, name, counted(getattr(_tool_calls, name)))
    request = _long_document_request()
    (call,) = _calls({"finish_reason": "tool_calls", "message": _message(plan_completion(request))})
    assert call[0] == "get_weather" and sum(read) < 4 * len(request.messages[0].text)


def test_a_long_document_is_cut_only_as_far_as_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first parts of a prompt are read one by one; the rest is one document. It was cut in full
    first (24,000 cuts for this CSV, 64 of them used), and its rest glued back with spaces, which ran
    its names together ("Oslo, Bergen" read as one name "Oslo Bergen")."""
    cuts = 0
    parts = _tool_calls._PARTS

    class Counted:
        def finditer(self, text: str) -> Iterator[re.Match[str]]:
            nonlocal cuts
            for match in parts.finditer(text):
                cuts += 1
                yield match

    monkeypatch.setattr(_tool_calls, "_PARTS", Counted())
    prompt = "weather in Paris, " + ", ".join(f"row {i}" for i in range(100)) + ", Oslo, Bergen"
    (ask,) = _tool_calls.planned_calls(
        [
            parse_request(
                {"model": "offline/assistant", "messages": _user("x"), "tools": [WEATHER]}, OFFLINE_MODELS
            ).tools[0]
        ],
        prompt,
        "auto",
    )
    assert cuts <= _tool_calls._MAX_PARTS + 1
    assert {"Oslo", "Bergen"} <= set(ask.hints.proper) and "Oslo Bergen" not in ask.hints.proper


def test_the_rest_after_the_most_calls_is_kept_as_written() -> None:
    """Past MAX_CALLS calls the rest of a prompt is context, kept as written: it was glued back with
    spaces, which ran its names together ("Oslo, Bergen" read as one name "Oslo Bergen")."""
    (tool,) = parse_request(
        {"model": "offline/assistant", "messages": _user("x"), "tools": [WEATHER]}, OFFLINE_MODELS
    ).tools
    prompt = ", ".join(f"weather in City{i}" for i in range(_tool_calls.MAX_CALLS + 2)) + ", Oslo, Bergen"
    proper = {name for ask in _tool_calls.planned_calls([tool], prompt, "auto") for name in ask.hints.proper}
    assert {"Oslo", "Bergen"} <= proper and "Oslo Bergen" not in proper


def _message(plan: Any) -> dict[str, Any]:
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in plan.tool_calls
    ]
    return {"content": plan.content, "tool_calls": calls}


def test_each_then_step_takes_the_enum_value_its_own_step_names(client: httpx2.Client) -> None:
    """An enum option was read from the whole prompt, so the first option named anywhere (in the
    enum's order) filled every step: "cool, then heat" set "heat" twice."""
    mode = {"type": "string", "enum": ["heat", "cool"]}
    thermostat = _tool("set_thermostat", "Set the thermostat mode", {"mode": mode}, ["mode"])
    messages = _user("Set the thermostat to cool, then set the thermostat to heat")
    modes = []
    for _ in range(2):
        choice = _ask(client, messages, tools=[thermostat])
        assert choice["finish_reason"] == "tool_calls"
        modes += [json.loads(c["function"]["arguments"]) for c in choice["message"]["tool_calls"]]
        _round(messages, choice, {"set_thermostat": {"ok": True}})
    assert modes == [{"mode": "cool"}, {"mode": "heat"}]
