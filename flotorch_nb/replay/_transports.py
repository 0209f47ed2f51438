"""The httpx2 transports: record (forward, store, hand back) and replay (answer from files, no network).

Both are put around (record) or in place of (replay) the client's network transport by
``wrap_transport``, so invoke, ainvoke, stream and astream are all covered without the client knowing.

Record mode must look like live mode to the caller, whatever happens:

- it reads each answer in full before handing it on (a stream then arrives at once, still as a real
  event stream);
- an answer cut mid-way is not recorded, and the caller gets the bytes that did arrive followed by
  the very error live mode raises, at the same point: a cut stream is the client's ``StreamError``
  (not an ``APIConnectionError`` raised before the answer began, which the client would retry);
- a file that cannot be written (a read-only or missing disk) does not lose the answer: it is
  returned, and a ``RecordWarning`` says what was not recorded and why.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Literal, overload

import httpx2

from .._config import Secret, redact
from .._errors import ReplayMissError
from ._cassette import Cassette
from ._match import canonical_request

__all__ = [
    "RECORDED_HEADERS",
    "AsyncRecordTransport",
    "RecordTransport",
    "RecordWarning",
    "ReplayTransport",
    "wrap_transport",
]

#: Headers a replayed answer needs (content type, offline marker, ids, latency, back-off); nothing else.
RECORDED_HEADERS = tuple(
    ["content-type", "x-flotorch-gateway", "x-request-id", "x-gateway-total-latency", "retry-after"]
)
#: Once the body is decoded and complete, its length and encoding headers no longer apply.
_BODY_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class RecordWarning(UserWarning):
    """An exchange was answered but could not be recorded (the answer itself is returned)."""


def _split_events(text: str) -> list[str]:
    """The ``data`` payload of each SSE event (``event:``/``id:`` fields and comments are not kept)."""
    events: list[str] = []
    for block in re.split(r"\n\n+", text.replace("\r\n", "\n").replace("\r", "\n")):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    return events


def _event_bytes(data: str) -> bytes:
    return "".join(f"data: {line}\n" for line in data.split("\n")).encode("utf-8", "surrogatepass") + b"\n"


def _stored_response(status: int, headers: httpx2.Headers, body: bytes) -> dict[str, Any]:
    kept = {name: headers[name] for name in RECORDED_HEADERS if name in headers}
    entry: dict[str, Any] = {"status": status, "headers": kept}
    content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if content_type == "text/event-stream":
        entry["events"] = _split_events(text)
        return entry
    if "json" in content_type:
        try:
            entry["json"] = json.loads(text)
            return entry
        except (json.JSONDecodeError, RecursionError):
            pass
    entry["text"] = text
    return entry


class _Chunks(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """Bytes already read, one chunk at a time, then (for a cut answer) the error that cut them.

    A replayed event stream is one event per chunk, so the client's SSE parser runs as it does live.
    """

    def __init__(self, chunks: Sequence[bytes], error: Exception | None = None) -> None:
        self._chunks = chunks
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        if self._error is not None:
            raise self._error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        if self._error is not None:
            raise self._error


def _to_response(entry: Mapping[str, Any]) -> httpx2.Response:
    """Rebuild a live-looking response from a stored one (the same code serves record and replay)."""
    status = int(entry["status"])
    headers = dict(entry.get("headers") or {})
    if "events" in entry:
        chunks = [_event_bytes(event) for event in entry["events"]]
        return httpx2.Response(status, headers=headers, stream=_Chunks(chunks))
    if "json" in entry:
        content = _json_bytes(entry["json"])
    else:
        content = str(entry.get("text", "")).encode("utf-8", "surrogatepass")
    return httpx2.Response(status, headers=headers, content=content)


def _json_bytes(value: Any) -> bytes:
    """``value`` as UTF-8 JSON; with ``\\u`` escapes if it holds a lone surrogate UTF-8 cannot carry."""
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode("ascii")


def _secrets(request: httpx2.Request) -> list[Secret]:
    """The credential a request carries (whole header and bare token): never to be written anywhere."""
    value = request.headers.get("authorization", "")
    found = {value, value.partition(" ")[2].strip()}
    # As JSON escapes them too: a key inside an event payload (itself JSON text) is stored escaped.
    found |= {json.dumps(s, ensure_ascii=False)[1:-1] for s in found}
    found.discard("")
    return [Secret(s) for s in sorted(found, key=len, reverse=True)]  # the whole header goes first


def _canonical(request: httpx2.Request) -> dict[str, Any]:
    path = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
    return canonical_request(request.content, path, method=request.method)


def _answer(cassette: Cassette, request: httpx2.Request) -> httpx2.Response:
    """The recorded answer; a miss names the request without the key, should the prompt quote it."""
    try:
        return _to_response(cassette.load(_canonical(request)))
    except ReplayMissError as miss:
        for secret in _secrets(request):
            miss.args = tuple(redact(a, secret) if isinstance(a, str) else a for a in miss.args)
        raise


class ReplayTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Answers every request from a cassette directory; never opens a connection."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.cassette = Cassette(directory)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer from the recording, or raise ``ReplayMissError``."""
        request.read()
        return _answer(self.cassette, request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer from the recording, or raise ``ReplayMissError``."""
        await request.aread()
        return _answer(self.cassette, request)


def _recorded(
    cassette: Cassette,
    request: httpx2.Request,
    response: httpx2.Response,
    chunks: list[bytes],
    cut: httpx2.RequestError | None,
) -> httpx2.Response:
    """Store one complete exchange and hand back what replay would answer, with the live headers.

    A cut answer is not stored: the caller gets what arrived, then the error that cut it.
    """
    headers = {name: value for name, value in response.headers.items() if name.lower() not in _BODY_HEADERS}
    if cut is not None:
        return httpx2.Response(response.status_code, headers=headers, stream=_Chunks(chunks, cut))
    entry = _stored_response(response.status_code, response.headers, b"".join(chunks))
    try:
        cassette.save(_canonical(request), entry, _secrets(request))
    except OSError as exc:
        warnings.warn(
            RecordWarning(
                f"this answer was not recorded: cannot write to {cassette.directory} "
                f"({exc.strerror or exc}); the answer is returned all the same"
            ),
            stacklevel=2,
        )
    return httpx2.Response(response.status_code, headers=headers, stream=_to_response(entry).stream)


class RecordTransport(httpx2.BaseTransport):
    """Forwards to the real transport, writes the exchange, hands back an equivalent response."""

    def __init__(self, inner: httpx2.BaseTransport, directory: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.cassette = Cassette(directory)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send, read the whole answer, store it, return it."""
        request.read()
        response = self.inner.handle_request(request)
        chunks: list[bytes] = []
        cut: httpx2.RequestError | None = None
        try:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
        except httpx2.RequestError as exc:  # cut, stalled, undecodable: raised later, where live would
            cut = exc
        finally:
            response.close()
        return _recorded(self.cassette, request, response, chunks, cut)

    def close(self) -> None:
        """Close the wrapped transport (the client closes us, we close what we own)."""
        self.inner.close()


class AsyncRecordTransport(httpx2.AsyncBaseTransport):
    """The async twin of ``RecordTransport``; the steps match line for line."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, directory: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.cassette = Cassette(directory)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send, read the whole answer, store it, return it."""
        await request.aread()
        response = await self.inner.handle_async_request(request)
        chunks: list[bytes] = []
        cut: httpx2.RequestError | None = None
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
        except httpx2.RequestError as exc:  # cut, stalled, undecodable: raised later, where live would
            cut = exc
        finally:
            await response.aclose()
        return _recorded(self.cassette, request, response, chunks, cut)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


@overload
def wrap_transport(
    inner: httpx2.BaseTransport | None,
    mode: Literal["record", "replay"],
    path: str | os.PathLike[str],
    *,
    asynchronous: Literal[False],
) -> httpx2.BaseTransport: ...
@overload
def wrap_transport(
    inner: httpx2.AsyncBaseTransport | None,
    mode: Literal["record", "replay"],
    path: str | os.PathLike[str],
    *,
    asynchronous: Literal[True],
) -> httpx2.AsyncBaseTransport: ...
def wrap_transport(
    inner: httpx2.BaseTransport | httpx2.AsyncBaseTransport | None,
    mode: Literal["record", "replay"],
    path: str | os.PathLike[str],
    *,
    asynchronous: bool,
) -> httpx2.BaseTransport | httpx2.AsyncBaseTransport:
    """The transport for FLOTORCH_RECORD / FLOTORCH_REPLAY; ``inner`` may be None in replay (no network)."""
    if mode == "replay":
        return ReplayTransport(path)  # ``inner`` is never used: pass None so no pool is even built
    if mode == "record" and asynchronous and isinstance(inner, httpx2.AsyncBaseTransport):
        return AsyncRecordTransport(inner, path)
    if mode == "record" and not asynchronous and isinstance(inner, httpx2.BaseTransport):
        return RecordTransport(inner, path)
    raise ValueError(
        f"need mode 'record' with the network transport to forward to, or 'replay'; got {mode!r}"
    )
