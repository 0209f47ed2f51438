"""flotorch_nb.replay: record against the real offline gateway, replay with no gateway at all.

Every scenario runs twice through the public client: once with FLOTORCH_RECORD against the embedded
gateway, once with FLOTORCH_REPLAY and a base URL whose port nobody listens on. What a caller can see
(content, tokens, tool calls, parsed objects, each streamed delta, the typed error) must be identical,
and the gateway must not see the replayed requests. Edge cases of the transports themselves
(encodings, redaction, matching rules) use ``httpx2.MockTransport``.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel

from flotorch_nb import FlotorchError, FlotorchLLM, NotFoundError, RetryPolicy
from flotorch_nb._config import Secret, redact
from flotorch_nb._errors import APIConnectionError
from flotorch_nb.replay import (
    RECORDED_HEADERS,
    RecordTransport,
    ReplayFileError,
    ReplayMissError,
    ReplayTransport,
    canonical_request,
    endpoint_path,
    request_key,
    wrap_transport,
)

#: Distinctive enough that any trace of it in a recording is unmistakable.
SECRET_KEY = "sk-" + "flotorch-RECORDING-SECRET-7f3a9c1e"  # split: see tests.support.client.KEY
MODEL = "offline/assistant"
NO_RETRY = RetryPolicy(max_retries=0)


def _closed_port_url() -> str:
    """A loopback URL nobody listens on: any attempt to use the network fails loudly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class City(BaseModel):
    name: str
    population: int


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

SUMMARY = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Summarize FloTorch in one line."},
]
HAIKU = [{"role": "user", "content": "A haiku about the sea."}]


def _seen(resp: Any) -> dict[str, Any]:
    """Everything about an answer that must not change between record and replay (not latency)."""
    return {
        "content": resp.content,
        "tokens": [resp.metadata[k] for k in ("inputTokens", "outputTokens", "totalTokens")],
        "tool_calls": [(c.id, c.name, c.args) for c in resp.tool_calls],
        "finish_reason": resp.finish_reason,
        "model": resp.model,
        "offline": resp.offline,
        "request_id": resp.request_id,
        "parsed": resp.parsed.model_dump() if isinstance(resp.parsed, BaseModel) else resp.parsed,
    }


def _invoke(llm: FlotorchLLM) -> Any:
    return _seen(llm.invoke(SUMMARY, temperature=0.3))


async def _ainvoke(llm: FlotorchLLM) -> Any:
    return _seen(await llm.ainvoke(HAIKU))


def _stream(llm: FlotorchLLM) -> Any:
    stream = llm.stream([{"role": "user", "content": "Explain streaming in three sentences."}])
    deltas = list(stream)
    return {"deltas": deltas, **_seen(stream.response)}


async def _astream(llm: FlotorchLLM) -> Any:
    stream = llm.astream([{"role": "user", "content": "Count from one to five."}], max_tokens=64)
    deltas = [delta async for delta in stream]
    return {"deltas": deltas, **_seen(stream.response)}


def _tools(llm: FlotorchLLM) -> Any:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = llm.invoke(messages, tools=[WEATHER_TOOL], tool_choice="auto")
    assert first.tool_calls, "the offline assistant should call the tool"
    messages.append(first.assistant_message())
    for call in first.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
    second = llm.invoke(messages, tools=[WEATHER_TOOL])
    return [_seen(first), _seen(second)]


def _json_schema(llm: FlotorchLLM) -> Any:
    resp = llm.invoke([{"role": "user", "content": "Name a large city."}], response_format=City)
    assert isinstance(resp.parsed, City)
    return _seen(resp)


def _not_found(llm: FlotorchLLM) -> Any:
    with pytest.raises(NotFoundError) as info:
        llm.invoke(HAIKU, model="no-such/model")
    return {"status": info.value.status_code, "message": info.value.message}


