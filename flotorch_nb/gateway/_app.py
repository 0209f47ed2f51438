"""The starlette app: HTTP routes around the pure core (validation, offline models, wire format, faults).

Routes (all JSON unless noted; every response carries ``x-flotorch-gateway: offline`` and
``x-request-id: req_<hex>``):

- ``POST /api/openai/v1/chat/completions`` (Bearer auth): OpenAI-compatible chat completions,
  streamed as SSE when ``stream`` is true; successful answers add ``x-gateway-total-latency`` (ms).
- ``GET /api/openai/v1/models`` (Bearer auth): the offline models in OpenAI's list format.
- ``POST`` / ``DELETE`` / ``GET /_offline/faults`` (Bearer auth): queue, clear, list injected faults.
- ``GET /health`` and ``GET /``: liveness and a short self-description, without auth.

The API key is compared, never stored in a response, a log line or a recorded request.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._faults import Fault, FaultPlan, stream_script
from ._models import OFFLINE_MODELS, plan_completion
from ._record import RecordedRequest, redacted
from ._validate import ChatRequest, parse_request
from ._wire import (
    GatewayError,
    Plan,
    completion_body,
    error_body,
    error_type,
    html_error_page,
    models_body,
    stream_events,
)

__all__ = ["CHAT_PATH", "RecordedRequest", "StreamCut", "create_app"]

CHAT_PATH = "/api/openai/v1/chat/completions"
MODELS_PATH = "/api/openai/v1/models"
FAULTS_PATH = "/_offline/faults"
_GARBAGE = b"<html>502 upstream said: this body is not JSON {{{"
_BAD_JSON = "The request body is not valid JSON ({}). Send a JSON object with 'model' and 'messages'."
logger = logging.getLogger("flotorch_nb.gateway")


class StreamCut(Exception):
    """Raised inside a response body on purpose, so the server drops the connection mid-body."""


def create_app(
    *,
    api_key: str | None = None,
    token_delay: float = 0.0,
    faults: FaultPlan | None = None,
    requests: list[RecordedRequest] | None = None,
    record: bool = True,
) -> Starlette:
    """Build the offline gateway's ASGI app.

    ``api_key`` None accepts any non-empty Bearer key. ``token_delay`` is the pause between streamed
    chunks (seconds). ``faults`` and ``requests`` are shared with the caller (``app.state`` holds
    them too); ``record=False`` keeps no request log, for long-running servers and benchmarks.
    """
    handlers = _Handlers(
        api_key=api_key,
        token_delay=token_delay,
        faults=faults if faults is not None else FaultPlan(),
        requests=(requests if requests is not None else []) if record else None,
    )
    routes = [
        Route(CHAT_PATH, handlers.chat, methods=["POST"]),
        Route(MODELS_PATH, handlers.models, methods=["GET"]),
        Route(FAULTS_PATH, handlers.add_faults, methods=["POST"]),
        Route(FAULTS_PATH, handlers.clear_faults, methods=["DELETE"]),
        Route(FAULTS_PATH, handlers.list_faults, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/", handlers.index, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Stamp)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.faults = handlers.faults
    app.state.requests = handlers.requests
    app.state.settings = handlers  # .token_delay can be changed while serving
    return app


class _Stamp:
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
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        except Exception as exc:
            if started or isinstance(exc, StreamCut):
                raise
            logger.exception("offline gateway bug while answering %s", scope.get("path"))
            body = error_body(f"The offline gateway failed: {type(exc).__name__}", "server_error")
            await JSONResponse(body, status_code=500)(scope, receive, stamped)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer in OpenAI's error shape too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        message = (
            f"Unknown path {request.url.path!r} on the offline gateway; chat completions live at {CHAT_PATH}."
        )
    else:
        message = f"{request.method} is not allowed on {request.url.path!r}."
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else None
    return JSONResponse(error_body(message, error_type(status)), status_code=status, headers=headers)


def _latency(request: Request) -> dict[str, str]:
    started: float = request.scope["state"]["started"]
    return {"x-gateway-total-latency": f"{(time.perf_counter() - started) * 1000:.3f}"}


class _Handlers:
    """The route handlers and the state they share (key, default token delay, faults, request log)."""

    def __init__(
        self,
        *,
        api_key: str | None,
        token_delay: float,
        faults: FaultPlan,
        requests: list[RecordedRequest] | None,
    ) -> None:
        self._api_key = api_key.encode() if api_key is not None else None
        self.token_delay = token_delay
        self.faults = faults
        self.requests = requests

    # -- shared steps ----------------------------------------------------------------------------
    def _auth_error(self, request: Request) -> Response | None:
        header = request.headers.get("authorization")
        if not header:
            message = "Missing API key: send the header 'Authorization: Bearer <your FloTorch API key>'."
            return _error(401, message, code="missing_api_key")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            message = "Malformed Authorization header: expected 'Bearer <your FloTorch API key>'."
            return _error(401, message, code="invalid_api_key")
        if self._api_key is not None and not hmac.compare_digest(token.encode(), self._api_key):
            message = (
                "Incorrect API key provided (not shown). Use the key this offline gateway was started with."
            )
            return _error(401, message, code="invalid_api_key")
        return None

    async def _read_json(self, request: Request) -> tuple[Any, GatewayError | None]:
        raw = await request.body()
        try:
            return json.loads(raw), None
        except ValueError as exc:
            return None, GatewayError(400, _BAD_JSON.format(exc), code="invalid_json")
        finally:
            self._record(request, raw)

    def _record(self, request: Request, raw: bytes | None) -> None:
        if self.requests is not None:
            rid = request.scope["state"]["request_id"]
            self.requests.append(
                redacted(request.method, request.url.path, request.headers.items(), raw, rid)
            )

    # -- routes ----------------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        """POST /api/openai/v1/chat/completions."""
        raw = await request.body()
        self._record(request, raw)
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        try:
            chat, plan = _planned(raw) if len(raw) <= _CACHEABLE else _plan(raw)
        except GatewayError as exc:
            return _error_response(exc)
        except ValueError as exc:  # JSON syntax or encoding
            return _error(400, _BAD_JSON.format(exc), code="invalid_json")
        fault = self.faults.take(chat.model) if self.faults else None
        if fault is not None:
            return await self._faulty(request, chat, plan, fault)
        return self._answer(request, chat, plan, None)

    def _answer(self, request: Request, chat: ChatRequest, plan: Plan, fault: Fault | None) -> Response:
        rid: str = request.scope["state"]["request_id"]
        completion_id = "chatcmpl-offline-" + rid.removeprefix("req_")
        created = int(time.time())
        usage = "omit" if fault and fault.omit_usage else "null" if fault and fault.null_usage else "normal"
        headers = _latency(request)
        if fault is not None and fault.retry_after is not None:
            headers["retry-after"] = fault.retry_after
        if not chat.stream:
            if fault is not None and fault.inband_error is not None:
                return JSONResponse(error_body(fault.inband_error, "server_error"), headers=headers)
            payload = completion_body(plan, completion_id, created, usage=usage)
            if fault is not None and fault.cut_after is not None:
                return _cut_json(payload, headers)
            return JSONResponse(payload, headers=headers)
        events = stream_events(plan, completion_id, created, include_usage=chat.include_usage, usage=usage)
        script, abort = stream_script(events, fault)
        delay = self.token_delay if chat.token_delay is None else chat.token_delay
        headers["cache-control"] = "no-cache"
        return StreamingResponse(
            _send_events(script, delay, abort), media_type="text/event-stream", headers=headers
        )

    async def _faulty(self, request: Request, chat: ChatRequest, plan: Plan, fault: Fault) -> Response:
        if fault.delay:
            await _pause_unless_gone(request, fault.delay)
        status = fault.status if fault.status is not None else (502 if fault.html else None)
        headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
        if status is not None:
            message = fault.message or f"Injected fault: HTTP {status} from the offline gateway."
            if fault.html:
                return HTMLResponse(html_error_page(status, message), status_code=status, headers=headers)
            return JSONResponse(error_body(message, error_type(status)), status_code=status, headers=headers)
        if fault.garbage:
            return Response(_GARBAGE, media_type="application/json", headers=headers)
        if fault.body is not None:
            return JSONResponse(fault.body, headers={**headers, **_latency(request)})
        return self._answer(request, chat, plan, fault)

    async def models(self, request: Request) -> Response:
        """GET /api/openai/v1/models."""
        self._record(request, None)
        return self._auth_error(request) or JSONResponse(models_body(OFFLINE_MODELS))

    async def add_faults(self, request: Request) -> Response:
        """POST /_offline/faults with a JSON list of faults (or one fault object)."""
        body, bad_json = await self._read_json(request)
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        if bad_json is not None:
            return _error_response(bad_json)
        items = [body] if isinstance(body, Mapping) else body
        if not isinstance(items, list):
            return _error(400, 'Send a JSON list of faults, e.g. [{"status": 429, "retry_after": "1"}].')
        try:
            faults = [Fault.from_dict(item) for item in items]
        except (TypeError, ValueError) as exc:
            return _error(400, f"Invalid fault: {exc}")
        self.faults.add(*faults)
        return JSONResponse({"added": len(faults), "pending": len(self.faults)})

    async def clear_faults(self, request: Request) -> Response:
        """DELETE /_offline/faults."""
        self._record(request, None)
        return self._auth_error(request) or JSONResponse({"cleared": self.faults.clear()})

    async def list_faults(self, request: Request) -> Response:
        """GET /_offline/faults: the pending faults, next to apply first."""
        self._record(request, None)
        denied = self._auth_error(request)
        return denied or JSONResponse(
            {"object": "list", "data": [f.to_dict() for f in self.faults.pending()]}
        )

    async def health(self, request: Request) -> Response:
        """GET /health."""
        return JSONResponse({"status": "ok", "gateway": "offline"})

    async def index(self, request: Request) -> Response:
        """GET /: say what this server is, for a person who opens it in a browser."""
        return JSONResponse(
            {
                "gateway": "offline",
                "description": "FloTorch OFFLINE gateway: deterministic local models, no real LLM.",
                "chat_completions": CHAT_PATH,
                "models": list(OFFLINE_MODELS),
            }
        )


def _plan(raw: bytes) -> tuple[ChatRequest, Plan]:
    """Validate and answer a raw body; ValueError for bad JSON, GatewayError for a bad request."""
    chat = parse_request(json.loads(raw), OFFLINE_MODELS)
    return chat, plan_completion(chat)


# The models are deterministic, so a body seen before (a benchmark's loop, a retried request) reuses
# its answer instead of being parsed and planned again. Errors are not cached; big bodies are not either.
_planned = functools.lru_cache(maxsize=256)(_plan)
_CACHEABLE = 64 * 1024


def _error(status: int, message: str, *, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type(status), code=code), status_code=status)


def _error_response(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _pause_unless_gone(request: Request, seconds: float) -> None:
    """Sleep ``seconds``, but stop as soon as the client disconnects (so shutdown is never held up)."""

    async def until_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        async with asyncio.timeout(seconds):
            await until_disconnect()
    except TimeoutError:
        pass


async def _send_events(script: list[str], delay: float, abort: bool) -> AsyncIterator[str]:
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


def _cut_json(payload: dict[str, Any], headers: dict[str, str]) -> Response:
    text = json.dumps(payload)

    async def half() -> AsyncIterator[str]:
        yield text[: len(text) // 2]
        raise StreamCut("offline gateway fault: connection cut mid-body")

    return StreamingResponse(half(), media_type="application/json", headers=headers)
