"""The offline gateway over real loopback HTTP: protocol, offline models, streaming, faults, secrets, CLI.

Every test talks to an ``OfflineGateway`` on 127.0.0.1 through httpx2, as the client library does, and
asserts what a client observes (status, headers, body, SSE events, transport errors).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest

from flotorch_nb.gateway import OFFLINE_MODELS, Fault, FaultPlan, OfflineGateway, create_app
from flotorch_nb.gateway._schema_fill import MAX_SIZE, SchemaTooLargeError, fill_schema
from flotorch_nb.gateway._text import count_tokens, hints_from, token_pieces, truncate_tokens

CHAT = "/api/openai/v1/chat/completions"
KEY = "sk-" + "offline-test-very-secret-0123456789"  # split: see tests.support.client.KEY
AUTH = {"Authorization": f"Bearer {KEY}"}
REPO = Path(__file__).resolve().parents[2]
BANNER_START = "FloTorch OFFLINE gateway (deterministic local models, no real LLM) listening on "


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw() -> Iterator[OfflineGateway]:
    """One gateway (any key accepted, no token delay, bodies recorded) for the whole module."""
    with OfflineGateway(record=True) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def _fresh(gw: OfflineGateway) -> Iterator[None]:
    gw.faults.clear()
    gw.requests.clear()
    yield
    gw.faults.clear()
    gw.requests.clear()


@pytest.fixture
def client(gw: OfflineGateway) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gw.url, headers=AUTH, timeout=10) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def body(text: str = "Hello there", model: str = "offline/assistant", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": user(text), **extra}


def data_lines(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def chunks(text: str) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE body ([DONE] excluded)."""
    return [json.loads(d) for d in data_lines(text) if d != "[DONE]"]


def streamed_text(text: str) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks(text) if c["choices"])


def assert_stamped(response: httpx2.Response) -> None:
    assert response.headers["x-flotorch-gateway"] == "offline"
    assert re.fullmatch(r"req_[0-9a-f]{16,}", response.headers["x-request-id"])


def assert_openai_error(response: httpx2.Response, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    assert_stamped(response)
    error = response.json()["error"]
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    message: str = error["message"]
    return message


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "add_numbers",
        "description": "Add two numbers together",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
}
SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search_orders",
        "description": "Search a customer's orders",
        "parameters": {
            "type": "object",
            "properties": {
                "customer": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "email": {"type": "string", "format": "email"},
                    },
                    "required": ["name", "email"],
                },
                "status": {"type": "string", "enum": ["open", "shipped", "cancelled"]},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            },
            "required": ["customer", "status", "limit"],
        },
    },
}
TOOLS = [WEATHER_TOOL, ADD_TOOL, SEARCH_TOOL]


# -- auth, routing, errors -------------------------------------------------------------------------


def test_health_and_index_answer_without_a_key(gw: OfflineGateway) -> None:
    with httpx2.Client(base_url=gw.url, timeout=5) as c:
        health = c.get("/health")
        index = c.get("/")
    assert health.status_code == 200 and health.json() == {"status": "ok", "gateway": "offline"}
    assert_stamped(health)
    assert index.json()["models"] == list(OFFLINE_MODELS)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["missing", "empty", "bearer-without-key", "basic"],
)
def test_missing_or_malformed_key_is_401(gw: OfflineGateway, headers: dict[str, str]) -> None:
    with httpx2.Client(base_url=gw.url, timeout=5) as c:
        response = c.post(CHAT, json=body(), headers=headers)
    message = assert_openai_error(response, 401, "authentication_error")
    assert "Bearer" in message
    assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")


def test_configured_key_is_required_and_never_echoed() -> None:
    strict = OfflineGateway(api_key=KEY, record=True)
    with strict as gateway, httpx2.Client(base_url=gateway.url, timeout=5) as c:
        wrong = c.post(CHAT, json=body(), headers={"Authorization": "Bearer sk-" + "wrong-key-42"})
        right = c.post(CHAT, json=body(), headers=AUTH)
        models_wrong = c.get(
            "/api/openai/v1/models", headers={"Authorization": "Bearer sk-" + "wrong-key-42"}
        )
    assert_openai_error(wrong, 401, "authentication_error")
    assert_openai_error(models_wrong, 401, "authentication_error")
    assert "sk-" + "wrong-key-42" not in wrong.text and KEY not in wrong.text
    assert right.status_code == 200
    for response in (wrong, right):
        assert KEY not in response.text and KEY not in str(response.headers)
    assert gateway.requests and all(KEY not in repr(r) for r in gateway.requests)


def test_unknown_model_is_404_listing_the_offline_models(client: httpx2.Client) -> None:
    response = client.post(CHAT, json=body(model="gpt-4o"))
    message = assert_openai_error(response, 404, "not_found_error")
    assert message == (
        "The model 'gpt-4o' does not exist on the offline gateway; available: "
        "offline/assistant, offline/echo, offline/concise, offline/verbose, offline/scripted"
    )