SCENARIOS: dict[str, Callable[[FlotorchLLM], Any]] = {
    "invoke": _invoke,
    "ainvoke": _ainvoke,
    "stream": _stream,
    "astream": _astream,
    "tools": _tools,
    "json_schema": _json_schema,
    "not_found": _not_found,
}


async def _run(scenario: Callable[[FlotorchLLM], Any], llm: FlotorchLLM) -> Any:
    result = scenario(llm)
    if hasattr(result, "__await__"):
        result = await result
    return result


@pytest.fixture
def cassette(tmp_path: Path) -> Path:
    return tmp_path / "cassette"


def _client(base_url: str, key: str = SECRET_KEY) -> FlotorchLLM:
    return FlotorchLLM(MODEL, key, base_url, retry=NO_RETRY)


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_replay_answers_exactly_what_was_recorded(
    name: str, gateway: Any, cassette: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = SCENARIOS[name]
    monkeypatch.setenv("FLOTORCH_RECORD", str(cassette))
    async with _client(gateway.url) as llm:
        recorded = await _run(scenario, llm)
    files = sorted(cassette.glob("*.json"))
    assert files, "record mode wrote nothing"
    seen_by_gateway = len(gateway.requests)

    monkeypatch.delenv("FLOTORCH_RECORD")
    monkeypatch.setenv("FLOTORCH_REPLAY", str(cassette))
    async with _client(_closed_port_url(), key="a-different-key") as llm:
        replayed = await _run(scenario, llm)

    assert replayed == recorded
    assert len(gateway.requests) == seen_by_gateway, "replay must not reach the gateway"
    assert sorted(cassette.glob("*.json")) == files, "replay must not write"


@pytest.mark.anyio
async def test_recording_changes_nothing_the_caller_sees(
    gateway: Any, cassette: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record mode hands back an equivalent response: same text and tokens as a plain live call."""
    async with _client(gateway.url) as llm:
        live = [_invoke(llm), await _astream(llm)]
    monkeypatch.setenv("FLOTORCH_RECORD", str(cassette))
    async with _client(gateway.url) as llm:
        recorded = [_invoke(llm), await _astream(llm)]
    for a, b in zip(live, recorded, strict=True):
        a.pop("request_id"), b.pop("request_id")  # the gateway numbers its requests
        assert a == b


def test_streams_are_stored_as_readable_events_and_replayed_as_a_real_event_stream(
    gateway: Any, cassette: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_RECORD", str(cassette))
    with _client(gateway.url) as llm:
        _stream(llm)
    (path,) = cassette.glob("*.json")
    stored = json.loads(path.read_text())
    response = stored["response"]
    assert response["headers"]["content-type"].startswith("text/event-stream")
    events = response["events"]
    assert events[-1] == "[DONE]"
    assert all(isinstance(e, str) and "\n" not in e for e in events)
    assert json.loads(events[0])["object"] == "chat.completion.chunk"
    # One payload per line of the file: a diff shows which chunk changed.
    assert '\n      "[DONE]"\n' in path.read_text()

    transport = ReplayTransport(cassette)
    request = httpx2.Request("POST", "http://x" + stored["request"]["path"], json=stored["request"]["body"])
    replayed = transport.handle_request(request)
    assert isinstance(replayed.stream, httpx2.SyncByteStream)
    chunks = list(replayed.stream)
    assert len(chunks) == len(events), "one event per chunk, like a live gateway"
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)


def test_files_hold_no_key_no_auth_header_and_only_allowed_headers(
    gateway: Any, cassette: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_RECORD", str(cassette))
    with _client(gateway.url) as llm:
        for scenario in (_invoke, _stream, _tools, _json_schema, _not_found):
            scenario(llm)
    files = list(cassette.iterdir())
    assert len(files) >= 5
    for path in files:
        text = path.read_text()
        assert SECRET_KEY not in text
        assert SECRET_KEY[10:30] not in text
        assert not re.search(r"(?i)authorization|bearer", text), path.name
        record = json.loads(text)
        assert set(record) == {"format", "key", "request", "response"}
        assert set(record["request"]) == {"method", "path", "body"}
        assert set(record["response"]["headers"]) <= set(RECORDED_HEADERS)
        assert text == json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_file_names_are_slug_plus_hash_and_stable_across_runs(
    gateway: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = []
    for run in ("one", "two"):
        monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path / run))
        with _client(gateway.url, key=f"key-{run}-123456789") as llm:
            _invoke(llm)
        names.append(sorted(p.name for p in (tmp_path / run).iterdir()))
    assert names[0] == names[1]
    (name,) = names[0]
    assert re.fullmatch(r"summarize-flotorch-in-one-line-[0-9a-f]{12}\.json", name)
    record = json.loads((tmp_path / "one" / name).read_text())
    assert name.endswith(record["key"][:12] + ".json")
    assert record["key"] == request_key(record["request"])


def test_recording_the_same_request_again_replaces_its_file(
    gateway: Any, cassette: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One response per request: identical requests replay identical answers (documented choice)."""
    monkeypatch.setenv("FLOTORCH_RECORD", str(cassette))
    with _client(gateway.url) as llm:
        _invoke(llm)
        _invoke(llm)
    assert len(list(cassette.iterdir())) == 1


def test_a_request_never_recorded_raises_a_miss_that_names_it(
    gateway: Any, cassette: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_RECORD", str(cassette))
    with _client(gateway.url) as llm:
        _invoke(llm)
    monkeypatch.delenv("FLOTORCH_RECORD")
    monkeypatch.setenv("FLOTORCH_REPLAY", str(cassette))
    with _client(_closed_port_url()) as llm:
        with pytest.raises(ReplayMissError) as info:
            llm.invoke(SUMMARY, temperature=0.9)
        with pytest.raises(ReplayMissError) as other:
            list(llm.stream([{"role": "user", "content": "Something never asked"}]))
    error = info.value
    assert isinstance(error, FlotorchError)
    assert not isinstance(error, APIConnectionError), "a miss is not a network problem"
    text = str(error)
    assert str(cassette) in text
    assert "model offline/assistant" in text
    assert "'Summarize FloTorch in one line.'" in text
    assert f"FLOTORCH_RECORD={cassette}" in text
    assert "differs in: temperature" in text, "the closest recording and what differs are named"
    assert "'Something never asked'" in str(other.value)
    assert "Closest" not in str(other.value)


@pytest.mark.anyio
async def test_async_miss_is_the_same_error(cassette: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTORCH_REPLAY", str(cassette))
    async with FlotorchLLM(MODEL, retry=NO_RETRY) as llm:  # no key, no URL: replay needs neither
        with pytest.raises(ReplayMissError, match="A haiku about the sea"):
            await llm.ainvoke(HAIKU)
        with pytest.raises(ReplayMissError):
            async for _ in llm.astream(HAIKU):
                pass


# -- the matching rules, on the transports directly --------------------------------------------------


def _echo_handler(seen: list[httpx2.Request]) -> Callable[[httpx2.Request], httpx2.Response]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        body = json.loads(request.content)
        answer = {"echo": body["messages"][-1]["content"], "n": len(seen)}
        return httpx2.Response(
            200, json=answer, headers={"x-request-id": f"r{len(seen)}", "set-cookie": "a=b"}
        )

    return handler


def _post(client: httpx2.Client, body: dict[str, Any], **kwargs: Any) -> httpx2.Response:
    return client.post("/api/openai/v1/chat/completions", content=json.dumps(body).encode(), **kwargs)


BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi there"}], "temperature": 0.2}


def _recorded_dir(tmp_path: Path) -> Path:
    seen: list[httpx2.Request] = []
    record = wrap_transport(httpx2.MockTransport(_echo_handler(seen)), "record", tmp_path, asynchronous=False)
    with httpx2.Client(transport=record, base_url="http://gw.example") as client:
        reply = _post(client, BODY, headers={"Authorization": "Bearer first-key-123456"})
    assert reply.json() == {"echo": "hi there", "n": 1}
    assert reply.headers["set-cookie"] == "a=b", "the live caller still gets every header"
    return tmp_path


def test_matching_ignores_host_headers_key_and_json_key_order(tmp_path: Path) -> None:
    directory = _recorded_dir(tmp_path)
    with httpx2.Client(transport=ReplayTransport(directory), base_url="http://elsewhere:9") as client:
        reordered = json.dumps(dict(reversed(list(BODY.items())))).encode()
        reply = client.post(
            "/api/openai/v1/chat/completions",
            content=reordered,
            headers={"Authorization": "Bearer other-key-987654", "X-Trace": "1"},
        )
    assert reply.status_code == 200
    assert reply.json() == {"echo": "hi there", "n": 1}
    assert reply.headers["x-request-id"] == "r1"
    assert "set-cookie" not in reply.headers, "only allow-listed headers are stored"


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "hi there!"}]},
        {"temperature": 0.3},
        {"max_tokens": 10},
        {"model": "offline/echo"},
        {"stream": True},
        {"tools": [WEATHER_TOOL]},
        {"tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_matching_does_not_ignore_messages_model_or_parameters(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    directory = _recorded_dir(tmp_path)
    client = httpx2.Client(transport=ReplayTransport(directory), base_url="http://gw.example")
    with client, pytest.raises(ReplayMissError):
        _post(client, {**BODY, **change})


def test_path_and_method_are_part_of_the_match(tmp_path: Path) -> None:
    directory = _recorded_dir(tmp_path)
    with httpx2.Client(transport=ReplayTransport(directory), base_url="http://gw.example") as client:
        with pytest.raises(ReplayMissError):
            client.post("/v1/other", content=json.dumps(BODY).encode())
        with pytest.raises(ReplayMissError):
            client.put("/api/openai/v1/chat/completions", content=json.dumps(BODY).encode())


def test_canonical_key_is_independent_of_formatting() -> None:
    compact = canonical_request(json.dumps(BODY, separators=(",", ":")).encode(), "/p", method="post")
    spaced = canonical_request(json.dumps(BODY, indent=4, sort_keys=True).encode(), "/p")
    assert compact == spaced == canonical_request(BODY, "/p") == canonical_request(json.dumps(BODY), "/p")
    assert request_key(compact) == request_key(spaced)
    assert request_key(compact) != request_key(canonical_request(json.dumps(BODY).encode(), "/q"))
    assert request_key(compact) != request_key(canonical_request(BODY, "/p", method="PUT"))


def test_a_key_echoed_by_the_gateway_is_scrubbed_from_the_file(tmp_path: Path) -> None:
    """Last guard: whatever the gateway sends back, the bearer token is never written."""

    def leaky(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            400, json={"error": {"message": f"bad key {request.headers['authorization']}"}}
        )

    record = wrap_transport(httpx2.MockTransport(leaky), "record", tmp_path, asynchronous=False)
    with httpx2.Client(transport=record, base_url="http://gw") as client:
        _post(client, BODY, headers={"Authorization": f"Bearer {SECRET_KEY}"})
    (path,) = tmp_path.iterdir()
    text = path.read_text()
    assert SECRET_KEY not in text
    assert "bad key ***" in text, "masked the way error messages mask it (_config.redact)"


@pytest.mark.anyio
async def test_compressed_answers_are_stored_decoded(tmp_path: Path) -> None:
    payload = {"choices": [{"message": {"role": "assistant", "content": "zipped"}}]}

    async def handler(request: httpx2.Request) -> httpx2.Response:
        body = gzip.compress(json.dumps(payload).encode())
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        return httpx2.Response(200, content=body, headers=headers)

    record = wrap_transport(httpx2.MockTransport(handler), "record", tmp_path, asynchronous=True)
    async with httpx2.AsyncClient(transport=record, base_url="http://gw") as client:
        reply = await client.post("/x", content=b"{}")
    assert reply.json() == payload
    (path,) = tmp_path.iterdir()
    assert json.loads(path.read_text())["response"]["json"] == payload
    assert path.name.startswith("request-")


def test_wrap_transport_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="record"):
        wrap_transport(None, "record", tmp_path, asynchronous=False)
    with pytest.raises(ValueError, match="record"):
        wrap_transport(
            httpx2.MockTransport(lambda r: httpx2.Response(200)), "bogus", tmp_path, asynchronous=False
        )  # type: ignore[call-overload]
    assert isinstance(wrap_transport(None, "replay", tmp_path, asynchronous=True), ReplayTransport)


def test_replay_of_an_error_status_keeps_retry_after(tmp_path: Path) -> None:
    def limited(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "0"})

    record = wrap_transport(httpx2.MockTransport(limited), "record", tmp_path, asynchronous=False)
    with httpx2.Client(transport=record, base_url="http://gw") as client:
        _post(client, BODY)
    with httpx2.Client(transport=ReplayTransport(tmp_path), base_url="http://gw") as client:
        reply = _post(client, BODY)
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "0"
    assert reply.json() == {"error": {"message": "slow down"}}


