"""The offline gateway as a server: per-request latency, request counts by canonical request, request
bodies kept only when asked for, and robustness against clients that misbehave."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from flotorch_nb import FlotorchLLM, RetryPolicy
from flotorch_nb.gateway import Fault, OfflineGateway, create_app
from flotorch_nb.gateway.__main__ import _parser
from flotorch_nb.replay import canonical_request, request_key

CHAT = "/api/openai/v1/chat/completions"
COUNTS = "/_offline/requests/counts"
KEY = "gw-server-test-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def body(text: str = "Hello there", model: str = "offline/assistant", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def gw() -> Iterator[OfflineGateway]:
    """A gateway that keeps no request bodies: the default."""
    with OfflineGateway() as gateway:
        yield gateway


@pytest.fixture
def client(gw: OfflineGateway) -> Iterator[httpx2.Client]:
    gw.clear_request_counts()
    gw.faults.clear()
    with httpx2.Client(base_url=gw.url, headers=AUTH, timeout=10) as c:
        yield c


# -- request bodies are kept only when asked for -----------------------------------------------------


def test_request_bodies_are_not_kept_unless_asked_for(gw: OfflineGateway, client: httpx2.Client) -> None:
    client.post(CHAT, json=body())
    with pytest.raises(RuntimeError, match=r"record=True"):
        _ = gw.requests
    assert create_app().state.requests is None
    with OfflineGateway(record=True) as recording, httpx2.Client(base_url=recording.url, headers=AUTH) as c:
        c.post(CHAT, json=body("kept"))
        assert recording.requests[-1].body["messages"][0]["content"] == "kept"


def test_many_turns_do_not_grow_the_gateway(gw: OfflineGateway, client: httpx2.Client) -> None:
    """The kernel's gateway must not hold every chat turn: only one small count per distinct request."""
    for turn in range(300):
        client.post(CHAT, json=body(f"turn {turn} " + "x" * 2000))
    counts = gw.request_counts()
    assert len(counts) == 300 and set(counts.values()) == {1}
    assert all(isinstance(k, str) and len(k) == 64 for k in counts)


# -- request counts -----------------------------------------------------------------------------------


def test_counts_are_keyed_by_the_replay_hash(gw: OfflineGateway, client: httpx2.Client) -> None:
    first = body("Count me", temperature=1.0)
    for _ in range(3):
        client.post(CHAT, json=first)
    client.post(CHAT, content=json.dumps({**first, "temperature": 1}, indent=2).encode())  # same request
    client.post(CHAT, json=body("Another"))
    client.post(CHAT, json=body("Refused"), headers={"Authorization": ""})  # received all the same
    expected = {
        request_key(canonical_request(first)): 4,
        request_key(canonical_request(body("Another"))): 1,
        request_key(canonical_request(body("Refused"))): 1,
    }
    assert gw.request_counts() == expected
    assert client.get(COUNTS).json() == {"counts": expected, "total": 6}
    client.get("/api/openai/v1/models")  # only chat completions are counted
    assert gw.request_counts() == expected


def test_counts_match_what_replay_computes_for_a_client_request(
    gw: OfflineGateway, client: httpx2.Client, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path))
    with FlotorchLLM("offline/assistant", KEY, gw.url + "/", retry=RetryPolicy(max_retries=0)) as llm:
        llm.invoke([{"role": "user", "content": "A haiku about the sea."}], temperature=0.5)
    (path,) = tmp_path.glob("*.json")
    assert gw.request_counts() == {json.loads(path.read_text())["key"]: 1}


def test_the_counts_endpoint_needs_the_key_and_can_be_cleared(
    gw: OfflineGateway, client: httpx2.Client
) -> None:
    client.post(CHAT, json=body())
    assert httpx2.get(gw.url + COUNTS).status_code == 401
    assert client.delete(COUNTS).json() == {"cleared": 1}
    assert gw.request_counts() == {} and client.get(COUNTS).json() == {"counts": {}, "total": 0}


def test_retries_count_each_time_the_request_arrives(gw: OfflineGateway, client: httpx2.Client) -> None:
    gw.faults.add(Fault(status=503, times=2))
    with FlotorchLLM("offline/assistant", KEY, gw.url, retry=RetryPolicy(3, 0, 0)) as llm:
        llm.invoke([{"role": "user", "content": "again"}])
    assert list(gw.request_counts().values()) == [3]


# -- latency ------------------------------------------------------------------------------------------


def _first_byte(client: httpx2.Client, request: dict[str, Any]) -> tuple[float, httpx2.Response]:
    started = time.perf_counter()
    with client.stream("POST", CHAT, json=request) as response:
        elapsed = time.perf_counter() - started
        response.read()
    return elapsed, response


@pytest.mark.parametrize("stream", [False, True])
def test_latency_comes_before_the_first_byte_of_every_answer(stream: bool) -> None:
    with OfflineGateway(latency=0.2) as gateway, httpx2.Client(base_url=gateway.url, headers=AUTH) as c:
        waited, response = _first_byte(c, body(stream=stream))
        assert response.status_code == 200
        assert waited >= 0.2
        assert float(response.headers["x-gateway-total-latency"]) >= 200
        gateway.latency = 0.0
        assert _first_byte(c, body(stream=stream))[0] < 0.15
        with pytest.raises(ValueError, match="latency"):
            gateway.latency = -1