@pytest.mark.parametrize(
    ("payload", "hint"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        ({"model": "offline/assistant"}, "messages"),
        ({"model": "offline/assistant", "messages": []}, "empty"),
        ({"model": "offline/assistant", "messages": "hi"}, "array"),
        ({"model": "offline/assistant", "messages": ["hi"]}, "messages[0]"),
        ({"model": "offline/assistant", "messages": [{"role": "robot", "content": "hi"}]}, "'robot'"),
        ({"model": "offline/assistant", "messages": [{"role": "user"}]}, "content"),
        ({"model": "offline/assistant", "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": user("hi")}, "model"),
        (body(max_tokens=0), "max_tokens"),
        (body(temperature=3), "temperature"),
        (body(stream="yes"), "stream"),
        (body(tools=[{"type": "function"}]), "tools[0]"),
        (body(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}), "nope"),
        (body(response_format={"type": "xml"}), "response_format"),
        (body(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), "schema"),
        (body(extra_body={"offline": {"token_delay": -1}}), "token_delay"),
        (body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (body(stop=7), "stop"),
        ({"model": "offline/assistant", "messages": [{"role": "user", "content": 7}]}, "content"),
        ({"model": "offline/assistant", "messages": [{"role": "user", "content": [{}]}]}, "'type'"),
        (
            {"model": "offline/assistant", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "text",
        ),
        (body(tools={"type": "function"}), "tools"),
        (body(tools=[{"type": "function", "function": {"name": ""}}]), "name"),
        (body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "parameters"),
        (body(tool_choice="required"), "tool_choice"),
        (body(tools=[WEATHER_TOOL], tool_choice="sometimes"), "tool_choice"),
    ],
)
def test_bad_requests_are_400_with_a_helpful_message(client: httpx2.Client, payload: Any, hint: str) -> None:
    if isinstance(payload, bytes):
        response = client.post(CHAT, content=payload, headers={"content-type": "application/json"})
    else:
        response = client.post(CHAT, json=payload)
    message = assert_openai_error(response, 400, "invalid_request_error")
    assert hint in message


def test_unknown_paths_and_methods_answer_in_openai_shape(client: httpx2.Client) -> None:
    assert "chat completions live at" in assert_openai_error(
        client.get("/v1/nothing"), 404, "not_found_error"
    )
    assert_openai_error(client.get(CHAT), 405, "invalid_request_error")


def test_models_lists_the_offline_models(client: httpx2.Client) -> None:
    response = client.get("/api/openai/v1/models")
    assert response.status_code == 200
    assert_stamped(response)
    listing = response.json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == list(OFFLINE_MODELS)
    assert list(OFFLINE_MODELS) == [
        "offline/assistant",
        "offline/echo",
        "offline/concise",
        "offline/verbose",
        "offline/scripted",
    ]


# -- non-streaming answers -------------------------------------------------------------------------


def test_completion_has_the_openai_shape_and_offline_markers(client: httpx2.Client) -> None:
    response = client.post(CHAT, json=body("What is retrieval augmented generation?"))
    assert response.status_code == 200
    assert_stamped(response)
    assert float(response.headers["x-gateway-total-latency"]) >= 0
    data = response.json()
    assert data["id"] == "chatcmpl-offline-" + response.headers["x-request-id"].removeprefix("req_")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int) and abs(data["created"] - time.time()) < 60
    assert data["model"] == "offline/assistant"
    assert data["system_fingerprint"] == "flotorch-offline"
    (choice,) = data["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert "retrieval augmented generation" in content and "offline" in content.lower()
    assert "tool_calls" not in choice["message"]
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_same_request_same_answer(client: httpx2.Client) -> None:
    request = body("Give me steps to set up a Python project", temperature=0.7)
    first, second = client.post(CHAT, json=request).json(), client.post(CHAT, json=request).json()
    assert first["choices"] == second["choices"] and first["usage"] == second["usage"]
    assert first["id"] != second["id"]
    other = client.post(CHAT, json=body("Write a haiku about autumn leaves")).json()
    assert other["choices"][0]["message"]["content"] != first["choices"][0]["message"]["content"]


def test_usage_counts_words_and_punctuation(client: httpx2.Client) -> None:
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello, world!"}]
    data = client.post(CHAT, json={"model": "offline/echo", "messages": messages}).json()
    assert data["choices"][0]["message"]["content"] == "Hello, world!"
    assert data["usage"] == {"prompt_tokens": 3 + 4, "completion_tokens": 4, "total_tokens": 11}


def test_max_tokens_truncates_with_finish_reason_length(client: httpx2.Client) -> None:
    text = "one two, three four five"
    cut = client.post(CHAT, json=body(text, model="offline/echo", max_tokens=3)).json()
    assert cut["choices"][0]["message"]["content"] == "one two,"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3
    whole = client.post(CHAT, json=body(text, model="offline/echo", max_tokens=6)).json()
    assert whole["choices"][0]["message"]["content"] == text
    assert whole["choices"][0]["finish_reason"] == "stop"


def test_stop_cuts_the_answer_before_the_first_stop_sequence(client: httpx2.Client) -> None:
    text = "one two. three, four"
    for stop in ([".", ","], "."):
        cut = client.post(CHAT, json=body(text, model="offline/echo", stop=stop)).json()
        assert cut["choices"][0]["message"]["content"] == "one two"
        assert cut["choices"][0]["finish_reason"] == "stop"
        assert cut["usage"]["completion_tokens"] == 2
    whole = client.post(CHAT, json=body(text, model="offline/echo", stop=["nowhere", ""])).json()
    assert whole["choices"][0]["message"]["content"] == text


def test_echo_repeats_the_last_user_message_verbatim(client: httpx2.Client) -> None:
    payload = '<img src=x onerror="alert(1)"> <script>alert("xss")</script> ünïcode ✓ **md**'
    messages = [*user("first"), {"role": "assistant", "content": "ok"}, *user(payload)]
    data = client.post(CHAT, json={"model": "offline/echo", "messages": messages}).json()
    assert data["model"] == "offline/echo"
    assert data["choices"][0]["message"]["content"] == payload


def ask(client: httpx2.Client, text: str, system: str | None = None, **extra: Any) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + user(text)
    response = client.post(CHAT, json={"model": "offline/assistant", "messages": messages, **extra})
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def test_assistant_recognises_what_is_asked(client: httpx2.Client) -> None:
    haiku = ask(client, "Write a haiku about the sea")
    assert len(haiku.splitlines()) == 3 and "sea" in haiku.lower()
    listing = ask(client, "List some benefits of unit testing")
    bullets = [line for line in listing.splitlines() if line.startswith("- ")]
    assert len(bullets) >= 3 and all("unit testing" in b for b in bullets)
    steps = ask(client, "Give me 3 steps to deploy a web app")
    assert [line[:2] for line in steps.splitlines() if line[:1].isdigit()] == ["1.", "2.", "3."]
    summary = ask(client, "Summarize: Solar panels turn sunlight into electricity. They are getting cheaper.")
    assert "summary" in summary.lower() and "Solar panels turn sunlight into electricity." in summary
    greeting = ask(client, "Hi!")
    assert "offline" in greeting.lower()
    question = ask(client, "Why do APIs use rate limiting?")
    assert "rate limiting" in question
    translation = ask(client, "Translate 'thank you' to French")
    assert "merci" in translation
    fallback = ask(client, "Penguins huddle together during Antarctic winters")
    assert "penguins" in fallback.lower() and "offline" in fallback.lower()


def test_code_answers_contain_a_runnable_python_block(client: httpx2.Client) -> None:
    answer = ask(client, "Write a python function that computes a factorial")
    match = re.search(r"```python\n(.*?)```", answer, re.DOTALL)
    assert match, answer
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(match.group(1), "<offline-answer>", "exec"), {})
    assert printed.getvalue().strip() == "120"


