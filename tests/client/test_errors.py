"""The error tree: every status maps to its class, every message can be acted on, and no bare httpx2,
KeyError, TypeError or IndexError escapes whatever the gateway sends back."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest

import flotorch_nb
from flotorch_nb import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FlotorchError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseError,
    ServerError,
    StreamError,
)
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import (
    ONCE,
    SYNC,
    SYNC_IDS,
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

STATUS_CLASSES: list[tuple[int, type[APIStatusError]]] = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (422, BadRequestError),
    (429, RateLimitError),
    (500, ServerError),
    (502, ServerError),
    (503, ServerError),
    (504, ServerError),
]


def test_the_tree_is_as_documented() -> None:
    for _, cls in STATUS_CLASSES:
        assert issubclass(cls, APIStatusError)
        assert issubclass(cls, FlotorchError)
    assert issubclass(flotorch_nb.APITimeoutError, APIConnectionError)
    assert issubclass(StreamError, ResponseError)
    assert issubclass(flotorch_nb.StructuredOutputError, ResponseError)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_each_status_maps_to_its_class_and_names_status_message_and_request_id(
    sync: bool, status: int, cls: type[APIStatusError]
) -> None:
    body = {"error": {"message": f"the gateway says no ({status})", "type": "x", "code": None}}
    handler = Recorder(httpx2.Response(status, json=body, headers={"x-request-id": "req-abc123"}))
    async with mock_llm(handler, retry=ONCE) as llm:
        with pytest.raises(cls) as info:
            await invoke(llm, sync)
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert error.message == f"the gateway says no ({status})"
    assert error.request_id == "req-abc123"
    assert error.body == body
    text = str(error)
    assert str(status) in text
    assert f"the gateway says no ({status})" in text
    assert "req-abc123" in text
    assert len(handler.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"detail": "model not allowed"}, "model not allowed"),
        ({"error": "quota exhausted"}, "quota exhausted"),
        ({"error": {"msg": "bad things"}}, "bad things"),
        ({"message": "plain message"}, "plain message"),
    ],
)
async def test_looser_json_error_bodies_still_give_the_gateways_words(
    sync: bool, body: dict[str, Any], message: str
) -> None:
    async with mock_llm(Recorder(httpx2.Response(400, json=body))) as llm:
        with pytest.raises(BadRequestError, match=message) as info:
            await invoke(llm, sync)
    assert info.value.message == message


HTML_PAGE = """<!DOCTYPE html><html><head><title>502 Bad Gateway</title>
<style>body { font-family: sans-serif; color: #333 }</style>
<script>window.alert('x')</script></head>
<body><h1>502 Bad Gateway</h1><p>The upstream <b>model server</b> did not respond.</p>
<hr><address>nginx/1.25</address></body></html>"""


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_an_html_error_page_becomes_a_short_plain_text_excerpt(sync: bool) -> None:
    page = HTML_PAGE + "<p>" + "padding " * 500 + "</p>"
    handler = Recorder(httpx2.Response(502, content=page.encode(), headers={"content-type": "text/html"}))
    async with mock_llm(handler, retry=ONCE) as llm:
        with pytest.raises(ServerError) as info:
            await invoke(llm, sync)
    text = str(info.value)
    assert "502" in text
    assert "Bad Gateway" in text
    assert "did not respond" in info.value.message
    for markup in ("<", ">", "font-family", "window.alert", "DOCTYPE"):
        assert markup not in text
    assert len(text) < 400


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_an_empty_error_body_still_names_the_status(sync: bool) -> None:
    async with mock_llm(Recorder(httpx2.Response(403, content=b""))) as llm:
        with pytest.raises(PermissionDeniedError, match="403") as info:
            await invoke(llm, sync)
    assert info.value.message


def _ok(body: Any) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.Response(200, content=content, headers={"content-type": "application/json"})


def _message(**message: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}}]}


#: 2xx bodies that are not a usable completion: each must be a ResponseError, nothing else.
ODD_BODIES: list[Any] = [
    b"",
    b"not json at all",
    b"<html><body>Login required</body></html>",
    b"\xff\xfe\x00garbage",
    b'{"choices": [',
    b"[" * 100_000,  # nesting deeper than the recursion limit
    [],
    [1, 2, 3],
    "a string",
    42,
    None,
    {},
    {"choices": None},
    {"choices": "abc"},
    {"choices": {}},
    {"choices": []},
    {"choices": [None]},
    {"choices": [3]},
    {"choices": [[]]},
    {"choices": [{}]},
    {"choices": [{"message": 3}]},
    {"choices": [{"message": None}]},
    {"choices": [{"message": "hello"}]},
    {"choices": [{"message": []}]},
    _message(content=5),
    _message(content={"text": "x"}),
    _message(content="x", tool_calls="call it"),
    _message(content="x", tool_calls={"id": "1"}),
    _message(content=None, tool_calls=[None]),
    _message(content=None, tool_calls=[3]),
    _message(content=None, tool_calls=[{"id": "1"}]),
    _message(content=None, tool_calls=[{"id": "1", "function": None}]),
    _message(content=None, tool_calls=[{"id": "1", "function": {"name": 5}}]),
    _message(content=None, tool_calls=[{"id": "1", "function": "f"}]),
    {"error": {"message": "upstream failed"}},
    {"error": "upstream failed"},
    {"error": None},
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("body", ODD_BODIES, ids=lambda b: repr(b)[:50])
async def test_an_odd_2xx_body_is_a_response_error(sync: bool, body: Any) -> None:
    async with mock_llm(Recorder(_ok(body))) as llm:
        with pytest.raises(ResponseError):
            await invoke(llm, sync)


#: Odd but usable: the client must not crash, and must not invent tokens.
TOLERATED_BODIES: list[Any] = [
    completion(usage=None),
    completion(usage={}),
    completion(usage="lots"),
    completion(usage={"prompt_tokens": "3", "completion_tokens": 2}),
    completion(usage={"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}),
    {**completion(), "model": 5, "id": ["x"]},
    {"choices": [{"message": {"content": "hi"}, "finish_reason": None}]},
    _message(content=[{"type": "text", "text": "hi"}, "junk", {"no": "text"}]),
    _message(content="hi", tool_calls=[]),
    _message(content="hi", tool_calls=None),
    {"error": None, **completion()},
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("body", TOLERATED_BODIES, ids=lambda b: repr(b)[:50])
async def test_an_odd_but_usable_body_gives_a_response(sync: bool, body: Any) -> None:
    async with mock_llm(Recorder(_ok(body))) as llm:
        response = await invoke(llm, sync)
    assert isinstance(response.content, str)
    for name in ("inputTokens", "outputTokens", "totalTokens"):
        assert type(response.metadata[name]) is int
    repr(response)
    response._repr_mimebundle_()


#: Odd streams: only a FlotorchError may come out (StreamError for the damage we can name).
ODD_STREAMS: list[bytes] = [
    b"",
    sse(done=False),
    sse(chunk("Hel"), chunk("lo"), done=False),
    sse(chunk("Hel"), "{not json"),
    sse(chunk("Hel"), "[1, 2"),
    sse(chunk("Hel"), '"just a string"'),
    sse(chunk("Hel"), "[]"),
    sse(chunk("Hel"), {"error": {"message": "overloaded"}}),
    sse(chunk("Hel"), {"error": "overloaded"}),
    sse(chunk(tool_calls=[3])),
    sse(chunk(tool_calls="call")),
    sse(chunk(tool_calls=[{"index": [0], "function": {"name": "f"}}])),
    sse(chunk(tool_calls=[{"index": 0, "function": {"name": 5}}])),
    sse(chunk(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": {"a": 1}}}])),
    sse(chunk(tool_calls=[{"index": 0, "function": "f"}])),
    sse(chunk(tool_calls=[{"index": 0, "function": {"name": "f"}}]), chunk(tool_calls=[{"index": "1"}])),
    sse(chunk(tool_calls=[{"index": 0, "id": "call_1"}])),  # never named
    b"data: " + b"[" * 100_000 + b"\n\n",
    sse({"choices": [{"delta": {"content": 5}}]}, {"choices": "x"}, {"choices": [None]}, done=False),
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("body", ODD_STREAMS, ids=lambda b: repr(b)[:50])
async def test_an_odd_stream_raises_only_flotorch_errors(sync: bool, body: bytes) -> None:
    async with mock_llm(Recorder(sse_response(body))) as llm:
        with pytest.raises(FlotorchError):
            await stream(llm, sync)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_an_unexpected_status_still_is_an_api_status_error(sync: bool) -> None:
    async with mock_llm(Recorder(httpx2.Response(418, json={"error": {"message": "teapot"}}))) as llm:
        with pytest.raises(APIStatusError, match=r"418.*teapot"):
            await invoke(llm, sync)


# -- against the gateway: real status codes and bodies over loopback ---------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_gateway_status_faults_raise_their_class(
    gateway: OfflineGateway, sync: bool, status: int, cls: type[APIStatusError]
) -> None:
    gateway.faults.add(Fault(status=status, message=f"injected {status}", times=5))
    async with live_llm(gateway.url, retry=ONCE) as llm:
        with pytest.raises(cls) as info:
            await invoke(llm, sync)
    assert info.value.status_code == status
    assert f"injected {status}" in str(info.value)
    assert str(status) in str(info.value)
    assert info.value.request_id == gateway.requests[0].request_id
    assert info.value.request_id and info.value.request_id in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_gateway_html_error_page_is_excerpted(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(html=True, message="upstream exploded"))
    async with live_llm(gateway.url, retry=ONCE) as llm:
        with pytest.raises(ServerError) as info:
            await invoke(llm, sync)
    text = str(info.value)
    assert "502" in text
    assert "upstream exploded" in text
    assert "<" not in text


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    "fault",
    [
        Fault(garbage=True),
        Fault(body={"id": "x", "object": "chat.completion"}),
        Fault(body={"choices": []}),
        Fault(body={"choices": [None]}),
        Fault(inband_error="overloaded"),
    ],
    ids=["garbage", "no-choices", "empty-choices", "null-choice", "error-object"],
)
async def test_gateway_unusable_2xx_is_a_response_error(
    gateway: OfflineGateway, sync: bool, fault: Fault
) -> None:
    gateway.faults.add(fault)
    async with live_llm(gateway.url) as llm:
        with pytest.raises(ResponseError):
            await invoke(llm, sync)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_unknown_model_is_not_found(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url, "offline/no-such-model") as llm:
        with pytest.raises(NotFoundError, match="404") as info:
            await invoke(llm, sync)
    assert "offline/no-such-model" in str(info.value)
    assert len(gateway.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_unexpected_exceptions_from_our_side_are_not_swallowed(sync: bool) -> None:
    """A bug in a transport is not dressed up as a connection error (only httpx2's errors are)."""

    def broken(request: httpx2.Request) -> httpx2.Response:
        raise ZeroDivisionError("a bug")

    async with mock_llm(broken) as llm:
        with pytest.raises(ZeroDivisionError):
            await invoke(llm, sync)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": True, "completion_tokens": 2},
        {"prompt_tokens": 3, "completion_tokens": -2},
        {"prompt_tokens": 3.0, "completion_tokens": 2.0},
    ],
    ids=["bool", "negative", "float"],
)
async def test_token_counts_that_are_not_counts_mean_unknown_usage(sync: bool, usage: dict[str, Any]) -> None:
    async with mock_llm(Recorder(_ok(completion(usage=usage)))) as llm:
        response = await invoke(llm, sync)
    assert response.usage is None
    assert response.metadata["usageKnown"] is False
    assert [type(response.metadata[k]) for k in ("inputTokens", "outputTokens", "totalTokens")] == [int] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_content_parts_and_finish_reason_are_read_defensively(sync: bool) -> None:
    parts = [{"type": "text", "text": None}, {"type": "image_url"}, {"type": "text", "text": "hi"}]
    body = {"choices": [{"message": {"content": parts}, "finish_reason": 5}]}
    async with mock_llm(Recorder(_ok(body))) as llm:
        response = await invoke(llm, sync)
    assert response.content == "hi"  # not "Nonehi"
    assert response.finish_reason is None


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_cut_non_streaming_answer_is_a_connection_error_and_is_retried(
    gateway: OfflineGateway, sync: bool
) -> None:
    gateway.faults.add(Fault(cut_after=1, times=3))
    async with live_llm(gateway.url) as llm:
        with pytest.raises(APIConnectionError, match="was cut off: the connection closed before"):
            await invoke(llm, sync)
        assert len(gateway.requests) == 3
        gateway.faults.add(Fault(cut_after=1))
        assert (await invoke(llm, sync)).content  # one cut, then the retry succeeds
    assert len(gateway.requests) == 5


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_an_unreachable_gateway_says_how_often_it_was_tried_and_what_to_check(sync: bool) -> None:
    async with live_llm(_closed_port_url()) as llm:  # NO_WAIT: 2 retries, no sleeping
        with pytest.raises(APIConnectionError) as caught:
            await invoke(llm, sync)
    message = str(caught.value)
    assert message.startswith("could not reach http://127.0.0.1:")
    assert "tried 3 times (max_retries=2)" in message
    assert "gateway is running" in message and "FLOTORCH_BASE_URL" in message


def test_a_batch_item_says_how_often_the_batch_tried_it() -> None:
    llm = flotorch_nb.FlotorchLLM("m", "k-123456", _closed_port_url(), retry=flotorch_nb.RetryPolicy(1, 0, 0))
    with llm:
        result = llm.batch(["hello"], progress=False)
    assert "tried 2 times (max_retries=1)" in str(result[0].error)  # the batch's count, not its sender's
    assert str(result[0].error).count("tried") == 1