def test_latency_does_not_block_other_requests() -> None:
    async def main(url: str) -> float:
        async with httpx2.AsyncClient(base_url=url, headers=AUTH, timeout=10) as c:
            started = time.perf_counter()
            answers = await asyncio.gather(*(c.post(CHAT, json=body(f"q{i}")) for i in range(20)))
            assert all(a.status_code == 200 for a in answers)
            return time.perf_counter() - started

    with OfflineGateway(latency=0.3) as gateway:
        assert asyncio.run(main(gateway.url)) < 1.5  # 20 x 0.3 s one after another would be 6 s


def test_latency_is_refused_when_negative_and_set_from_the_cli() -> None:
    with pytest.raises(ValueError, match="latency"):
        OfflineGateway(latency=-0.1)
    assert _parser().parse_args(["--latency", "0.25"]).latency == 0.25


# -- robustness ---------------------------------------------------------------------------------------


def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_client_that_disconnects_during_the_upload_is_a_quiet_debug_line(
    gw: OfflineGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flotorch_nb.gateway")
    with socket.create_connection((gw.host, gw.port)) as sock:
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"model": "offline/assi')
        time.sleep(0.05)
    _wait_for(lambda: any("disconnected" in r.getMessage() for r in caplog.records))
    time.sleep(0.1)  # anything else it would log comes right after
    debug = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert debug and all(r.levelno == logging.DEBUG for r in debug)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "offline/assistant", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["bare", "in-messages"],
)
@pytest.mark.parametrize("record", [False, True])
def test_a_deeply_nested_body_is_a_clear_400(raw: bytes, record: bool) -> None:
    with OfflineGateway(record=record) as gateway, httpx2.Client(base_url=gateway.url, headers=AUTH) as c:
        response = c.post(CHAT, content=raw)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "nested too deeply" in error["message"] and error["type"] == "invalid_request_error"
        assert sum(gateway.request_counts().values()) == 1
        assert c.post(CHAT, json=body()).status_code == 200, "and the gateway carries on"
        faults = c.post("/_offline/faults", content=raw)
        assert faults.status_code == 400 and "nested too deeply" in faults.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_echoed_lone_surrogate_is_answered(client: httpx2.Client, stream: bool) -> None:
    text = "file \udcff.txt"
    raw = json.dumps(body(text, model="offline/echo", stream=stream)).encode()  # escaped: valid JSON
    response = client.post(CHAT, content=raw)
    assert response.status_code == 200, response.text
    if not stream:
        assert response.json()["choices"][0]["message"]["content"] == text
    else:
        pieces = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
        assert "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if p["choices"]) == text


def test_a_long_chat_does_not_grow_the_gateway() -> None:
    """120 turns of one conversation (each request carrying the whole history, up to ~60 kB) leave the
    kernel's gateway a few MB larger at most: no bodies kept, and only small ones cached."""
    with OfflineGateway() as gateway, httpx2.Client(base_url=gateway.url, headers=AUTH, timeout=10) as c:
        messages: list[dict[str, str]] = []
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            for turn in range(120):
                padding = " ".join(["and more detail"] * 16)
                messages.append({"role": "user", "content": f"Tell me about topic {turn}, {padding}."})
                reply = c.post(CHAT, json={"model": "offline/assistant", "messages": messages}).json()
                messages.append({"role": "assistant", "content": reply["choices"][0]["message"]["content"]})
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
    held_by_the_test = len(json.dumps(messages)) * 3  # the conversation itself, client side
    assert grown - held_by_the_test < 3_000_000, f"{grown / 1e6:.1f} MB, {held_by_the_test / 1e6:.1f} MB ours"


def test_a_chat_body_is_decoded_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request key (the counts) and the answer are read from one decoding of the body; a long chat
    body (too large to cache) was decoded twice on every request, once for each."""
    from starlette.testclient import TestClient

    decoded: list[int] = []
    raw_decode = json.JSONDecoder.raw_decode

    def counting(self: json.JSONDecoder, text: str, idx: int = 0) -> Any:
        decoded.append(len(text))
        return raw_decode(self, text, idx)

    long_chat = json.dumps(body("Tell me more about " + "tea and biscuits, " * 1000)).encode()
    monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting)
    with TestClient(create_app()) as client:
        for _ in range(2):
            response = client.post(CHAT, content=long_chat, headers=AUTH)
            assert response.status_code == 200
        counts = client.get(COUNTS, headers=AUTH).json()
        # The answer reads numbers as sent: 3.0 is not an integer, though the key counts it as 3.
        refused = client.post(CHAT, json=body("Hello", max_tokens=3.0), headers=AUTH)
    assert counts["total"] == 2 and len(counts["counts"]) == 1
    assert sum(1 for size in decoded if size >= len(long_chat)) == 2
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"