def test_system_prompt_shapes_the_answer(client: httpx2.Client) -> None:
    pirate = ask(client, "Hello my friend", system="You are a pirate.")
    assert pirate.startswith("Arr! Ahoy!") and " me best" in pirate
    prompt = "Explain how vaccines train the immune system"
    brief, normal = ask(client, prompt, system="Answer in one sentence."), ask(client, prompt)
    assert "\n" not in brief and len(brief) < len(normal)
    assert normal.startswith(brief.removesuffix(" (offline answer)"))


def test_assistant_remembers_the_conversation(client: httpx2.Client) -> None:
    messages = [
        *user("Hi, my name is Ada"),
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
        *user("What is my name?"),
    ]
    answer = client.post(CHAT, json={"model": "offline/assistant", "messages": messages}).json()
    assert "Ada" in answer["choices"][0]["message"]["content"]


# -- tools and structured output -------------------------------------------------------------------


def tool_call(client: httpx2.Client, text: str, tools: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    data = client.post(CHAT, json=body(text, tools=tools, **extra)).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls", data
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    result: dict[str, Any] = call
    return result


def schema_of(name: str) -> dict[str, Any]:
    tool = next(t for t in TOOLS if t["function"]["name"] == name)
    schema: dict[str, Any] = tool["function"]["parameters"]
    return schema


@pytest.mark.parametrize(
    ("prompt", "expected", "checks"),
    [
        (
            "What's the weather in Paris in fahrenheit for 3 days?",
            "get_weather",
            {"city": "Paris", "unit": "fahrenheit", "days": 3},
        ),
        ("Please add 2.5 and 40", "add_numbers", {"a": 2.5, "b": 40}),
        (
            "Search the shipped orders of customer 'Grace Hopper' grace@example.com",
            "search_orders",
            {"status": "shipped"},
        ),
    ],
)
def test_tool_calls_pick_the_matching_tool_with_valid_arguments(
    client: httpx2.Client, prompt: str, expected: str, checks: dict[str, Any]
) -> None:
    call = tool_call(client, prompt, TOOLS)
    assert call["function"]["name"] == expected
    args = json.loads(call["function"]["arguments"])
    jsonschema.validate(args, schema_of(expected), format_checker=jsonschema.FormatChecker())
    assert {k: args[k] for k in checks} == checks


def test_tool_arguments_come_from_the_prompt_in_nested_objects(client: httpx2.Client) -> None:
    call = tool_call(client, "Search the open orders of customer 'Grace Hopper' grace@example.com", TOOLS)
    args = json.loads(call["function"]["arguments"])
    assert args["customer"] == {"name": "Grace Hopper", "email": "grace@example.com"}


def test_tool_choice_none_required_and_named(client: httpx2.Client) -> None:
    text = client.post(CHAT, json=body("What's the weather in Oslo?", tools=TOOLS, tool_choice="none")).json()
    assert text["choices"][0]["finish_reason"] == "stop" and text["choices"][0]["message"]["content"]
    forced = tool_call(client, "Tell me a joke", TOOLS, tool_choice="required")
    assert forced["function"]["name"] in {"get_weather", "add_numbers", "search_orders"}
    named = tool_call(
        client,
        "What's the weather in Oslo?",
        TOOLS,
        tool_choice={"type": "function", "function": {"name": "add_numbers"}},
    )
    assert named["function"]["name"] == "add_numbers"
    jsonschema.validate(json.loads(named["function"]["arguments"]), schema_of("add_numbers"))


def test_tool_result_follow_up_answers_in_text(client: httpx2.Client) -> None:
    first = tool_call(client, "What's the weather in Lisbon?", [WEATHER_TOOL])
    result = json.dumps({"temperature": 23, "conditions": "sunny"})
    messages = [
        *user("What's the weather in Lisbon?"),
        {"role": "assistant", "content": None, "tool_calls": [first]},
        {"role": "tool", "tool_call_id": first["id"], "content": result},
    ]
    data = client.post(
        CHAT, json={"model": "offline/assistant", "messages": messages, "tools": [WEATHER_TOOL]}
    )
    choice = data.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    content = choice["message"]["content"]
    assert result in content and "get_weather" in content and "Lisbon" in content


ADDRESS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "street": {"type": "string"},
        "city": {"type": "string"},
        "zip": {"type": "string", "pattern": r"^\d{5}$"},
    },
    "required": ["street", "city", "zip"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "flat-enum-bounds": {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "spam": {"type": "boolean"},
        },
        "required": ["sentiment", "confidence", "stars", "spam"],
        "additionalProperties": False,
    },
    "nested-defs-ref": {
        "$defs": {
            "Address": ADDRESS,
            "Role": {"type": "string", "enum": ["admin", "user", "guest"]},
        },
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 130}, {"type": "null"}]},
            "email": {"type": "string", "format": "email"},
            "role": {"$ref": "#/$defs/Role"},
            "address": {"$ref": "#/$defs/Address"},
            "previous": {"type": "array", "items": {"$ref": "#/$defs/Address"}, "minItems": 1},
        },
        "required": ["name", "age", "email", "role", "address", "previous"],
    },
    "array-of-objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 2,
                "maxItems": 4,
                "items": {
                    "type": "object",
                    "properties": {"title": {"type": "string", "maxLength": 20}, "done": {"type": "boolean"}},
                    "required": ["title", "done"],
                },
            },
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "due": {"type": ["string", "null"], "format": "date"},
        },
        "required": ["items", "tags", "due"],
    },
    "recursive-oneof-allof": {
        "definitions": {
            "Node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
                },
                "required": ["label", "children"],
            }
        },
        "allOf": [{"$ref": "#/definitions/Node"}, {"required": ["label"]}],
        "oneOf": [{"type": "object"}],
    },
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_json_schema_answers_validate(client: httpx2.Client, name: str) -> None:
    schema = SCHEMAS[name]
    fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    prompt = "Extract: Ada Lovelace, 36, ada@example.com, admin, lives at 12 Main St in London. I love it!"
    data = client.post(CHAT, json=body(prompt, response_format=fmt)).json()
    assert data["choices"][0]["finish_reason"] == "stop"
    value = json.loads(data["choices"][0]["message"]["content"])
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())


