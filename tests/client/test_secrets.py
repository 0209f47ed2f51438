"""The API key never shows: not in reprs, responses, exceptions (even when a gateway echoes it back),
log records at any level, or stdout/stderr; and logging says what a person needs at DEBUG only."""

from __future__ import annotations

import json
import logging
import pickle
import traceback
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from flotorch_nb import FlotorchError, FlotorchLLM
from flotorch_nb._config import Secret
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import (
    KEY,
    MOCK_URL,
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

LOGGERS = ("flotorch_nb", "httpx2", "httpcore2", "")
PROMPT_TEXT = "my private prompt 7f3a"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of the client's, httpx2's, httpcore2's and the root logger, at DEBUG."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def _everything(error: BaseException) -> str:
    """What a person could ever see of an exception: str, repr, attributes, the whole traceback chain."""
    parts = ["".join(traceback.format_exception(error)), repr(error), str(error)]
    parts += [repr(v) for v in vars(error).values()]
    cause = error.__cause__ or error.__context__
    while cause is not None:
        parts += [repr(cause), str(cause)]
        cause = cause.__cause__ or cause.__context__
    return "\n".join(parts)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )


def test_the_client_never_shows_its_key() -> None:
    llm = FlotorchLLM("m", KEY, MOCK_URL)
    for text in (repr(llm), str(llm), repr(vars(llm)), repr(llm._settings), str(llm._settings)):
        assert KEY not in text
    assert "***" in repr(llm)
    other = llm.with_model("m2")
    assert KEY not in repr(other) + repr(vars(other))