@pytest.fixture(autouse=True)
def _no_leftover_tmp(cassette: Path) -> Iterator[None]:
    """Writes are atomic: no scratch file survives a test."""
    yield
    if cassette.exists():
        assert not list(cassette.glob("*.tmp"))


def test_a_damaged_file_does_not_hide_the_miss(tmp_path: Path) -> None:
    directory = _recorded_dir(tmp_path)
    (directory / "hi-there-000000000000.json").write_text("{not json")
    client = httpx2.Client(transport=ReplayTransport(directory), base_url="http://gw.example")
    with (
        client,
        pytest.raises(ReplayMissError, match=r"Closest recording: hi-there-(?!0{12})[0-9a-f]{12}\.json"),
    ):
        _post(client, {**BODY, "temperature": 0.9})


# -- damaged files ------------------------------------------------------------------------------------


def _only_file(directory: Path) -> Path:
    (path,) = directory.glob("*.json")
    return path


def _edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


DAMAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated": (lambda p: p.write_text(p.read_text()[:50]), "not valid JSON"),
    "empty": (lambda p: p.write_text(""), "not valid JSON"),
    "not utf-8": (lambda p: p.write_bytes(b"\xff\xfe{}"), "not UTF-8"),
    "a list": (lambda p: p.write_text("[1, 2]"), "JSON list, not an object"),
    "no key": (lambda p: _edit(p, lambda r: r.pop("key")), "'key'"),
    "no response": (lambda p: _edit(p, lambda r: r.pop("response")), "'response' is missing"),
    "no status": (lambda p: _edit(p, lambda r: r["response"].pop("status")), "'response.status'"),
    "text status": (lambda p: _edit(p, lambda r: r["response"].update(status="200")), "'response.status'"),
    "bad headers": (lambda p: _edit(p, lambda r: r["response"].update(headers=[1])), "'response.headers'"),
    "bad events": (lambda p: _edit(p, lambda r: r["response"].update(events=[{}])), "'response.events'"),
    "bad text": (lambda p: _edit(p, lambda r: r["response"].update(text=3)), "'response.text'"),
    "newer format": (lambda p: _edit(p, lambda r: r.update(format=2)), "format 2"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
async def test_a_damaged_recording_is_a_replay_file_error_naming_the_file_and_the_fault(
    tmp_path: Path, damage: str, sync: bool
) -> None:
    directory = _recorded_dir(tmp_path)
    path = _only_file(directory)
    spoil, problem = DAMAGES[damage]
    spoil(path)
    transport = ReplayTransport(directory)
    with pytest.raises(ReplayFileError) as info:
        if sync:
            with httpx2.Client(transport=transport, base_url="http://gw.example") as client:
                _post(client, BODY)
        else:
            async with httpx2.AsyncClient(transport=transport, base_url="http://gw.example") as aclient:
                await aclient.post("/api/openai/v1/chat/completions", content=json.dumps(BODY).encode())
    error = info.value
    assert isinstance(error, FlotorchError)
    assert error.path == path
    assert str(path) in str(error) and problem in str(error)
    assert f"FLOTORCH_RECORD={directory}" in str(error), "says how to repair it"


@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
async def test_a_damaged_recording_reaches_the_caller_as_itself_through_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    """The reviewer's case: a truncated file under FLOTORCH_REPLAY, a plain FlotorchLLM, no retry."""
    messages = [{"role": "user", "content": "hello there"}]
    http = httpx2.Client(transport=RecordTransport(httpx2.MockTransport(_ok), tmp_path))
    with http, FlotorchLLM("m", "sk-" + "k3y-abcdefgh", "https://gw.example", http_client=http) as llm:
        llm.invoke(messages)
    path = _only_file(tmp_path)
    path.write_text(path.read_text()[:50])
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))
    async with FlotorchLLM("m") as llm:
        with pytest.raises(ReplayFileError, match="not valid JSON") as info:
            if sync:
                llm.invoke(messages)
            else:
                await llm.ainvoke(messages)
    assert path.name in str(info.value)