def test_json_schema_values_come_from_the_prompt(client: httpx2.Client) -> None:
    schema = SCHEMAS["nested-defs-ref"]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    prompt = "Extract: Ada Lovelace, 36, ada@example.com, a guest, lives at 12 Main Street in London."
    value = json.loads(
        client.post(CHAT, json=body(prompt, response_format=fmt)).json()["choices"][0]["message"]["content"]
    )
    assert (value["name"], value["age"], value["email"], value["role"]) == (
        "Ada Lovelace",
        36,
        "ada@example.com",
        "guest",
    )
    assert value["address"]["street"] == "12 Main Street" and value["address"]["city"] == "London"


def test_json_object_answers_are_objects(client: httpx2.Client) -> None:
    data = client.post(
        CHAT, json=body("Describe JSON in JSON", response_format={"type": "json_object"})
    ).json()
    value = json.loads(data["choices"][0]["message"]["content"])
    assert isinstance(value, dict) and list(value) == ["answer"] and value["answer"]  # no keys named


# -- streaming -------------------------------------------------------------------------------------


def test_stream_sends_role_tokens_finish_usage_and_done(client: httpx2.Client) -> None:
    request = body("List some ideas for a birthday party")
    plain = client.post(CHAT, json=request).json()
    response = client.post(CHAT, json={**request, "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert_stamped(response)
    assert float(response.headers["x-gateway-total-latency"]) >= 0
    lines = data_lines(response.text)
    assert lines[-1] == "[DONE]"
    parsed = chunks(response.text)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "offline/assistant" for c in parsed)
    assert len({c["id"] for c in parsed}) == 1 and parsed[0]["id"].startswith("chatcmpl-offline-")
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    content = plain["choices"][0]["message"]["content"]
    assert streamed_text(response.text) == content
    token_chunks = [c for c in parsed[1:] if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(token_chunks) == count_tokens(content)  # one chunk per token
    finish, usage = parsed[-2], parsed[-1]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]


def test_stream_without_include_usage_has_no_usage_chunk(client: httpx2.Client) -> None:
    response = client.post(CHAT, json=body("Hello", stream=True))
    parsed = chunks(response.text)
    assert all("usage" not in c for c in parsed) and parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert data_lines(response.text)[-1] == "[DONE]"


def test_stream_tool_calls_like_openai(client: httpx2.Client) -> None:
    request = body("What's the weather in Rome?", tools=[WEATHER_TOOL])
    plain = client.post(CHAT, json=request).json()["choices"][0]["message"]["tool_calls"][0]
    parsed = chunks(client.post(CHAT, json={**request, "stream": True}).text)
    opening = parsed[0]["choices"][0]["delta"]
    assert opening["role"] == "assistant"
    (call,) = opening["tool_calls"]
    assert call["index"] == 0 and call["id"] == plain["id"] and call["function"]["name"] == "get_weather"
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in parsed[1:-1]]
    assert len(fragments) > 3 and "".join(fragments) == plain["function"]["arguments"]
    assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_echo_streams_verbatim_with_max_tokens(client: httpx2.Client) -> None:
    payload = "<b>bold</b>\n  indented & 'quoted'"
    full = client.post(CHAT, json=body(payload, model="offline/echo", stream=True))
    assert streamed_text(full.text) == payload
    cut = chunks(client.post(CHAT, json=body(payload, model="offline/echo", stream=True, max_tokens=2)).text)
    assert streamed_text(full.text).startswith(
        "".join(c["choices"][0]["delta"].get("content", "") for c in cut)
    )
    assert cut[-1]["choices"][0]["finish_reason"] == "length"


