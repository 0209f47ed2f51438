"""ASGI plumbing of the offline gateway: the stamping middleware and the responses it sends.

- ``MarkResponses`` gives every response a request id and the offline marker, turns a bug into a JSON 500
  (logged as a bug, with its traceback), and treats a client that hung up before its request was
  read as what it is: a quiet DEBUG line, not a bug.
- ``JSON`` renders any text the gateway was sent (a lone surrogate from a badly encoded file name
  cannot be UTF-8: it is sent as a ``\\\\uXXXX`` escape instead of failing).
- ``pause_unless_gone``, ``send_events`` and ``cut_json`` pace answers, stream SSE and break
  connections on purpose (``StreamCut``) for fault injection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._wire import CHAT_PATH, GatewayError, error_body, error_type

__all__ = [
    "JSON",
    "MarkResponses",
    "StreamCut",
    "cut_json",
    "http_error",
    "pause_unless_gone",
    "refused",
    "send_events",
]

logger = logging.getLogger("flotorch_nb.gateway")


class StreamCut(Exception):
    """Raised inside a response body on purpose, so the server drops the connection mid-body."""


class JSON(JSONResponse):
    """A JSON response that can carry any string it was given (see the module docstring)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


class MarkResponses:
    """Raw ASGI middleware: request id + offline marker on every response, JSON 500s for bugs.

    A plain ASGI wrapper (not BaseHTTPMiddleware) so streaming stays unbuffered and cheap.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(12)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = time.perf_counter()
        extra = [(b"x-flotorch-gateway", b"offline"), (b"x-request-id", request_id.encode())]
        started = False

        async def stamped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # Headers a handler decided along the way (the rate limit's) ride every answer it sends.
                decided = [(k.encode(), v.encode()) for k, v in state.get("headers", {}).items()]
                message = {**message, "headers": [*message.get("headers", ()), *extra, *decided]}
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        except ClientDisconnect:
            # Nobody is left to answer, and nothing is wrong with the gateway: not worth a traceback.
            logger.debug("client disconnected before %s %s was read", scope.get("method"), scope.get("path"))
        except Exception as exc:
            if started or isinstance(exc, StreamCut):
                raise
            logger.exception("offline gateway bug while answering %s", scope.get("path"))
            body = error_body(f"The offline gateway failed: {type(exc).__name__}", "server_error")
            await JSON(body, status_code=500)(scope, receive, stamped)


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer in OpenAI's error shape too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        message = (
            f"Unknown path {request.url.path!r} on the offline gateway; chat completions live at {CHAT_PATH}."
        )
    else:
        message = f"{request.method} is not allowed on {request.url.path!r}."
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    return JSON(error_body(message, error_type(status)), status_code=status, headers=headers)


async def refused(request: Request, exc: Exception) -> Response:
    """A :class:`GatewayError` raised while answering, as its OpenAI-style error response."""
    assert isinstance(exc, GatewayError)  # the handler is registered for it alone
    return JSON(exc.body(), status_code=exc.status, headers=exc.headers)


async def pause_unless_gone(request: Request, seconds: float) -> None:
    """Sleep ``seconds``, but stop as soon as the client disconnects (so shutdown is never held up)."""

    async def until_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        async with asyncio.timeout(seconds):
            await until_disconnect()
    except TimeoutError:
        pass


async def send_events(script: list[str], delay: float, abort: bool) -> AsyncIterator[str]:
    """Yield SSE events with ``delay`` between them; raise :class:`StreamCut` at the end if ``abort``."""
    if delay <= 0:
        # No pacing wanted: one write instead of one per token keeps benchmarks fast.
        if script:
            yield "".join(script)
    else:
        for index, event in enumerate(script):
            if index:
                await asyncio.sleep(delay)
            yield event
    if abort:
        raise StreamCut("offline gateway fault: connection cut mid-stream")


def cut_json(payload: dict[str, Any], headers: dict[str, str]) -> Response:
    """A JSON body that breaks off halfway (fault injection)."""
    text = json.dumps(payload)

    async def half() -> AsyncIterator[str]:
        yield text[: len(text) // 2]
        raise StreamCut("offline gateway fault: connection cut mid-body")

    return StreamingResponse(half(), media_type="application/json", headers=headers)
