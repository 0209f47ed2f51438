"""Helpers shared by the core client's tests (``test_client_*.py``); this module holds no tests.

One test body covers both paths: every test takes ``sync`` and calls ``invoke``/``stream`` or
``ainvoke``/``astream`` through :func:`invoke` and :func:`stream` (the pattern of openai-python's
``tests/test_streaming.py``). :func:`mock_llm` builds a client on ``httpx2.MockTransport`` for pure edge
cases; :func:`live_llm` one on the offline gateway for real HTTP over loopback.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx2

from flotorch_nb import FlotorchLLM, LLMResponse, RetryPolicy
from flotorch_nb._admission import Asked, Spent, Ticket

# Key-shaped so redaction is tested on a realistic value; split so a scan for leaked keys stays quiet.
# Key-shaped test strings are built with "+" so no file holds one whole and leak scans stay quiet
# (implicit concatenation would not do: ruff format joins it). tests/test_repository.py checks it.
KEY = "sk-" + "flotorch-TEST-0123456789-secret"
MOCK_URL = "http://gateway.test"
MOCK_MODEL = "test/model"
LIVE_MODEL = "offline/assistant"
USER = [{"role": "user", "content": "Say hello."}]
#: Instant retries: tests pass this policy instead of patching private sleeps.
NO_WAIT = RetryPolicy(max_retries=2, base_delay=0, max_delay=0)
ONCE = RetryPolicy(max_retries=0)
SYNC = [True, False]
SYNC_IDS = ["sync", "async"]

Handler = Callable[[httpx2.Request], httpx2.Response]
OMIT: Any = object()
DEFAULT_USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def completion(
    content: str | None = "Hello!",
    *,
    usage: Any = DEFAULT_USAGE,
    tool_calls: list[dict[str, Any]] | None = None,
    model: str = MOCK_MODEL,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """An OpenAI-style ``chat.completion`` body; ``usage=OMIT`` leaves the field out."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage is not OMIT:
        body["usage"] = usage
    return body


def chunk(content: str | None = None, *, finish_reason: str | None = None, **delta: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk`` carrying a text delta (and/or other delta fields)."""
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": MOCK_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def sse(*events: Mapping[str, Any] | str, done: bool = True) -> bytes:
    """An SSE body: each event as ``data: <json>`` (a str is sent as is), then ``data: [DONE]``."""
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def sse_response(body: bytes, status: int = 200, **headers: str) -> httpx2.Response:
    """A ``text/event-stream`` response with ``body``."""
    return httpx2.Response(status, content=body, headers={"content-type": "text/event-stream", **headers})


class Recorder:
    """A MockTransport handler that records every request and answers from a list (the last repeats)
    or a function of the request."""

    def __init__(self, *answers: httpx2.Response | Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.answers = list(answers) or [httpx2.Response(200, json=completion())]
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if callable(answer) and not isinstance(answer, httpx2.Response):
            return answer(request)
        # A Response can be sent once only; hand out a fresh copy each time.
        return httpx2.Response(answer.status_code, headers=answer.headers, content=answer.content)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies received, in order."""
        return [json.loads(r.content) for r in self.requests]


@contextlib.asynccontextmanager
async def mock_llm(
    handler: Handler, model_id: str = MOCK_MODEL, **options: Any
) -> AsyncIterator[FlotorchLLM]:
    """A ``FlotorchLLM`` whose sync and async HTTP clients both answer from ``handler``."""
    transport = httpx2.MockTransport(handler)
    options.setdefault("retry", NO_WAIT)
    async with httpx2.AsyncClient(transport=transport) as async_http:
        with httpx2.Client(transport=transport) as http:
            llm = FlotorchLLM(
                model_id, KEY, MOCK_URL, http_client=http, async_http_client=async_http, **options
            )
            try:
                yield llm
            finally:
                await llm.aclose()


@contextlib.asynccontextmanager
async def live_llm(url: str, model_id: str = LIVE_MODEL, **options: Any) -> AsyncIterator[FlotorchLLM]:
    """A ``FlotorchLLM`` on a real gateway (the offline one), with instant retries unless told otherwise."""
    options.setdefault("retry", NO_WAIT)
    llm = FlotorchLLM(model_id, KEY, url, **options)
    try:
        yield llm
    finally:
        await llm.aclose()


async def invoke(llm: FlotorchLLM, sync: bool, messages: Any = USER, **kwargs: Any) -> LLMResponse:
    """``llm.invoke(...)`` or ``await llm.ainvoke(...)``."""
    if sync:
        return llm.invoke(messages, **kwargs)
    return await llm.ainvoke(messages, **kwargs)


async def stream(
    llm: FlotorchLLM, sync: bool, messages: Any = USER, **kwargs: Any
) -> tuple[list[str], LLMResponse]:
    """Iterate ``llm.stream(...)`` or ``llm.astream(...)`` to the end: the deltas and the final response."""
    if sync:
        chat = llm.stream(messages, **kwargs)
        deltas = list(chat)
        return deltas, chat.response
    achat = llm.astream(messages, **kwargs)
    adeltas = [delta async for delta in achat]
    return adeltas, achat.response


class RawServer:
    """A loopback HTTP/1.1 server whose answers a test writes byte for byte, for what no real server
    would send (a stream with no terminating chunk, a redirect to elsewhere...).

    ``handler(conn, request)`` runs on a thread per request with the raw request bytes (head and
    body); it writes what it likes and returns True to keep the connection for another request.
    Everything is bounded: ``stopped`` is set when the server stops, so a handler that "keeps the
    connection open" waits on it rather than sleeping, and every socket closes with the server.
    """

    def __init__(self, handler: Callable[[socket.socket, bytes], bool | None]) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        self._thread.join(timeout=5)
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            self._requests_of(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _requests_of(self, conn: socket.socket) -> None:
        buffer = b""
        while not self.stopped.is_set():
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(rest) < length:
                data = conn.recv(65536)
                if not data:
                    return
                rest += data
            request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
            self.requests.append(request)
            if not self.handler(conn, request):
                return


def http_response(status: int, body: bytes = b"", **headers: str) -> bytes:
    """The bytes of an HTTP/1.1 answer with a Content-Length (header names: ``_`` becomes ``-``)."""
    lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*pieces: bytes, end: bool = True) -> bytes:
    """A chunked body: each piece as one chunk, then the terminating zero-length chunk if ``end``."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + (b"0\r\n\r\n" if end else b"")


class Counting:
    """A gate that admits everything and records what it is asked and told."""

    def __init__(self) -> None:
        self.admits: list[Asked] = []
        self.settles: list[Spent | None] = []
        self._lock = threading.Lock()

    def admit(self, request: Asked) -> Ticket | float:
        with self._lock:
            self.admits.append(request)
        return Ticket()

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        with self._lock:
            self.settles.append(spent)
