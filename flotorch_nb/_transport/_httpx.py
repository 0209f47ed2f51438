"""The httpx2 side of the transport boundary: the sync pool, injected clients, record and replay.

httpx2 carries every sync call, and async ones when the caller injected an ``httpx2.AsyncClient`` (tests
on ``MockTransport``) or a cassette mode is on (``replay`` wraps httpx2 transports). Its replies are
wrapped so that its exceptions become ours here and nowhere else. httpx2 is imported on first use:
``import flotorch_nb`` does not pay its ~140 ms.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, NoReturn

from .. import _config
from .._config import Settings
from .._errors import FlotorchError
from ._boundary import Call, connection_error, cut_error, deadline_error, timeout_error

if TYPE_CHECKING:
    import ssl

    import httpx2

__all__ = [
    "AsyncReply",
    "HttpxPool",
    "SyncReply",
    "make_async_client",
    "make_client",
    "open_sync",
    "timeout_for",
    "tls",
    "transport_error",
]


@functools.lru_cache(maxsize=32)
def timeout_for(seconds: float) -> httpx2.Timeout:
    """``seconds`` for each read, write and pool wait, with a shorter connect budget: a dead host fails
    fast, a slow model does not. httpx2 times each read, so a stall fails; a gateway that keeps
    trickling bytes is cut by the whole-answer deadline of ``SyncReply.read``."""
    import httpx2

    return httpx2.Timeout(seconds, connect=min(_config.DEFAULT_CONNECT_TIMEOUT, seconds))


def _limits() -> httpx2.Limits:
    import httpx2

    return httpx2.Limits(
        max_connections=_config.POOL_MAX_CONNECTIONS,
        max_keepalive_connections=_config.POOL_MAX_KEEPALIVE,
    )


@functools.cache
def tls() -> ssl.SSLContext:
    """One verifying TLS context shared by every pool, httpx2's and aiohttp's: building one loads the
    CA bundle (~70 ms), which would otherwise be paid by every new client and every loop's pool."""
    import httpx2

    return httpx2.create_ssl_context()


def make_client(settings: Settings) -> httpx2.Client:
    """The pooled sync client a ``FlotorchLLM`` owns (record/replay wraps its transport)."""
    import httpx2

    transport: httpx2.BaseTransport | None = None
    if settings.cassette_mode:
        from .. import replay

        record = settings.cassette_mode == "record"
        inner = httpx2.HTTPTransport(limits=_limits(), verify=tls()) if record else None
        transport = replay.wrap_transport(
            inner, settings.cassette_mode, settings.cassette_path or "", asynchronous=False
        )
    return httpx2.Client(
        limits=_limits(), timeout=timeout_for(settings.timeout), transport=transport, verify=tls()
    )


def make_async_client(settings: Settings) -> httpx2.AsyncClient:
    """An async httpx2 client for one event loop: used in record/replay modes, whose transports are
    httpx2's (live async calls go through ``_aio`` instead)."""
    import httpx2

    transport: httpx2.AsyncBaseTransport | None = None
    if settings.cassette_mode:
        from .. import replay

        record = settings.cassette_mode == "record"
        inner = httpx2.AsyncHTTPTransport(limits=_limits(), verify=tls()) if record else None
        transport = replay.wrap_transport(
            inner, settings.cassette_mode, settings.cassette_path or "", asynchronous=True
        )
    return httpx2.AsyncClient(
        limits=_limits(), timeout=timeout_for(settings.timeout), transport=transport, verify=tls()
    )


def transport_error(exc: BaseException, call: Call) -> FlotorchError | None:
    """An httpx2 failure as ours (a timeout or a connection problem naming the URL and the budget),
    or None for anything else: a bug of ours must not pass for a network problem."""
    import httpx2

    if isinstance(exc, FlotorchError):  # raised by our own transports (replay): already precise
        return exc
    if isinstance(exc, httpx2.TimeoutException):
        phase = "connect to" if isinstance(exc, httpx2.ConnectTimeout) else "get an answer from"
        return timeout_error(call, phase, type(exc).__name__)
    if isinstance(exc, httpx2.LocalProtocolError):
        # Its message quotes the offending header bytes, which can be the key itself.
        return connection_error(
            call, "the request could not be encoded as HTTP (an invalid header value?)", type(exc).__name__
        )
    if isinstance(exc, httpx2.HTTPError | httpx2.InvalidURL | httpx2.StreamError):
        return connection_error(call, str(exc) or type(exc).__name__, type(exc).__name__)
    if isinstance(exc, UnicodeError):  # a host name the resolver cannot encode ("a..b"): DNS says no
        return connection_error(call, f"the host name cannot be looked up: {exc}", type(exc).__name__)
    return None


