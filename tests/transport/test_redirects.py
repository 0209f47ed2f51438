"""Redirects: a same-origin 307/308 is followed with the same method and body (a few hops at most);
anything else — another origin, a 301/302/303, one hop too many — is an ``APIStatusError`` that names
the target, display-safe. The Authorization header never goes to another origin."""

from __future__ import annotations

import json
import socket

import httpx2
import pytest

from flotorch_nb import APIStatusError
from flotorch_nb._transport import MAX_REDIRECTS, redirect_target
from tests.support.client import (
    KEY,
    MOCK_URL,
    ONCE,
    SYNC,
    SYNC_IDS,
    RawServer,
    Recorder,
    chunk,
    completion,
    http_response,
    invoke,
    live_llm,
    mock_llm,
    sse,
    stream,
)

ENDPOINT = "/api/openai/v1/chat/completions"
BASE = "http://gw.test/api/openai/v1/chat/completions"


# -- the pure decision ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "location", "hops", "target"),
    [
        (307, "/v2/chat", 0, "http://gw.test/v2/chat"),
        (308, "completions2", 0, "http://gw.test/api/openai/v1/chat/completions2"),
        (307, "http://GW.test:80/moved", 0, "http://GW.test:80/moved"),
        (308, "/moved", MAX_REDIRECTS - 1, "http://gw.test/moved"),
        (307, "/moved", MAX_REDIRECTS, None),  # one hop too many
        (307, "https://gw.test/moved", 0, None),  # another scheme is another origin
        (307, "http://gw.test:8080/moved", 0, None),  # another port
        (307, "http://other.test/moved", 0, None),
        (307, "//other.test/moved", 0, None),  # scheme-relative: another host
        (307, "http://gw.test:notaport/x", 0, None),
        (301, "/moved", 0, None),  # would turn the POST into a GET
        (302, "/moved", 0, None),
        (303, "/moved", 0, None),
        (307, "", 0, None),
        (200, "/moved", 0, None),
    ],
)
def test_which_redirects_are_followed(status: int, location: str, hops: int, target: str | None) -> None:
    assert redirect_target(status, {"location": location}, BASE, hops) == target


def test_a_redirect_without_location_is_not_followed() -> None:
    assert redirect_target(307, {}, BASE, 0) is None


# -- on MockTransport (injected httpx2 clients, both paths) ----------------------------------------
def _moved(status: int, location: str) -> httpx2.Response:
    return httpx2.Response(status, headers={"location": location}, json={"error": {"message": "moved"}})


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("status", [307, 308])
async def test_a_same_origin_redirect_is_followed_with_method_body_and_key(sync: bool, status: int) -> None:
    handler = Recorder(_moved(status, "/v2/chat"), httpx2.Response(200, json=completion("moved answer")))
    async with mock_llm(handler, retry=ONCE) as llm:
        response = await invoke(llm, sync)
    assert response.content == "moved answer"
    first, second = handler.requests
    assert str(second.url) == f"{MOCK_URL}/v2/chat"
    assert second.method == "POST" and second.content == first.content
    assert second.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_redirected_stream_is_followed_too(sync: bool) -> None:
    body = sse(chunk("He"), chunk("llo"))
    handler = Recorder(
        _moved(307, "/v2/chat"),
        httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"}),
    )
    async with mock_llm(handler, retry=ONCE) as llm:
        deltas, response = await stream(llm, sync)
    assert "".join(deltas) == response.content == "Hello"
    assert json.loads(handler.requests[1].content)["stream"] is True


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_redirects_stop_after_a_few_hops(sync: bool) -> None:
    hops = [_moved(308, f"/hop{i}") for i in range(1, MAX_REDIRECTS + 2)]
    handler = Recorder(*hops, httpx2.Response(200, json=completion()))
    async with mock_llm(handler, retry=ONCE) as llm:
        with pytest.raises(
            APIStatusError, match=rf"redirects to {MOCK_URL}/hop6; after 5 redirects"
        ) as caught:
            await invoke(llm, sync)
    assert caught.value.status_code == 308
    assert len(handler.requests) == MAX_REDIRECTS + 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("status", "location"),
    [
        (307, "https://elsewhere.test/api/openai/v1/chat/completions"),
        (308, "http://gateway.test:8443/chat"),
        (301, "/v2/chat"),
        (302, "/v2/chat"),
        (303, "/v2/chat"),
    ],
)
async def test_other_redirects_are_status_errors_naming_the_target(
    sync: bool, status: int, location: str
) -> None:
    handler = Recorder(_moved(status, location))
    async with mock_llm(handler, retry=ONCE) as llm:
        with pytest.raises(APIStatusError) as caught:
            await invoke(llm, sync)
    target = location if location.startswith("http") else f"{MOCK_URL}{location}"
    assert caught.value.status_code == status
    assert f"redirects to {target}" in str(caught.value)
    assert len(handler.requests) == 1  # nothing sent to the target, so the key went nowhere else


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_redirect_target_is_named_without_its_credentials(sync: bool) -> None:
    handler = Recorder(_moved(307, "https://bob:hunter2pw@elsewhere.test/chat"))
    async with mock_llm(handler, retry=ONCE) as llm:
        with pytest.raises(APIStatusError) as caught:
            await invoke(llm, sync)
    assert "https://elsewhere.test/chat" in str(caught.value) and "hunter2pw" not in str(caught.value)


# -- over loopback (httpx2 for sync, aiohttp for async) ---------------------------------------------
def _first_moves(location: str):  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, request: bytes) -> bool:
        if request.startswith(f"POST {ENDPOINT} ".encode()):
            conn.sendall(http_response(307, b"moved", location=location))
        else:
            conn.sendall(
                http_response(
                    200,
                    json.dumps(completion("from the new place")).encode(),
                    content_type="application/json",
                )
            )
        return True

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_same_origin_redirect_over_loopback(sync: bool) -> None:
    with RawServer(_first_moves("/v2/chat/completions")) as server:
        async with live_llm(server.url, "m", retry=ONCE) as llm:
            response = await invoke(llm, sync)
    assert response.content == "from the new place"
    first, second = server.requests
    assert second.startswith(b"POST /v2/chat/completions HTTP/1.1\r\n")
    assert f"authorization: bearer {KEY}".lower().encode() in second.lower()
    assert first.partition(b"\r\n\r\n")[2] == second.partition(b"\r\n\r\n")[2]  # the same body


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_cross_origin_redirect_over_loopback_sends_nothing_there(sync: bool) -> None:
    def elsewhere_handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(http_response(200, json.dumps(completion()).encode(), content_type="application/json"))
        return True

    with RawServer(elsewhere_handler) as elsewhere:
        target = f"{elsewhere.url}{ENDPOINT}"  # another port on the same host: another origin
        with RawServer(_first_moves(target)) as server:
            async with live_llm(server.url, "m", retry=ONCE) as llm:
                with pytest.raises(APIStatusError, match=f"redirects to {target}") as caught:
                    await invoke(llm, sync)
    assert caught.value.status_code == 307
    assert len(server.requests) == 1 and elsewhere.requests == []