def test_a_missing_folder_is_named_in_the_miss(tmp_path: Path) -> None:
    client = httpx2.Client(transport=ReplayTransport(tmp_path / "nope"), base_url="http://gw.example")
    with client, pytest.raises(ReplayMissError, match="no such folder"):
        _post(client, BODY)


# -- what a match ignores: the base URL's path, how a number is written ------------------------------


def _ok(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(
        200,
        json={
            "model": "m",
            "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )


@pytest.mark.parametrize(
    ("recorded_at", "replayed_at", "endpoint"),
    [
        ("https://corp.example/flotorch", None, None),
        ("https://corp.example/api/gateway", "http://other.example/x/y", None),
        ("https://gw.example", "https://corp.example/flotorch/", None),
        ("https://corp.example/proxy", None, "/v1/chat/completions"),
    ],
)
def test_a_recording_replays_whatever_path_the_base_url_had(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recorded_at: str,
    replayed_at: str | None,
    endpoint: str | None,
) -> None:
    """The reviewer's case: recorded against a gateway mounted under a path, replayed with no base URL."""
    messages = [{"role": "user", "content": "hello"}]
    http = httpx2.Client(transport=RecordTransport(httpx2.MockTransport(_ok), tmp_path))
    with (
        http,
        FlotorchLLM("m", "sk-" + "k3y-abcdefgh", recorded_at, endpoint=endpoint, http_client=http) as llm,
    ):
        llm.invoke(messages, temperature=1)
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))
    with FlotorchLLM("m", base_url=replayed_at, endpoint=endpoint) as llm:
        assert llm.invoke(messages, temperature=1).content == "hi"


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/api/openai/v1/chat/completions", "/api/openai/v1/chat/completions"),
        ("/flotorch/api/openai/v1/chat/completions", "/api/openai/v1/chat/completions"),
        ("/api/x/api/openai/v1/chat/completions", "/api/openai/v1/chat/completions"),
        ("/proxy/v1/chat/completions", "/v1/chat/completions"),
        ("/v2/gw/v1beta/chat/completions", "/v1beta/chat/completions"),
        ("/openai/deployments/d/chat/completions?v=2", "/openai/deployments/d/chat/completions?v=2"),
        ("/p/api/openai/v1/chat/completions?x=1", "/api/openai/v1/chat/completions?x=1"),
        ("/v1/other", "/v1/other"),
        ("/p", "/p"),
    ],
)
def test_the_endpoint_path_drops_only_the_prefix_a_base_url_added(path: str, endpoint: str) -> None:
    assert endpoint_path(path) == endpoint