def timed_data_lines(client: httpx2.Client, request: dict[str, Any]) -> tuple[float, list[tuple[float, str]]]:
    """When the request was sent, and each ``data:`` line with the time it arrived."""
    seen = []
    sent = time.perf_counter()
    with client.stream("POST", CHAT, json=request) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append((time.perf_counter(), line))
    return sent, seen


def test_per_request_token_delay_paces_the_chunks(client: httpx2.Client) -> None:
    delay = 0.03
    request = body(
        "a b c d e", model="offline/echo", stream=True, extra_body={"offline": {"token_delay": delay}}
    )
    sent, seen = timed_data_lines(client, request)
    assert len(seen) == 1 + 5 + 1 + 1  # role, five tokens, finish, [DONE]
    # The server cannot send the last event before 7 pauses have passed...
    assert seen[-1][0] - sent >= delay * (len(seen) - 1)
    # ...and it flushes as it goes: the first event arrives long before the last one is sent.
    assert seen[0][0] < seen[-1][0] - 2 * delay


def test_server_token_delay_is_the_default() -> None:
    with OfflineGateway(token_delay=0.02) as gateway, httpx2.Client(base_url=gateway.url, headers=AUTH) as c:
        sent, slow = timed_data_lines(c, body("one two three", model="offline/echo", stream=True))
        no_delay = {"offline": {"token_delay": 0}}
        fast_sent, fast = timed_data_lines(
            c, body("one two three", model="offline/echo", stream=True, extra_body=no_delay)
        )
    assert len(slow) == len(fast) == 6
    assert slow[-1][0] - sent >= 0.02 * (len(slow) - 1)
    assert fast[-1][0] - fast_sent < slow[-1][0] - sent


# -- faults ----------------------------------------------------------------------------------------


def test_status_fault_with_retry_after_then_recovers(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=429, message="slow down", retry_after="2"))
    limited = client.post(CHAT, json=body())
    assert assert_openai_error(limited, 429, "rate_limit_error") == "slow down"
    assert limited.headers["retry-after"] == "2"
    assert client.post(CHAT, json=body()).status_code == 200


def test_retry_after_may_be_an_http_date(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=503, retry_after="Wed, 21 Oct 2026 07:28:00 GMT"))
    response = client.post(CHAT, json=body())
    assert_openai_error(response, 503, "server_error")
    assert response.headers["retry-after"] == "Wed, 21 Oct 2026 07:28:00 GMT"


def test_html_error_page_fault(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=502, html=True, message="Bad <gateway>"))
    response = client.post(CHAT, json=body())
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text and "Bad &lt;gateway&gt;" in response.text
    assert_stamped(response)
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_garbage_fault_is_200_with_a_non_json_body(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(garbage=True))
    response = client.post(CHAT, json=body())
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


@pytest.mark.parametrize(
    "payload",
    [{"id": "x", "object": "chat.completion"}, {"id": "x", "choices": []}, {"choices": [], "usage": None}],
)
def test_body_fault_returns_exactly_that_body(
    gw: OfflineGateway, client: httpx2.Client, payload: dict[str, Any]
) -> None:
    gw.faults.add(Fault(body=payload))
    response = client.post(CHAT, json=body())
    assert response.status_code == 200 and response.json() == payload


def test_usage_faults(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(
        Fault(omit_usage=True), Fault(null_usage=True), Fault(omit_usage=True), Fault(null_usage=True)
    )
    assert "usage" not in client.post(CHAT, json=body()).json()
    assert client.post(CHAT, json=body()).json()["usage"] is None
    streamed: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    omitted = chunks(client.post(CHAT, json=body(**streamed)).text)
    assert all("usage" not in c for c in omitted)
    nulled = chunks(client.post(CHAT, json=body(**streamed)).text)
    assert nulled[-1]["choices"] == [] and nulled[-1]["usage"] is None


def test_cut_stream_breaks_the_connection(
    gw: OfflineGateway, client: httpx2.Client, caplog: pytest.LogCaptureFixture
) -> None:
    gw.faults.add(Fault(cut_after=3))
    received = []
    request = body("Write a haiku about rivers", stream=True)
    with (
        pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)),
        client.stream("POST", CHAT, json=request) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():  # the error comes mid-iteration, after the first chunks
            if line.startswith("data: "):
                received.append(line)
    assert len(received) == 3 and "[DONE]" not in "".join(received)
    assert client.post(CHAT, json=body()).status_code == 200  # the gateway itself is fine
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a deliberate cut is not an error


def test_cut_fault_on_a_plain_request_breaks_the_body(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(cut_after=0))
    with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
        client.post(CHAT, json=body())


def test_stream_that_ends_without_done(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(end_without_done=2))
    response = client.post(CHAT, json=body("Hello there friend", stream=True))
    lines = data_lines(response.text)
    assert len(lines) == 2 and "[DONE]" not in lines


