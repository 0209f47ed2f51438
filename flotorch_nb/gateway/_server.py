"""OfflineGateway: the offline app served by uvicorn on a loopback port, in a background thread.

The socket is bound here, before the thread starts, so the real port is known at once (port 0 picks
a free one) and nothing races for it. uvicorn runs on its own event loop in a daemon thread and never
installs signal handlers (they belong to the main thread: a notebook kernel's, or the CLI's).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from ._app import check_seconds, create_app
from ._asgi import StreamCut
from ._faults import FaultPlan
from ._ratelimit import RateLimit, RateLimiter
from ._record import RecordedRequest, RequestCounts

__all__ = ["OfflineGateway", "bind_socket", "make_server", "quiet_deliberate_cuts"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to whoever owns the main thread."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the hook since uvicorn 0.29; we require 0.30
        yield


def _is_cut(exc: BaseException | None) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_cut(inner) for inner in exc.exceptions)
    return isinstance(exc, StreamCut)


def _not_a_deliberate_cut(record: logging.LogRecord) -> bool:
    """A log filter: hide uvicorn's traceback for connections the fault injector cuts on purpose."""
    return not _is_cut(record.exc_info[1] if record.exc_info else None)


def quiet_deliberate_cuts() -> None:
    """Install (once) the filter that keeps injected stream cuts out of uvicorn's error log."""
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if _not_a_deliberate_cut not in uvicorn_errors.filters:
        uvicorn_errors.addFilter(_not_a_deliberate_cut)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the OS picks a free port).

    Created with an explicit ``IPPROTO_TCP``: asyncio only sets ``TCP_NODELAY`` on accepted sockets
    whose protocol says TCP, and without it every keep-alive request waits ~40 ms on delayed ACKs.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def make_server(
    app: Starlette, *, log_level: str = "warning", log_config: dict[str, Any] | None = None
) -> uvicorn.Server:
    """A uvicorn server for the gateway app: no access log, no lifespan, no websockets, no signals."""
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        log_config=log_config,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=1,
        server_header=False,
    )
    quiet_deliberate_cuts()
    return _Server(config)


def base_url(host: str, port: int) -> str:
    """``http://host:port`` (IPv6 hosts in brackets), no trailing slash."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _setting(name: str, doc: str) -> Any:
    """A property for one of the app's delays: read live, checked when set (it may change while serving)."""

    def get(self: OfflineGateway) -> float:
        return float(getattr(self.app.state.settings, name))

    def set_(self: OfflineGateway, seconds: float) -> None:
        setattr(self.app.state.settings, name, check_seconds(name, seconds))

    return property(get, set_, doc=f"{doc} May be changed while serving.")


class OfflineGateway:
    """The embedded offline FloTorch gateway: ``with OfflineGateway() as gw: ... gw.url ...``.

    ``api_key`` None accepts any non-empty Bearer key; otherwise only that key. ``latency`` is the
    wait before the first byte of every answer and ``token_delay`` the pause between streamed chunks
    (seconds, both 0 by default, both scaled per model: see ``OFFLINE_MODELS``; a request can set its
    own token delay with ``extra_body={"offline": {"token_delay": s}}``). The waits are asynchronous:
    a slow answer never holds up another request. ``faults`` queues injected failures.
    ``rate_limit`` (a :class:`RateLimit`, also settable while serving: ``gw.rate_limit = RateLimit(rpm=600,
    tpm=100_000)``, ``= None`` to lift it) is a hidden requests/tokens-per-minute budget every key gets:
    over it, a 429 with ``Retry-After`` and ``x-ratelimit-*`` headers (see ``_ratelimit``).

    ``request_counts()`` says how many times each chat request arrived, by replay's request key; it
    is always kept and costs one int per distinct request. ``requests`` (every received body and its
    headers, secrets masked) is kept only with ``record=True``, for tests that assert what was sent:
    the gateway ``%load_ext`` starts serves a kernel for hours and must not grow with every turn.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token_delay: float = 0.0,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = False,
        log_level: str = "warning",
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.host = host
        self.app = create_app(
            api_key=api_key,
            token_delay=token_delay,
            latency=latency,
            record=record,
            limiter=RateLimiter(rate_limit),
        )
        self.limiter: RateLimiter = self.app.state.limiter
        self.faults: FaultPlan = self.app.state.faults
        self._counts: RequestCounts = self.app.state.counts
        self._requests: list[RecordedRequest] | None = self.app.state.requests
        self._requested_port = port
        self._port: int | None = None
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._failure: BaseException | None = None

    @property
    def requests(self) -> list[RecordedRequest]:
        """What was received (method, path, headers with secrets masked, JSON body), oldest first.

        Only kept by a gateway built with ``record=True``; otherwise this raises, so a test that
        forgot to ask for it fails with this explanation instead of seeing an empty list.
        """
        if self._requests is None:
            raise RuntimeError(
                "this offline gateway keeps no request bodies; build it with OfflineGateway(record=True) "
                "to read .requests (request_counts() is always available)"
            )
        return self._requests

    def request_counts(self) -> dict[str, int]:
        """How many times each chat request was received: replay's request key -> count (a copy)."""
        return self._counts.snapshot()

    def clear_request_counts(self) -> int:
        """Forget the counts; return how many distinct requests there were."""
        return self._counts.clear()

    @property
    def rate_limit(self) -> RateLimit | None:
        """The hidden rate limit every key gets (None: unlimited); setting it starts every key afresh."""
        return self.limiter.limit

    @rate_limit.setter
    def rate_limit(self, limit: RateLimit | None) -> None:
        if limit is not None and not isinstance(limit, RateLimit):
            raise TypeError(f"expected RateLimit or None, got {type(limit).__name__}")
        self.limiter.set(limit)

    token_delay = _setting("token_delay", "Default pause between streamed chunks, in seconds.")
    latency = _setting("latency", "Wait before the first byte of every answer, in seconds.")

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0); only known once started."""
        if self._port is None:
            raise RuntimeError(
                "the offline gateway is not started; call .start() or use it as a context manager"
            )
        return self._port

    @property
    def url(self) -> str:
        """The base URL to give a client, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return base_url(self.host, self.port)

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = _START_TIMEOUT) -> OfflineGateway:
        """Bind, start serving in a daemon thread and wait (at most ``timeout`` s) until ready."""
        if self._thread is not None:
            raise RuntimeError("the offline gateway is already running")
        sock = bind_socket(self.host, self._requested_port)
        server = make_server(self.app, log_level=self._log_level)
        self._failure = None
        self._socket, self._server, self._port = sock, server, sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._serve,
            args=(server, sock),
            name=f"flotorch-offline-gateway-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                failure = self._failure
                self.stop()
                raise RuntimeError(f"the offline gateway did not start within {timeout:g} s") from failure
            time.sleep(0.002)
        return self

    def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported by start(): a thread must not raise
            self._failure = exc

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop serving and join the thread, giving up on open connections after ``timeout`` s."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive() and server is not None:
                server.force_exit = True  # abandon connections that would not finish
                thread.join(timeout)
        if sock is not None:
            sock.close()

    def __enter__(self) -> OfflineGateway:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<OfflineGateway {where} running={self.running}>"