def test_a_custom_endpoint_is_still_told_apart_from_the_default_one() -> None:
    body = json.dumps(BODY).encode()
    default = request_key(canonical_request(body))  # the endpoint defaults to FloTorch's chat completions
    assert default == request_key(canonical_request(body, "/api/openai/v1/chat/completions"))
    assert default != request_key(canonical_request(body, "/v1/chat/completions"))
    assert default == request_key(canonical_request(body, "/gw/api/openai/v1/chat/completions"))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"temperature": 1}, {"temperature": 1.0}),
        ({"temperature": 0}, {"temperature": 0.0}),
        ({"max_tokens": 64}, {"max_tokens": 64.0}),
        (
            {"response_format": {"schema": {"minimum": 0, "items": [{"maximum": 10}]}}},
            {"response_format": {"schema": {"minimum": 0.0, "items": [{"maximum": 10.0}]}}},
        ),
    ],
)
def test_equal_numbers_give_the_same_key_however_they_are_written(
    one: dict[str, Any], other: dict[str, Any]
) -> None:
    def key(change: dict[str, Any]) -> str:
        return request_key(canonical_request(json.dumps({**BODY, **change}).encode(), "/p"))

    assert key(one) == key(other)
    assert key({"temperature": 1}) != key({"temperature": 1.5})
    assert key({"temperature": 1}) != key({"temperature": "1"}), "a string is not a number"
    assert key({"stream": True}) != key({"stream": 1}), "true is not 1"


