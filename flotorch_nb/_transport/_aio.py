"""The aiohttp side of the transport boundary: the pool behind ``ainvoke``/``astream`` by default.

Why aiohttp for async calls: httpcore2's async pool scans every idle connection on every request
(``has_expired`` -> ``is_socket_readable``), which with 64-256 calls in flight costs more than the
HTTP itself; aiohttp's connector hands out a keep-alive connection without a scan and parses HTTP in
C. openai-python offers an aiohttp-backed client for the same reason. aiohttp is imported by the first
async call (its import builds its own TLS contexts, ~0.2 s), never by ``import flotorch_nb``.

Timeouts mean what they mean on the httpx2 paths: connecting gets min(10 s, timeout), waiting for a
free pooled connection counts towards ``timeout``; a whole answer must have arrived ``timeout``
seconds after its attempt began (aiohttp's ``total``, which also cuts a body that trickles in); a
stream's head must come within ``timeout``, and then each read may wait ``timeout`` for the gateway
(time spent waiting, not the caller's time between deltas).

Every aiohttp or socket error leaves this module as a ``FlotorchError``, never chained to aiohttp's
own: its frames and its response errors carry the request's headers, so the key (see ``_translate``).
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import sys
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from .. import _config
from .._config import Settings
from .._errors import FlotorchError
from ._boundary import Call, connection_error, cut_error, deadline_error, timeout_error
from ._httpx import tls

if TYPE_CHECKING:
    import aiohttp
    import yarl

__all__ = ["MAX_CONNECTIONS", "AioPool", "AioReply"]

#: Sockets one event loop's pool may open to the gateway. Higher than the sync pool's 100
#: (``_config.POOL_MAX_CONNECTIONS``) because an async fan-out (``asyncio.gather`` of 256 calls) is the
#: point of ``ainvoke``, and a call waiting for a socket waits a whole answer's time; low enough to
#: stay well inside the usual 1,024 open files of a notebook kernel.
MAX_CONNECTIONS = 256


@functools.lru_cache(maxsize=64)
def _timeouts(seconds: float, stream: bool) -> aiohttp.ClientTimeout:
    import aiohttp

    connect = min(_config.DEFAULT_CONNECT_TIMEOUT, seconds)
    # A stream may last far longer than ``seconds``: its reads are timed one by one instead.
    return aiohttp.ClientTimeout(total=None if stream else seconds, connect=seconds, sock_connect=connect)


@functools.lru_cache(maxsize=64)
def _url(url: str) -> yarl.URL:
    """``url`` as aiohttp takes it, parsed once. Without ``user:password@``: aiohttp would turn that
    into Basic auth and then refuse our Authorization header (the key is what authenticates us)."""
    import yarl

    return yarl.URL(url).with_user(None)


def _env_proxy(url: str) -> tuple[Any, Any]:
    """The proxy ``HTTP(S)_PROXY``/``NO_PROXY`` choose for the gateway, as httpx2 (``trust_env``) does
    for the sync pool; looked up once per pool, not per request as aiohttp's ``trust_env`` would."""
    from aiohttp.helpers import get_env_proxy_for_url

    try:
        return get_env_proxy_for_url(_url(url))
    except LookupError:
        return None, None


def _translate(
    exc: Exception, call: Call, *, closed: bool = False, body_started: bool = False, reading: bool = False
) -> FlotorchError | None:
    """``exc`` as ours, or None for what is not a network failure (a bug must show as one).

    Callers raise the result outside their ``except`` block, so that aiohttp's exception is neither
    its cause nor its context: aiohttp's frames hold the request's headers (the key) in their locals,
    which a verbose traceback of the chain would print; our message names aiohttp's error instead.
    ``reading``: the answer's head had arrived, so a connection that ends now cut the answer short.
    """
    import aiohttp

    name = type(exc).__name__
    if isinstance(exc, FlotorchError):
        return exc
    if isinstance(exc, aiohttp.ClientResponseError):  # its repr would show the request headers too
        _forget_headers(exc)
    if closed and isinstance(exc, RuntimeError):  # "Session is closed": the send loop says why
        return connection_error(call, "its connection pool is closed", name)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return timeout_error(call, "connect to", name)
    if isinstance(exc, TimeoutError):
        return deadline_error(call) if body_started else timeout_error(call, "get an answer from", name)
    if reading and isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError | OSError):
        return cut_error(call, name)
    if isinstance(exc, aiohttp.ClientResponseError):  # not the gateway's status: aiohttp's parser
        return connection_error(call, f"the answer is not valid HTTP: {exc.message}", name)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return connection_error(call, str(exc) or name, name)
    if isinstance(exc, UnicodeError):  # a host name the resolver cannot encode ("a..b"): DNS says no
        return connection_error(call, f"the host name cannot be looked up: {exc}", name)
    return None


def _forget_headers(exc: aiohttp.ClientResponseError) -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    info = exc.request_info
    exc.request_info = type(info)(info.url, info.method, CIMultiDictProxy(CIMultiDict()), info.real_url)