def test_malformed_line_in_stream(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(malformed_after=2))
    lines = data_lines(client.post(CHAT, json=body("Hello there friend", stream=True)).text)
    assert lines[2] == "{not json"
    json.loads(lines[1])
    assert lines[-1] == "[DONE]"


def test_inband_error_in_stream(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(inband_error="upstream exploded"), Fault(inband_error="upstream exploded"))
    lines = data_lines(client.post(CHAT, json=body("Hello there friend", stream=True)).text)
    assert len(lines) == 2 and json.loads(lines[0])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(lines[1])["error"]["message"] == "upstream exploded"
    plain = client.post(CHAT, json=body())
    assert plain.status_code == 200 and plain.json()["error"]["message"] == "upstream exploded"


def test_delay_fault_lets_a_client_time_out_without_blocking_others(gw: OfflineGateway) -> None:
    gw.faults.add(Fault(delay=5.0))
    with httpx2.Client(base_url=gw.url, headers=AUTH, timeout=httpx2.Timeout(5.0, read=0.2)) as slow:
        started = time.perf_counter()
        with pytest.raises(httpx2.ReadTimeout):
            slow.post(CHAT, json=body())
        assert time.perf_counter() - started < 2
    with httpx2.Client(base_url=gw.url, headers=AUTH, timeout=2) as fast:
        assert fast.post(CHAT, json=body()).status_code == 200  # fault used up, server responsive


def test_delay_fault_alone_answers_late(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(delay=0.15))
    started = time.perf_counter()
    response = client.post(CHAT, json=body())
    assert response.status_code == 200 and time.perf_counter() - started >= 0.15


def test_faults_are_fifo_with_times(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=500, times=2), Fault(status=502))
    statuses = [client.post(CHAT, json=body()).status_code for _ in range(4)]
    assert statuses == [500, 500, 502, 200]


def test_fault_model_filter(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=503, model="offline/echo"))
    assert client.post(CHAT, json=body()).status_code == 200
    assert client.post(CHAT, json=body(model="offline/echo")).status_code == 503
    assert client.post(CHAT, json=body(model="offline/echo")).status_code == 200


def test_invalid_requests_do_not_consume_faults(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=500))
    assert client.post(CHAT, json={"model": "offline/assistant"}).status_code == 400
    assert client.post(CHAT, json=body()).status_code == 500


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        Fault(status=99)
    with pytest.raises(ValueError, match="times"):
        Fault(times=0)
    with pytest.raises(ValueError, match="unknown fault field"):
        Fault.from_dict({"stauts": 500})
    with pytest.raises(ValueError, match="cut_after"):
        Fault.from_dict({"cut_after": True})
    assert Fault.from_dict({"status": 429, "retry_after": 3}).retry_after == "3"
    plan = FaultPlan([Fault(status=500)])
    assert len(plan) == 1 and plan.take("offline/echo") == Fault(status=500) and not plan


def test_faults_over_http(gw: OfflineGateway, client: httpx2.Client) -> None:
    with httpx2.Client(base_url=gw.url, timeout=5) as anonymous:
        assert anonymous.post("/_offline/faults", json=[{"status": 500}]).status_code == 401
        assert anonymous.delete("/_offline/faults").status_code == 401
    added = client.post("/_offline/faults", json=[{"status": 429, "retry_after": "1"}, {"garbage": True}])
    assert added.json() == {"added": 2, "pending": 2}
    pending = client.get("/_offline/faults").json()["data"]
    assert pending == [{"status": 429, "retry_after": "1", "times": 1}, {"garbage": True, "times": 1}]
    first = client.post(CHAT, json=body())
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert client.delete("/_offline/faults").json() == {"cleared": 1}
    assert client.post(CHAT, json=body()).status_code == 200
    bad = client.post("/_offline/faults", json=[{"explode": True}])
    assert "unknown fault field" in assert_openai_error(bad, 400, "invalid_request_error")
    assert_openai_error(client.post("/_offline/faults", json="nope"), 400, "invalid_request_error")
    single = client.post("/_offline/faults", json={"status": 418})
    assert single.json()["added"] == 1 and client.post(CHAT, json=body()).status_code == 418


# -- recording and secrets -------------------------------------------------------------------------


def test_requests_are_recorded_without_the_key(gw: OfflineGateway, client: httpx2.Client) -> None:
    client.post(CHAT, json=body("recorded", temperature=0.2, extra_body={"trace": "abc"}))
    client.post(CHAT, json={**body("key in body"), "api_key": KEY})
    (first, second) = gw.requests
    assert (first.method, first.path) == ("POST", CHAT)
    assert first.body["messages"] == user("recorded") and first["json"] == first.body
    assert first.body["extra_body"] == {"trace": "abc"}
    assert (
        first.headers["authorization"] == "Bearer ***"
        and first["headers"]["content-type"] == "application/json"
    )
    assert second.body["api_key"] == "***"
    assert KEY not in repr(gw.requests)
    gw.requests.clear()
    assert gw.requests == []


def test_the_key_never_appears_in_any_response(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=500), Fault(html=True))
    responses = [
        client.post(CHAT, json=body()),
        client.post(CHAT, json=body()),
        client.post(CHAT, json=body("Repeat my key please", model="offline/echo", stream=True)),
        client.post(CHAT, json=body(model="nope")),
        client.post(CHAT, json={"messages": []}),
        client.get("/missing"),
        client.get("/api/openai/v1/models"),
    ]
    for response in responses:
        assert KEY not in response.text and KEY not in str(response.headers)


# -- pure helpers ----------------------------------------------------------------------------------