def test_the_secret_type() -> None:
    secret = Secret(KEY)
    assert KEY not in repr(secret) + str(secret) + f"{secret}"
    assert secret.get_secret_value() == KEY
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def _echo_headers(status: int, *, html: bool = False) -> Any:
    """A gateway that echoes the Authorization header back in its error message."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        auth = request.headers["authorization"]
        if html:
            page = f"<html><title>{status}</title><body><p>Denied for {auth}</p></body></html>"
            return httpx2.Response(status, content=page.encode(), headers={"content-type": "text/html"})
        body = {"error": {"message": f"key {auth} is not valid", "received": {"authorization": auth}}}
        return httpx2.Response(status, json=body, headers={"x-request-id": "req-1"})

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 429, 500, 503])
@pytest.mark.parametrize("html", [False, True], ids=["json", "html"])
async def test_a_gateway_echoing_the_key_in_an_error_does_not_leak_it(
    sync: bool,
    status: int,
    html: bool,
    all_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with mock_llm(_echo_headers(status, html=html)) as llm:
        with pytest.raises(FlotorchError) as info:
            await invoke(llm, sync)
    assert KEY not in _everything(info.value)
    assert str(status) in str(info.value)
    assert KEY not in _log_text(all_logs)
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err


def _echo_in_2xx(kind: str) -> Any:
    def handler(request: httpx2.Request) -> httpx2.Response:
        auth = request.headers["authorization"]
        if kind == "garbage":
            return httpx2.Response(200, content=f"oops {auth} oops".encode())
        if kind == "error-object":
            return httpx2.Response(200, json={"error": {"message": f"upstream rejected {auth}"}})
        if kind == "not-object":
            return httpx2.Response(200, json=[auth])
        if kind == "bad-tool-call":
            message = {"role": "assistant", "content": None, "tool_calls": [{"id": auth}]}
            return httpx2.Response(200, json={"choices": [{"message": message}]})
        if kind == "inband":
            return sse_response(sse(chunk("a"), {"error": {"message": f"failed for {auth}"}}))
        if kind == "malformed":
            return sse_response(sse(chunk("a"), f"{{{auth}"))
        if kind == "bad-fragment":
            return sse_response(sse(chunk(tool_calls=[auth])))
        raise AssertionError(kind)

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    "kind", ["garbage", "error-object", "not-object", "bad-tool-call", "inband", "malformed", "bad-fragment"]
)
async def test_a_2xx_answer_echoing_the_key_does_not_leak_it_in_errors(
    sync: bool, kind: str, all_logs: pytest.LogCaptureFixture
) -> None:
    async with mock_llm(_echo_in_2xx(kind)) as llm:
        with pytest.raises(FlotorchError) as info:
            if kind in ("inband", "malformed", "bad-fragment"):
                await stream(llm, sync)
            else:
                await invoke(llm, sync)
    assert KEY not in _everything(info.value)
    assert KEY not in _log_text(all_logs)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_responses_and_logs_of_a_normal_call_never_show_the_key(
    gateway: OfflineGateway,
    sync: bool,
    all_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with live_llm(gateway.url) as llm:
        response = await invoke(llm, sync, [{"role": "user", "content": PROMPT_TEXT}])
        _, streamed = await stream(llm, sync, [{"role": "user", "content": PROMPT_TEXT}])
        print(response, streamed, repr(llm))
    for value in (response, streamed):
        shown = [repr(value), str(value), json.dumps(value.metadata, default=str), value._repr_mimebundle_()]
        assert KEY not in "".join(map(str, shown))
    assert KEY not in _log_text(all_logs)
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err
    assert all_logs.records  # there was something to check


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_failures_over_loopback_never_show_the_key(
    gateway: OfflineGateway, sync: bool, all_logs: pytest.LogCaptureFixture
) -> None:
    faults = [Fault(status=503, times=3), Fault(cut_after=2), Fault(delay=5.0, times=3), Fault(status=401)]
    errors = []
    async with live_llm(gateway.url, timeout=0.1) as llm:
        for fault in faults:
            gateway.faults.add(fault)
            with pytest.raises(FlotorchError) as info:
                if fault.cut_after:
                    await stream(llm, sync)
                else:
                    await invoke(llm, sync)
            errors.append(info.value)
    assert len(gateway.requests) == 3 + 1 + 3 + 1
    for error in errors:
        assert KEY not in _everything(error)
    assert KEY not in _log_text(all_logs)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_debug_logs_say_request_status_latency_and_tokens(
    gateway: OfflineGateway, sync: bool, all_logs: pytest.LogCaptureFixture
) -> None:
    async with live_llm(gateway.url) as llm:
        response = await invoke(llm, sync, [{"role": "user", "content": PROMPT_TEXT}])
    ours = [r for r in all_logs.records if r.name == "flotorch_nb"]
    debug = "\n".join(r.getMessage() for r in ours if r.levelno == logging.DEBUG)
    assert f"POST {llm.url}" in debug
    assert "200" in debug
    assert " ms" in debug
    assert f"{response.metadata['totalTokens']} tokens" in debug
    # No message bodies (prompt or answer) above DEBUG, from any logger.
    loud = "\n".join(r.getMessage() for r in all_logs.records if r.levelno > logging.DEBUG)
    assert PROMPT_TEXT not in loud
    assert response.content not in loud or not response.content


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_retry_is_logged_without_bodies(sync: bool, all_logs: pytest.LogCaptureFixture) -> None:
    handler = Recorder(
        httpx2.Response(503, json={"error": {"message": "busy"}}),
        httpx2.Response(200, json=completion("the secret answer 99")),
    )
    async with mock_llm(handler) as llm:
        await invoke(llm, sync, [{"role": "user", "content": PROMPT_TEXT}])
    retry_records = [r for r in all_logs.records if r.name == "flotorch_nb" and "retrying" in r.getMessage()]
    assert len(retry_records) == 1
    assert "503" in retry_records[0].getMessage()
    loud = "\n".join(r.getMessage() for r in all_logs.records if r.levelno > logging.DEBUG)
    assert PROMPT_TEXT not in loud
    assert "the secret answer 99" not in loud


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_traceback_with_locals_does_not_show_the_key(sync: bool) -> None:
    """IPython's verbose tracebacks and ``pytest --showlocals`` print every frame's local reprs."""
    async with mock_llm(Recorder(httpx2.Response(401, json={"error": {"message": "no"}}))) as llm:
        with pytest.raises(FlotorchError) as info:
            await invoke(llm, sync)
    shown = "".join(traceback.TracebackException.from_exception(info.value, capture_locals=True).format())
    assert "call = Call(" in shown  # the frames of our send loop are there
    assert KEY not in shown


def test_no_handler_is_installed_on_import() -> None:
    """A library logs, the application decides where: only a NullHandler at most."""
    handlers = logging.getLogger("flotorch_nb").handlers
    assert all(isinstance(h, logging.NullHandler) for h in handlers)
