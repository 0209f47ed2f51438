"""``offline/scripted`` over real loopback HTTP: every script field, streamed and not, and its 400s.

These are the guarantees other tests rely on when they script a reply to pin the protocol instead of
the assistant's prose: what is scripted is exactly what goes on the wire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from flotorch_nb import FlotorchLLM, RateLimitError, RetryPolicy, StreamError
from flotorch_nb.gateway import OFFLINE_MODELS, OfflineGateway

CHAT = "/api/openai/v1/chat/completions"
MODEL = "offline/scripted"


@pytest.fixture
def client(gateway: OfflineGateway) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gateway.url, headers={"Authorization": "Bearer k-test"}, timeout=10) as c:
        yield c


def scripted(script: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": json.dumps({"script": script})}]


def ask(client: httpx2.Client, script: Any, **extra: Any) -> httpx2.Response:
    return client.post(CHAT, json={"model": MODEL, "messages": scripted(script), **extra})


def events(response: httpx2.Response) -> list[Any]:
    """The SSE payloads of a stream, decoded ([DONE] kept as the string)."""
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def deltas(response: httpx2.Response) -> list[str]:
    found = []
    for event in events(response):
        for choice in event["choices"] if isinstance(event, dict) else []:
            if choice["delta"].get("content"):
                found.append(choice["delta"]["content"])
    return found


def test_it_is_listed(client: httpx2.Client) -> None:
    assert MODEL in OFFLINE_MODELS
    assert MODEL in [m["id"] for m in client.get("/api/openai/v1/models").json()["data"]]


def test_content_is_answered_verbatim_with_counted_usage(client: httpx2.Client) -> None:
    text = "Anything at all, even prose the assistant would never write."
    body = ask(client, {"content": text}).json()
    choice = body["choices"][0]
    assert choice["message"]["content"] == text
    assert choice["finish_reason"] == "stop"
    assert body["model"] == MODEL
    assert body["usage"]["completion_tokens"] == 13  # the gateway's documented token rule
    assert body["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_usage_is_what_the_script_says(client: httpx2.Client, stream: bool) -> None:
    usage = {"prompt_tokens": 1234, "completion_tokens": 56}
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    response = ask(client, {"content": "ok", "usage": usage}, **extra)
    got = events(response)[-2]["usage"] if stream else response.json()["usage"]
    assert got == {**usage, "total_tokens": 1290}


def test_usage_null_is_sent_as_null(client: httpx2.Client) -> None:
    assert ask(client, {"content": "ok", "usage": None}).json()["usage"] is None


def test_chunks_are_the_exact_stream_deltas_and_join_into_the_content(client: httpx2.Client) -> None:
    chunks = ["Hel", "lo, ", "wor", "ld"]
    assert deltas(ask(client, {"chunks": chunks}, stream=True)) == chunks
    assert ask(client, {"chunks": chunks}).json()["choices"][0]["message"]["content"] == "Hello, world"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_with_object_or_raw_string_arguments(client: httpx2.Client, stream: bool) -> None:
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_a"},
        {"name": "broken", "arguments": '{"city": '},  # invalid JSON on purpose, sent as is
    ]
    response = ask(client, {"tool_calls": calls}, stream=stream)
    if stream:
        seen: dict[int, dict[str, str]] = {}
        finish = None
        for event in events(response)[:-1]:
            choice = event["choices"][0]
            finish = choice["finish_reason"] or finish
            for part in choice["delta"].get("tool_calls", []):
                entry = seen.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] += part.get("id", "")
                entry["name"] += part.get("function", {}).get("name", "")
                entry["arguments"] += part["function"].get("arguments", "")
        got = [seen[i] for i in sorted(seen)]
    else:
        choice = response.json()["choices"][0]
        finish = choice["finish_reason"]
        assert choice["message"]["content"] is None
        got = [{"id": c["id"], **c["function"]} for c in choice["message"]["tool_calls"]]
    assert finish == "tool_calls"
    assert got[0] == {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert got[1]["name"] == "broken" and got[1]["arguments"] == '{"city": '
    assert got[1]["id"].startswith("call_"), "an id is made up when the script gives none"


def test_finish_reason_is_scripted_and_max_tokens_does_not_cut(client: httpx2.Client) -> None:
    body = ask(client, {"content": "one two three four", "finish_reason": "length"}, max_tokens=1).json()
    assert body["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "one two three four", "refusal": None},
        "logprobs": None,
        "finish_reason": "length",
    }


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_status_with_its_message_and_retry_after(client: httpx2.Client, stream: bool) -> None:
    script = {"content": "never sent", "error": {"status": 429, "message": "slow down", "retry_after": "3"}}
    response = ask(client, script, stream=stream)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"] == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    assert "Scripted error: HTTP 503" in ask(client, {"error": {"status": 503}}).json()["error"]["message"]


def test_a_cut_stream_sends_that_many_chunks_then_breaks(client: httpx2.Client) -> None:
    script = {"chunks": ["a", "b", "c", "d"], "cut_after": 3}
    body = {"model": MODEL, "messages": scripted(script), "stream": True}
    received = []
    with pytest.raises(httpx2.RemoteProtocolError), client.stream("POST", CHAT, json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
    assert len(received) == 3, "the role chunk and two content chunks, then the connection breaks"
    assert [e["choices"][0]["delta"].get("content") for e in received] == ["", "a", "b"]


def test_a_cut_non_streamed_answer_breaks_mid_json(client: httpx2.Client) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        ask(client, {"content": "cut me", "cut_after": 0})


def test_delay_holds_the_first_byte_and_token_delay_paces_the_chunks(client: httpx2.Client) -> None:
    # Lower bounds only: a slow machine can be late, never early.
    started = time.perf_counter()
    assert ask(client, {"content": "late", "delay": 0.2}).status_code == 200
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    response = ask(client, {"chunks": ["a", "b", "c", "d"], "token_delay": 0.05}, stream=True)
    assert deltas(response) == ["a", "b", "c", "d"]
    assert time.perf_counter() - started >= 0.05 * 5  # six events (role, four deltas, finish) + [DONE]


def test_the_gateways_own_delays_do_not_apply() -> None:
    with OfflineGateway(latency=5.0, token_delay=1.0) as gw, httpx2.Client(base_url=gw.url, timeout=3) as c:
        c.headers["Authorization"] = "Bearer k"
        response = ask(c, {"chunks": ["a", "b"]}, stream=True)  # would take > 6 s if they applied
    assert deltas(response) == ["a", "b"]


C = "messages[0].content"
S = C + ".script"


@pytest.mark.parametrize(
    ("content", "param", "words"),
    [
        ("not json", C, "JSON object with one key 'script'"),
        ('{"script": 1}', C, "JSON object with one key 'script'"),
        ('{"script": {}, "more": 1}', C, "one key 'script'"),
        ('{"script": {"contnet": "x"}}', S + ".contnet", "unknown script field(s)"),
        ('{"script": {"content": 3}}', S + ".content", "'content' must be a string"),
        ('{"script": {"chunks": "ab"}}', S + ".chunks", "list of strings"),
        ('{"script": {"content": "x", "chunks": ["y"]}}', S + ".chunks", "disagree"),
        ('{"script": {"tool_calls": [{}]}}', S + ".tool_calls[0]", "'name'"),
        (
            '{"script": {"tool_calls": [{"name": "f", "arguments": 1}]}}',
            S + ".tool_calls[0].arguments",
            "object or a string",
        ),
        ('{"script": {"finish_reason": "done"}}', S + ".finish_reason", "one of"),
        ('{"script": {"usage": 5}}', S + ".usage", "'usage' must be"),
        (
            '{"script": {"usage": {"prompt_tokens": -1}}}',
            S + ".usage.prompt_tokens",
            "integer >= 0",
        ),
        ('{"script": {"usage": {"total": 1}}}', S + ".usage", "unknown usage field"),
        ('{"script": {"delay": 99}}', S + ".delay", "between 0 and 60"),
        ('{"script": {"token_delay": true}}', S + ".token_delay", "between 0 and 5"),
        ('{"script": {"error": {"status": 200}}}', S + ".error", "400 to 599"),
        (
            '{"script": {"error": {"status": 500, "message": 1}}}',
            S + ".error.message",
            "",
        ),
        ('{"script": {"cut_after": -1}}', S + ".cut_after", ">= 0"),
    ],
)
def test_an_invalid_script_is_a_400_naming_what_is_wrong(
    client: httpx2.Client, content: str, param: str, words: str
) -> None:
    messages = [{"role": "user", "content": content}]
    response = client.post(CHAT, json={"model": MODEL, "messages": messages})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["code"] == "invalid_script"
    assert error["message"].startswith("Invalid script: ") and words in error["message"]


def test_the_last_user_message_holds_the_script(client: httpx2.Client) -> None:
    messages = [
        {"role": "system", "content": "Keep answers short."},
        *scripted({"content": "first"}),
        {"role": "assistant", "content": "first"},
        *scripted({"content": "second"}),
    ]
    body = client.post(CHAT, json={"model": MODEL, "messages": messages}).json()
    assert body["choices"][0]["message"]["content"] == "second"


# -- through the client: what a test of flotorch_nb pins with it ---------------------------------------


def test_the_client_sees_the_scripted_usage_tool_calls_and_errors(gateway: OfflineGateway) -> None:
    with FlotorchLLM(MODEL, "k-test", gateway.url, retry=RetryPolicy(max_retries=0)) as llm:
        resp = llm.invoke(scripted({"content": "hi", "usage": {"prompt_tokens": 40, "completion_tokens": 2}}))
        assert (resp.content, resp.metadata["inputTokens"], resp.metadata["outputTokens"]) == ("hi", 40, 2)
        call = llm.invoke(scripted({"tool_calls": [{"name": "f", "arguments": {"x": 1}}]})).tool_calls[0]
        assert (call.name, call.args) == ("f", {"x": 1})
        with pytest.raises(RateLimitError, match="slow down"):
            llm.invoke(scripted({"error": {"status": 429, "message": "slow down"}}))
        stream = llm.stream(scripted({"chunks": ["a", "b", "c"], "cut_after": 2}))
        with pytest.raises(StreamError):
            list(stream)