def test_token_helpers_are_consistent() -> None:
    text = "Hello, world!  It's 3.5 degrees\n"
    assert count_tokens("Hello, world!") == 4
    assert "".join(token_pieces(text)) == text and len(token_pieces(text)) == count_tokens(text)
    assert truncate_tokens(text, 3) == ("Hello, world", True)
    assert truncate_tokens(text, 100) == (text, False)


def test_schema_fill_handles_edge_cases() -> None:
    hints = hints_from("Book 3 seats for Alan Turing in Manchester on 2026-05-01")
    cases = [
        {
            "type": "array",
            "items": {"type": "integer", "multipleOf": 5, "minimum": 7},
            "minItems": 3,
            "uniqueItems": True,
        },
        {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 12},
        {"type": "string", "minLength": 30},
        {"type": "string", "pattern": "^[A-Z]{3}$"},
        {"type": ["null", "boolean"]},
        {"const": "fixed"},
        {
            "type": "object",
            "properties": {"when": {"type": "string", "format": "date"}, "seats": {"type": "integer"}},
        },
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "items": False},
    ]
    for schema in cases:
        jsonschema.validate(fill_schema(schema, hints), schema, format_checker=jsonschema.FormatChecker())
    assert fill_schema(cases[6], hints) == {"when": "2026-05-01", "seats": 3}


# -- schemas that ask for too much: refused at once, the gateway stays responsive ----------------------


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _wants(keyword: str, size: int) -> dict[str, Any]:
    inner: dict[str, Any] = {
        "minItems": {"type": "array", "minItems": size, "items": {"type": "integer"}},
        "minLength": {"type": "string", "minLength": size},
        "minProperties": {"type": "object", "minProperties": size},
        "minContains": {"type": "array", "contains": {"type": "integer"}, "minContains": size},
    }[keyword]
    return {"type": "object", "required": ["xs"], "properties": {"xs": inner}}


@pytest.mark.parametrize("keyword", ["minItems", "minLength", "minProperties", "minContains"])
@pytest.mark.parametrize("where", ["response_format", "tools"])
def test_a_size_keyword_above_the_cap_is_a_400_naming_it(
    client: httpx2.Client, keyword: str, where: str
) -> None:
    schema = _wants(keyword, 10**9)
    if where == "tools":
        tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
        payload = body("numbers", tools=[tool], tool_choice="required")
        param = "tools[0].function.parameters"
    else:
        payload = body("numbers", response_format=_schema_format(schema))
        param = "response_format.json_schema.schema"
    started = time.perf_counter()
    response = client.post(CHAT, json=payload)
    assert time.perf_counter() - started < 2
    message = assert_openai_error(response, 400, "invalid_request_error")
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "schema_too_large")
    assert f"{keyword} 1000000000 at /properties/xs/{keyword}" in message
    assert f"limit of {MAX_SIZE}" in message


def test_sizes_up_to_the_cap_are_answered_quickly_and_validly(client: httpx2.Client) -> None:
    schema = {
        "type": "object",
        "required": ["ids", "words", "text", "codes"],
        "properties": {
            "codes": {
                "type": "array",
                "minItems": MAX_SIZE,
                "uniqueItems": True,
                "items": {"enum": [f"c{i}" for i in range(MAX_SIZE)]},
            },
            "ids": {"type": "array", "minItems": MAX_SIZE, "uniqueItems": True, "items": {"type": "integer"}},
            "words": {
                "type": "array",
                "minItems": MAX_SIZE,
                "uniqueItems": True,
                "items": {"type": "string"},
            },
            "text": {"type": "string", "minLength": MAX_SIZE},
        },
    }
    started = time.perf_counter()
    response = client.post(CHAT, json=body("numbers 1 2 3", response_format=_schema_format(schema)))
    assert time.perf_counter() - started < 2, "a maximal answer takes milliseconds, not seconds"
    assert response.status_code == 200, response.text
    value = json.loads(response.json()["choices"][0]["message"]["content"])
    jsonschema.validate(value, schema)
    assert len(value["ids"]) == len(value["words"]) == len(value["codes"]) == MAX_SIZE


@pytest.mark.parametrize(
    "schema",
    [
        {  # nested arrays multiply: 1000 x 1000 values
            "type": "array",
            "minItems": MAX_SIZE,
            "items": {"type": "array", "minItems": MAX_SIZE, "items": {"type": "integer"}},
        },
        {  # a recursive $ref with minItems 10 at every level
            "$defs": {
                "n": {
                    "type": "object",
                    "required": ["c"],
                    "properties": {"c": {"type": "array", "minItems": 10, "items": {"$ref": "#/$defs/n"}}},
                }
            },
            "$ref": "#/$defs/n",
        },
        {  # 1000 long strings per item of 1000 items
            "type": "array",
            "minItems": MAX_SIZE,
            "items": {"type": "array", "minItems": 3, "items": {"type": "string", "minLength": MAX_SIZE}},
        },
        {"type": "array", "minItems": MAX_SIZE, "items": {"const": "x" * 5000}},
        {  # every level's allOf names the next level twice: 2**24 merges from a 2 KB schema
            "$defs": {
                **{f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(24)},
                "d24": {"type": "object", "properties": {"a": {"type": "string"}}},
            },
            "$ref": "#/$defs/d0",
        },
    ],
    ids=["nested", "recursive", "long-strings", "big-const", "allOf-doubling"],
)
def test_an_answer_that_would_multiply_past_the_budget_is_a_400(
    client: httpx2.Client, schema: dict[str, Any]
) -> None:
    with pytest.raises(SchemaTooLargeError):
        fill_schema(schema, hints_from("numbers"))
    started = time.perf_counter()
    response = client.post(
        CHAT,
        json=body(
            "numbers",
            response_format=_schema_format(
                {
                    "type": "object",
                    "required": ["xs"],
                    "properties": {"xs": schema},
                    **({"$defs": schema["$defs"]} if "$defs" in schema else {}),
                }
            ),
        ),
    )
    assert time.perf_counter() - started < 2
    assert_openai_error(response, 400, "invalid_request_error")
    assert response.json()["error"]["code"] == "schema_too_large"


