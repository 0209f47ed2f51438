"""The starlette app: HTTP routes around the pure core (validation, offline models, wire format, faults).

Routes (all JSON unless noted; every response carries ``x-flotorch-gateway: offline`` and
``x-request-id: req_<hex>``):

- ``POST /api/openai/v1/chat/completions`` (Bearer auth): OpenAI-compatible chat completions,
  streamed as SSE when ``stream`` is true; successful answers add ``x-gateway-total-latency`` (ms).
  Every answer of a valid request waits the gateway's ``latency`` (scaled per model) before its first
  byte, without blocking other requests; refusals (401, 400, 404) come at once.
- ``GET /api/openai/v1/models`` (Bearer auth): the offline models in OpenAI's list format.
- ``POST`` / ``DELETE`` / ``GET /_offline/faults`` (Bearer auth): queue, clear, list injected faults.
- ``POST`` / ``DELETE`` / ``GET /_offline/limits`` (Bearer auth): set (``{"rpm": n, "tpm": n, "window":
  s}``), lift or read the hidden rate limit every key gets (see ``_ratelimit``): 429s with
  ``Retry-After`` and ``x-ratelimit-*`` headers, which successful answers carry too while it is set.
- ``GET`` / ``DELETE /_offline/requests/counts`` (Bearer auth): how many times each chat request was
  received, by replay's request key (``{"counts": {key: n}, "total": n}``); clear them.
- ``GET /health`` and ``GET /``: liveness and a short self-description, without auth.

A body nested too deeply to parse is a 400 saying so, not a 500. The API key is compared, never
stored in a response, a log line or a recorded request.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from .._request_key import canonical_request, endpoint_path, request_key
from ._asgi import (
    JSON,
    MarkResponses,
    StreamCut,
    cut_json,
    http_error,
    pause_unless_gone,
    refused,
    send_events,
)
from ._faults import Fault, FaultPlan, stream_script
from ._models import OFFLINE_MODELS, plan_completion, profile
from ._ratelimit import Admission, RateLimit, RateLimiter
from ._record import RecordedRequest, RequestCounts, redacted
from ._scripted import SCRIPTED_MODEL, parse_script
from ._validate import ChatRequest, parse_request
from ._wire import (
    CHAT_PATH,
    GatewayError,
    Plan,
    between_or,
    completion_body,
    error_body,
    html_error_page,
    models_body,
    stream_events,
)

__all__ = ["CHAT_PATH", "RecordedRequest", "StreamCut", "check_seconds", "create_app"]

MODELS_PATH = "/api/openai/v1/models"
FAULTS_PATH = "/_offline/faults"
COUNTS_PATH = "/_offline/requests/counts"
LIMITS_PATH = "/_offline/limits"
_GARBAGE = b"<html>502 upstream said: this body is not JSON {{{"
_BAD_JSON = "The request body is not valid JSON ({}). Send a JSON object with 'model' and 'messages'."
_TOO_DEEP = (
    "The request body is nested too deeply to read (lists or objects inside each other thousands of "
    "levels deep). Send a JSON object with 'model' and 'messages'."
)


def check_seconds(name: str, value: float) -> float:
    """A finite number of seconds >= 0, else ``ValueError`` naming ``name``."""
    seconds = between_or(value)
    if seconds is None:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def create_app(
    *,
    api_key: str | None = None,
    token_delay: float = 0.0,
    latency: float = 0.0,
    record: bool = False,
    limiter: RateLimiter | None = None,
) -> Starlette:
    """Build the offline gateway's ASGI app.

    ``api_key`` None accepts any non-empty Bearer key. ``token_delay`` is the pause between streamed
    chunks and ``latency`` the wait before an answer's first byte (seconds; both scaled per model,
    see ``_models.PROFILES``). What the app shares with whoever serves it is on ``app.state``:
    ``faults`` (a :class:`FaultPlan`), ``requests`` (the received requests, kept only with
    ``record=True``, for tests that assert what was sent: a long-running gateway must not grow with
    every chat turn), ``counts`` (how many times each request arrived: always kept, a dict of ints),
    ``limiter`` (the hidden rate limit, none by default) and ``settings`` (the delays).
    """
    h = _Handlers(
        api_key=api_key.encode() if api_key is not None else None,
        token_delay=check_seconds("token_delay", token_delay),
        latency=check_seconds("latency", latency),
        faults=FaultPlan(),
        requests=[] if record else None,
        counts=RequestCounts(),
        limiter=limiter if limiter is not None else RateLimiter(),
    )
    index = {
        "gateway": "offline",
        "description": "FloTorch OFFLINE gateway: deterministic local models, no real LLM.",
        "chat_completions": CHAT_PATH,
        "models": list(OFFLINE_MODELS),
    }

    def counted() -> dict[str, Any]:
        counts = h.counts.snapshot()
        return {"counts": counts, "total": sum(counts.values())}

    routes = [
        Route(CHAT_PATH, h.chat, methods=["POST"]),
        Route(FAULTS_PATH, h.add_faults, methods=["POST"]),  # a JSON list of faults, or one fault
        Route(MODELS_PATH, h.plain(lambda: models_body(OFFLINE_MODELS))),
        Route(FAULTS_PATH, h.plain(lambda: {"cleared": h.faults.clear()}), methods=["DELETE"]),
        Route(
            FAULTS_PATH,
            h.plain(lambda: {"object": "list", "data": [f.to_dict() for f in h.faults.pending()]}),
        ),
        Route(LIMITS_PATH, h.set_limit, methods=["POST"]),
        Route(LIMITS_PATH, h.plain(lambda: {"limit": h.limit_dict()})),
        Route(LIMITS_PATH, h.plain(lambda: {"cleared": h.lift_limit()}), methods=["DELETE"]),
        Route(COUNTS_PATH, h.plain(counted, record=False)),  # chat requests received, by request key
        Route(COUNTS_PATH, h.plain(lambda: {"cleared": h.counts.clear()}, record=False), methods=["DELETE"]),
        Route("/health", h.plain(lambda: {"status": "ok", "gateway": "offline"}, auth=False, record=False)),
        # what this server is, for a person who opens it in a browser
        Route("/", h.plain(lambda: index, auth=False, record=False)),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(MarkResponses)],
        exception_handlers={HTTPException: http_error, GatewayError: refused},
    )
    app.state.faults = h.faults
    app.state.requests = h.requests
    app.state.counts = h.counts
    app.state.limiter = h.limiter
    app.state.settings = h  # .token_delay and .latency can be changed while serving
    return app


def _latency(request: Request) -> dict[str, str]:
    started: float = request.scope["state"]["started"]
    return {"x-gateway-total-latency": f"{(time.perf_counter() - started) * 1000:.3f}"}


@dataclasses.dataclass(eq=False)
class _Handlers:
    """The route handlers and the state they share (key, delays, faults, request log and counts)."""

    api_key: bytes | None = dataclasses.field(repr=False)  # never in a repr
    token_delay: float
    latency: float
    faults: FaultPlan
    requests: list[RecordedRequest] | None
    counts: RequestCounts
    limiter: RateLimiter

    # -- shared steps ----------------------------------------------------------------------------
    def _authorize(self, request: Request) -> str:
        """The request's Bearer key (what its rate limit is counted by); 401 without the right one."""
        header = request.headers.get("authorization")
        if not header:
            message = "Missing API key: send the header 'Authorization: Bearer <your FloTorch API key>'."
            raise GatewayError(401, message, code="missing_api_key")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            message = "Malformed Authorization header: expected 'Bearer <your FloTorch API key>'."
            raise GatewayError(401, message, code="invalid_api_key")
        if self.api_key is not None and not hmac.compare_digest(token.encode(), self.api_key):
            message = (
                "Incorrect API key provided (not shown). Use the key this offline gateway was started with."
            )
            raise GatewayError(401, message, code="invalid_api_key")
        return token

    async def _control_body(self, request: Request) -> Any:
        """A control endpoint's JSON body (the key is checked first, then the JSON)."""
        raw = await request.body()
        self._record(request, raw)
        self._authorize(request)
        return _decoded(raw)

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
        received = read_chat(request.url.path, request.scope["query_string"], raw)
        self.counts.add(received.key)
        self._record(request, raw)
        key = self._authorize(request)
        chat, plan, scripted = received.planned()
        admission = self.limiter.admit(key, plan.prompt_tokens + plan.completion_tokens)
        if admission is not None:
            request.scope["state"]["headers"] = admission.headers
            if not admission.admitted:
                raise _limited(admission)
        timing = profile(chat.model)
        if self.latency > 0 and timing.latency_factor > 0:
            await pause_unless_gone(request, self.latency * timing.latency_factor)
        fault = self.faults.take(chat.model) or scripted  # take() is cheap when nothing is queued
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
                return JSON(error_body(fault.inband_error, "server_error"), headers=headers)
            payload = completion_body(plan, completion_id, created, usage=usage)
            if fault is not None and fault.cut_after is not None:
                return cut_json(payload, headers)
            return JSON(payload, headers=headers)
        events = stream_events(plan, completion_id, created, include_usage=chat.include_usage, usage=usage)
        script, abort = stream_script(events, fault)
        if chat.token_delay is not None:  # asked for by the request: taken as given
            delay = chat.token_delay
        else:
            delay = self.token_delay * profile(chat.model).token_delay_factor
        headers["cache-control"] = "no-cache"
        return StreamingResponse(
            send_events(script, delay, abort), media_type="text/event-stream", headers=headers
        )

    async def _faulty(self, request: Request, chat: ChatRequest, plan: Plan, fault: Fault) -> Response:
        if fault.delay:
            await pause_unless_gone(request, fault.delay)
        status = fault.status if fault.status is not None else (502 if fault.html else None)
        headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
        if status is not None:
            message = fault.message or f"Injected fault: HTTP {status} from the offline gateway."
            if fault.html:
                return HTMLResponse(html_error_page(status, message), status_code=status, headers=headers)
            raise GatewayError(status, message, headers=headers)
        if fault.garbage:
            return Response(_GARBAGE, media_type="application/json", headers=headers)
        if fault.body is not None:
            return JSON(fault.body, headers={**headers, **_latency(request)})
        return self._answer(request, chat, plan, fault)

    def plain(
        self, answer: Callable[[], Any], *, auth: bool = True, record: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """An endpoint that answers ``answer()`` as JSON (after the key check, when ``auth``)."""

        async def endpoint(request: Request) -> Response:
            if record:
                self._record(request, None)
            if auth:
                self._authorize(request)
            return JSON(answer())

        return endpoint

    def limit_dict(self) -> dict[str, Any] | None:
        limit = self.limiter.limit
        return limit.to_dict() if limit is not None else None

    def lift_limit(self) -> bool:
        had = self.limiter.limit is not None
        self.limiter.set(None)
        return had

    async def set_limit(self, request: Request) -> Response:
        """POST /_offline/limits with ``{"rpm": n, "tpm": n, "window": seconds}`` (a rate may be left out)."""
        body = await self._control_body(request)
        try:
            limit = RateLimit.from_dict(body)
        except (TypeError, ValueError) as exc:
            raise GatewayError(
                400, f'Invalid rate limit: {exc}. Send e.g. {{"rpm": 600, "tpm": 100000}}.'
            ) from None
        self.limiter.set(limit)
        return JSON({"limit": limit.to_dict()})

    async def add_faults(self, request: Request) -> Response:
        """POST /_offline/faults with a JSON list of faults (or one fault object)."""
        body = await self._control_body(request)
        items = [body] if isinstance(body, Mapping) else body
        if not isinstance(items, list):
            raise GatewayError(400, 'Send a JSON list of faults, e.g. [{"status": 429, "retry_after": "1"}].')
        try:
            faults = [Fault.from_dict(item) for item in items]
        except (TypeError, ValueError) as exc:
            raise GatewayError(400, f"Invalid fault: {exc}") from None
        self.faults.add(*faults)
        return JSON({"added": len(faults), "pending": len(self.faults)})


def _decoded(raw: bytes) -> Any:
    """A request body's JSON, or the 400 saying why it is not JSON (syntax, encoding, nesting)."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise GatewayError(400, _BAD_JSON.format(exc), code="invalid_json") from None
    except RecursionError:
        raise GatewayError(400, _TOO_DEEP, code="invalid_json") from None


@dataclasses.dataclass(eq=False, slots=True)
class _Received:
    """A chat body, decoded once: its request key (what the counts are kept by) and, once planned, its
    answer (a body that is not JSON keeps the reason instead, refused when it is planned)."""

    key: str
    body: Any  # the JSON value exactly as sent; dropped once planned
    refusal: str | None = None
    answer: tuple[ChatRequest, Plan, Fault | None] | None = None

    def planned(self) -> tuple[ChatRequest, Plan, Fault | None]:
        """The validated request, its answer and the fault its script asks for (``GatewayError`` if bad).

        The fault is what an ``offline/scripted`` script asks to go wrong (delay, error, cut), else None.
        """
        if self.refusal is not None:
            raise GatewayError(400, self.refusal, code="invalid_json")
        # Another gateway's thread may plan the same cached body: the body is read before the answer
        # is looked at, and the answer set before the body is dropped, so either one is always there.
        body = self.body
        if self.answer is None:
            chat = parse_request(body, OFFLINE_MODELS)
            if chat.model == SCRIPTED_MODEL:
                script = parse_script(chat)
                chat = dataclasses.replace(chat, token_delay=script.token_delay)
                self.answer = chat, script.plan, script.fault
            else:
                self.answer = chat, plan_completion(chat), None
            self.body = None
        return self.answer


def _read(target: str, raw: bytes) -> _Received:
    """Decode a chat body once, for both its key and its answer.

    The key reads numbers canonically (``1.0`` is ``1``: see ``_request_key``) and the answer as they
    were sent (``max_tokens: 100.0`` is not an integer): the two readings differ only where a number
    with a fraction or exponent has a whole value, so only such a body is read a second time for its key.
    """
    whole = False

    def number(text: str) -> float:
        nonlocal whole
        value = float(text)
        whole = whole or value.is_integer()
        return value

    body, refusal = None, None
    try:
        body = json.loads(raw, parse_float=number)
    except ValueError as exc:
        refusal = _BAD_JSON.format(exc)
    except RecursionError:
        refusal = _TOO_DEEP
    if refusal is None and not whole:  # the body as sent is its canonical form
        key = request_key({"method": "POST", "path": endpoint_path(target), "body": body})
    else:
        key = request_key(canonical_request(raw, target))
    return _Received(key, body, refusal)


# The models are deterministic, so a body seen before (a benchmark's loop, a retried request) reuses
# its key and answer instead of being read and planned again. A refused body is refused afresh each
# time (no answer is kept for it), and bodies over 8 kB are not cached: a long chat sends a longer
# body every turn, never the same one twice, and caching those made the gateway in a notebook kernel
# grow by megabytes (256 bodies of up to 64 kB, parsed).
_read_cached = functools.lru_cache(maxsize=256)(_read)
_CACHEABLE = 8 * 1024


def read_chat(path: str, query: bytes, raw: bytes) -> _Received:
    """A chat request's body, read once (``path`` as the client sent it, ``query`` raw)."""
    target = f"{path}?{query.decode('latin-1')}" if query else path
    return _read_cached(target, raw) if len(raw) <= _CACHEABLE else _read(target, raw)


def _limited(admission: Admission) -> GatewayError:
    """The 429 of a request over its key's hidden limit (see ``_ratelimit``)."""
    if admission.too_large:
        message = "Request too large for the tokens-per-minute limit of this key: it can never fit."
        return GatewayError(429, message, code="request_too_large")
    ms = math.ceil((admission.retry_after or 0.0) * 1000)  # up: a client that waits this long gets in
    message = f"Rate limit reached for this key (offline gateway's hidden limit). Try again in {ms} ms."
    headers = {"retry-after": f"{ms / 1000:.3f}".rstrip("0").rstrip("."), "retry-after-ms": str(ms)}
    return GatewayError(429, message, code="rate_limit_exceeded", headers=headers)