def test_temperature_one_replays_a_recording_made_with_one_point_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [{"role": "user", "content": "hello"}]
    http = httpx2.Client(transport=RecordTransport(httpx2.MockTransport(_ok), tmp_path))
    with http, FlotorchLLM("m", "sk-" + "k3y-abcdefgh", "https://gw.example", http_client=http) as llm:
        llm.invoke(messages, temperature=1.0)
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))
    with FlotorchLLM("m") as llm:
        assert llm.invoke(messages, temperature=1).content == "hi"


# -- short keys ---------------------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    """Every string in a record, event payloads decoded too (they are JSON text themselves)."""
    if isinstance(value, str):
        yield value
        try:
            inner = json.loads(value)
        except ValueError:
            return
        if not isinstance(inner, str):
            yield from _strings(inner)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("key", ["Zq7#", "Zq7#p", "Zq7#p2x", 'Zq"7\\p2', "Zq7#p2x9", SECRET_KEY])
def test_a_short_key_echoed_by_the_gateway_never_lands_in_a_file(tmp_path: Path, key: str) -> None:
    """Any key the client would mask in an error message (``_config.redact``) is masked in a file too,
    in a JSON body and inside a streamed event's own JSON alike."""
    assert redact(key, Secret(key)) != key, "the client masks keys of this length"

    def echo_key(request: httpx2.Request) -> httpx2.Response:
        token = request.headers["authorization"].split(" ", 1)[1]
        if json.loads(request.content).get("stream"):
            chunk = {"choices": [{"index": 0, "delta": {"content": f"key {token}"}}]}
            text = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
            return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})
        return httpx2.Response(401, json={"error": {"message": f"key {token} is revoked"}})

    record = wrap_transport(httpx2.MockTransport(echo_key), "record", tmp_path, asynchronous=False)
    with httpx2.Client(transport=record, base_url="https://gw.example") as client:
        headers = {"Authorization": f"Bearer {key}"}
        reply = _post(client, BODY, headers=headers).json()
        assert key in reply["error"]["message"], "the caller still sees what was sent"
        _post(client, {**BODY, "stream": True}, headers=headers)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 2
    for path in files:
        record_text = path.read_text()
        assert key not in record_text
        leaked = [s for s in _strings(json.loads(record_text)) if key in s]
        assert not leaked, path.name