def test_a_huge_schema_request_neither_freezes_the_gateway_nor_holds_up_stop() -> None:
    """The reviewer's case: minItems 10**9 used to plan for ever on the event loop."""
    gateway = OfflineGateway().start()
    try:
        outcome: list[int] = []

        def big() -> None:
            schema = _wants("minItems", 10**9)
            with httpx2.Client(base_url=gateway.url, headers=AUTH, timeout=5) as c:
                for index in range(3):
                    fmt = _schema_format(schema)
                    response = c.post(CHAT, json=body("numbers", response_format=fmt, stream=index == 1))
                    outcome.append(response.status_code)

        worker = threading.Thread(target=big)
        worker.start()
        with httpx2.Client(base_url=gateway.url, timeout=2) as c:
            for _ in range(5):  # while the big requests come in, and after
                assert c.get("/health").json()["status"] == "ok"
        worker.join(10)
        assert outcome == [400, 400, 400]
    finally:
        started = time.perf_counter()
        gateway.stop()
    assert time.perf_counter() - started < 2
    assert not gateway.running


def test_a_gateway_bug_is_a_json_500_with_the_usual_headers(
    client: httpx2.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(chat: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("flotorch_nb.gateway._app.plan_completion", broken)
    response = client.post(CHAT, json=body("A request no test sent before, so no answer is cached"))
    assert "RuntimeError" in assert_openai_error(response, 500, "server_error")
    assert any("offline gateway bug" in r.getMessage() for r in caplog.records)


def test_token_delay_can_change_while_serving(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.token_delay = 0.05
    try:
        sent, seen = timed_data_lines(client, body("a b", model="offline/echo", stream=True))
    finally:
        gw.token_delay = 0.0
    assert seen[-1][0] - sent >= 0.05 * (len(seen) - 1)
    with pytest.raises(ValueError, match="token_delay"):
        gw.token_delay = -1


def test_create_app_is_usable_in_process() -> None:
    app = create_app(api_key=KEY, record=False)
    assert app.state.requests is None and isinstance(app.state.faults, FaultPlan)


# -- server lifecycle and CLI ----------------------------------------------------------------------


def test_gateway_lifecycle_is_bounded() -> None:
    gateway = OfflineGateway()
    with pytest.raises(RuntimeError, match="not started"):
        _ = gateway.url
    gateway.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            gateway.start()
        assert gateway.running and gateway.url == f"http://127.0.0.1:{gateway.port}"
        gateway.faults.add(Fault(delay=30))
        outcome: list[BaseException] = []

        def stuck_request() -> None:
            try:
                with httpx2.Client(base_url=gateway.url, headers=AUTH, timeout=10) as c:
                    c.post(CHAT, json=body())
            except httpx2.HTTPError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=stuck_request)
        worker.start()
        deadline = time.monotonic() + 5
        while not gateway.request_counts() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.perf_counter()
    finally:
        gateway.stop()
    assert time.perf_counter() - started < 4
    worker.join(10)
    assert not gateway.running and not worker.is_alive()


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        "-m",
        "flotorch_nb.gateway",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-key",
        KEY,
    ]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        banner: list[str] = []
        reader = threading.Thread(target=lambda: banner.append(proc.stdout.readline() if proc.stdout else ""))
        reader.start()
        reader.join(20)
        assert banner and banner[0], "no banner within 20 s"
        line = banner[0].strip()
        assert line.startswith(BANNER_START)
        assert line.endswith("— models: " + ", ".join(OFFLINE_MODELS)) and KEY not in line
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match and match.group(1) != "0"
        with httpx2.Client(base_url=match.group(0), headers=AUTH, timeout=5) as c:
            answer = c.post(CHAT, json=body("Hello"))
            assert c.post("/_offline/faults", json=[{"cut_after": 1}]).status_code == 200
            with pytest.raises((httpx2.RemoteProtocolError, httpx2.ReadError)):
                c.post(CHAT, json=body("Hello", stream=True))
        assert answer.status_code == 200 and answer.headers["x-flotorch-gateway"] == "offline"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        _, stderr = proc.communicate(timeout=5)
        assert KEY not in stderr and "Traceback" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Summarize FloTorch in one line.", "FloTorch is an LLM gateway"),
        ("Explain in a few sentences why the sea is salty", "rivers carry minerals"),
        ("What is a Python decorator?", "takes a function and returns a new one"),
    ],
)
def test_the_seed_questions_get_real_answers_marked_offline(prompt: str, expected: str) -> None:
    from flotorch_nb.gateway._assistant import answer
    from flotorch_nb.gateway._validate import Message

    reply = answer([Message(role="user", text=prompt)])
    assert expected in reply and "Offline answer" in reply


def test_unknown_topics_still_get_the_honest_template() -> None:
    from flotorch_nb.gateway._assistant import answer
    from flotorch_nb.gateway._validate import Message

    reply = answer([Message(role="user", text="Explain in a few sentences how bread rises")])
    assert reply.startswith("To approach") and "offline model" in reply