async def _warm_up() -> None:
    """Import aiohttp and build the TLS context in a worker thread, once per process: together they
    take ~0.3 s, which on the loop would freeze every other task of a kernel (the chat panel) and
    make asyncio's debug mode report the first call as a slow callback."""
    if "aiohttp" not in sys.modules or tls.cache_info().currsize == 0:
        await asyncio.to_thread(_imports)


def _imports() -> None:
    import aiohttp  # noqa: F401

    tls()


class AioPool:
    """One event loop's aiohttp session, behind ``_transport.AsyncPool``."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.url
        #: Made by the first call (after ``_warm_up``); None again never: a closed pool stays closed.
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._proxy: Any = None
        self._proxy_auth: Any = None
        #: Replies whose body is being read. Closing the session closes their sockets but leaves a
        #: reader waiting on its buffer (aiohttp forgets the payload first), so aclose() wakes them.
        self._reading: set[AioReply] = set()

    @property
    def is_closed(self) -> bool:
        return self._closed or (self._session is not None and self._session.closed)

    async def _start(self) -> aiohttp.ClientSession:
        await _warm_up()
        if self._session is None:  # another call may have made it while we waited
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=tls()),
                # No cookies: a gateway call needs none, and a jar costs a lookup per request.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),  # each request brings its own
            )
            self._proxy, self._proxy_auth = _env_proxy(self._url)
        return self._session

    async def open(self, call: Call, url: str, started: float) -> AioReply:
        """POST ``call`` to ``url``; return once the answer's head has arrived (redirects are the send
        loop's decision, so aiohttp follows none)."""
        try:
            if self._closed:
                raise RuntimeError("Session is closed")
            session = self._session or await self._start()
            request = session.request(
                "POST",
                _url(url),
                data=call.content,
                headers=call.headers,
                timeout=_timeouts(call.timeout, call.stream),
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            )
            if call.stream:
                async with asyncio.timeout(call.timeout):
                    response = await request
            else:
                response = await request
        except Exception as exc:
            failure = _translate(exc, call, closed=self.is_closed)
            if failure is None:
                raise
        else:
            reply = AioReply(response, call, started, self._reading)
            self._reading.add(reply)
            return reply
        raise failure  # outside the except block: see _translate

    async def aclose(self) -> None:
        """Close the session and its sockets (waiting until they are closed); safe to call again."""
        self._closed = True
        session = self._session
        if session is None:
            return
        import aiohttp

        for reply in list(self._reading):
            reply.abort(aiohttp.ClientConnectionError("the connection pool was closed"))
        await session.close()


class AioReply:
    """An aiohttp response behind ``_transport.AsyncReply``."""

    __slots__ = ("_call", "_deadline", "_reading", "_response", "headers", "status_code")

    def __init__(
        self, response: aiohttp.ClientResponse, call: Call, started: float, reading: set[AioReply]
    ) -> None:
        self._response = response
        self._call = call
        self._deadline = started + call.timeout
        self._reading = reading  # its pool's: it leaves that set once it let go of its connection
        self.status_code = response.status
        self.headers = response.headers

    async def read(self) -> bytes:
        """The whole body, by the attempt's deadline: aiohttp's ``total`` timer covers the reads of a
        plain call; a stream request has no such timer (its answer may last), so a JSON answer, an
        error or a redirect body given to one is timed here."""
        response = self._response
        try:
            if not self._call.stream:
                return await response.read()
            async with asyncio.timeout(max(0.0, self._deadline - time.perf_counter())):
                return await response.read()
        except Exception as exc:
            failure = _translate(exc, self._call, body_started=response.content.total_bytes > 0, reading=True)
            if failure is None:
                raise
        finally:
            response.release()
            self._reading.discard(self)
        raise failure  # outside the except block: see _translate

    async def aiter_text(self) -> AsyncGenerator[str, None]:
        """The body as UTF-8 text (what SSE is) as it arrives; each read may wait ``timeout``."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        content, timeout = self._response.content, self._call.timeout
        failure: FlotorchError | None = None
        while True:
            try:
                data = content.read_nowait()  # what has arrived already needs no timer
                if not data and not content.at_eof():
                    async with asyncio.timeout(timeout):
                        data = await content.readany()
            except Exception as exc:
                failure = _translate(exc, self._call, reading=True)
                if failure is None:
                    raise
                break
            if not data:
                break
            if text := decoder.decode(data):
                yield text
        if failure is not None:
            raise failure  # outside the except block: see _translate
        if tail := decoder.decode(b"", True):
            yield tail

    @property
    def is_closed(self) -> bool:
        """Whether the connection was let go (``aclose``, or the whole body read)."""
        return self._response.closed

    async def aclose(self) -> None:
        """Back to the pool if the body was read to its end, else the connection is closed."""
        self._response.release()
        self._reading.discard(self)

    def abort(self, error: Exception) -> None:
        """Make a read in progress (or the next one) fail with ``error``."""
        self._response.content.set_exception(error)