def _reraise(exc: Exception, call: Call, closed: bool) -> NoReturn:
    if closed and isinstance(exc, RuntimeError):  # "the client has been closed": the loop says why
        raise connection_error(call, "its connection pool is closed", "RuntimeError") from exc
    error = transport_error(exc, call)
    if error is None or error is exc:
        raise exc
    raise error from exc


def _body_failure(exc: Exception, call: Call) -> FlotorchError:
    """A failure while reading an answer's body: cut short (the connection closed or broke after the
    head had arrived) is returned, to be raised outside the ``except`` block and chained to nothing
    (httpx2's exceptions carry the request); anything else is raised here as ``_reraise`` does."""
    import httpx2

    if isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError):
        return cut_error(call, type(exc).__name__)
    _reraise(exc, call, False)


def open_sync(client: httpx2.Client, call: Call, url: str, started: float) -> SyncReply:
    """POST ``call`` to ``url``; return once the answer's head has arrived, its body unread."""
    try:
        request = client.build_request(
            "POST", url, content=call.content, headers=call.headers, timeout=timeout_for(call.timeout)
        )
        return SyncReply(client.send(request, stream=True), call, started)
    except Exception as exc:
        _reraise(exc, call, client.is_closed)


class SyncReply:
    """An httpx2 response behind ``_transport.Reply``: its errors come out as ours."""

    __slots__ = ("_call", "_deadline", "_response", "headers", "status_code")

    def __init__(self, response: httpx2.Response, call: Call, started: float) -> None:
        self._response = response
        self._call = call
        self._deadline = started + call.timeout
        self.status_code = response.status_code
        self.headers = response.headers

    def read(self) -> bytes:
        """The body; httpx2 times each read, so one that trickles in is cut at the call's deadline."""
        try:
            body = bytearray()
            for chunk in self._response.iter_bytes():
                body += chunk
                if time.perf_counter() > self._deadline:
                    raise deadline_error(self._call)
            return bytes(body)
        except Exception as exc:
            failure = _body_failure(exc, self._call)
        finally:
            self._response.close()
        raise failure

    def iter_text(self) -> Generator[str, None, None]:
        try:
            yield from self._response.iter_text()
        except Exception as exc:
            failure = _body_failure(exc, self._call)
        else:
            return
        raise failure

    @property
    def is_closed(self) -> bool:
        return self._response.is_closed

    def close(self) -> None:
        self._response.close()


class AsyncReply:
    """The async twin of ``SyncReply``, for an ``httpx2.AsyncClient``'s response."""

    __slots__ = ("_call", "_deadline", "_response", "headers", "status_code")

    def __init__(self, response: httpx2.Response, call: Call, started: float) -> None:
        self._response = response
        self._call = call
        self._deadline = started + call.timeout
        self.status_code = response.status_code
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            body = bytearray()
            async for chunk in self._response.aiter_bytes():
                body += chunk
                if time.perf_counter() > self._deadline:
                    raise deadline_error(self._call)
            return bytes(body)
        except Exception as exc:
            failure = _body_failure(exc, self._call)
        finally:
            await self._response.aclose()
        raise failure

    async def aiter_text(self) -> AsyncGenerator[str, None]:
        try:
            async for text in self._response.aiter_text():
                yield text
        except Exception as exc:
            failure = _body_failure(exc, self._call)
        else:
            return
        raise failure

    @property
    def is_closed(self) -> bool:
        return self._response.is_closed

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxPool:
    """An ``httpx2.AsyncClient`` behind ``_transport.AsyncPool``: one the caller injected (``owned`` is
    False: we never close it) or one we made for record/replay."""

    def __init__(self, client: httpx2.AsyncClient, *, owned: bool) -> None:
        self.client = client
        self.owned = owned

    @property
    def is_closed(self) -> bool:
        return self.client.is_closed

    async def open(self, call: Call, url: str, started: float) -> AsyncReply:
        client = self.client
        try:
            request = client.build_request(
                "POST", url, content=call.content, headers=call.headers, timeout=timeout_for(call.timeout)
            )
            return AsyncReply(await client.send(request, stream=True), call, started)
        except Exception as exc:
            _reraise(exc, call, client.is_closed)

    async def aclose(self) -> None:
        if self.owned:
            await self.client.aclose()
