"""The boundary with httpx2: building pooled clients, and mapping what httpx2 says to our types.

Pure functions only (no sending): both send loops in ``llm.py`` call them, so a timeout or a refused
connection reads the same whether it happened in ``invoke``, ``ainvoke`` or a stream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _config
from ._config import Secret, Settings, display_url, redact
from ._errors import APIConnectionError, APIStatusError, APITimeoutError, FlotorchError
from ._response import OFFLINE_HEADER, ResponseInfo, parse_error
from ._retry import parse_retry_after

if TYPE_CHECKING:
    import ssl

    import httpx2

logger = logging.getLogger("flotorch_nb")

USER_AGENT = "flotorch_nb/0.1"


@dataclass(frozen=True, slots=True)
class Call:
    """One prepared request: everything the send loops need, decided before any I/O."""

    url: str
    body: Mapping[str, Any] = field(repr=False)  # what hooks, replay and the cache look at
    content: bytes
    headers: Mapping[str, str] = field(repr=False)  # holds the key: a verbose traceback shows reprs
    timeout: float
    model: str
    stream: bool
    model_class: type[Any] | None = None

    @property
    def display_url(self) -> str:
        """The URL for messages and logs: without any ``user:password@`` part."""
        return display_url(self.url)

    @property
    def httpx_timeout(self) -> httpx2.Timeout:
        """This call's budget in httpx2's terms."""
        return timeout_for(self.timeout)


def headers_for(key: Secret) -> dict[str, str]:
    """Per-request headers; the key is set here only, so a shared injected client never holds it."""
    return {
        "Authorization": f"Bearer {key.get_secret_value()}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "User-Agent": USER_AGENT,
    }


def timeout_for(seconds: float) -> httpx2.Timeout:
    """``seconds`` for each read, write and pool wait, with a shorter connect budget: a dead host fails
    fast, a slow model does not. httpx2 times each read, so a stall fails; a gateway that keeps
    trickling bytes is bounded only by the answer's end (streams are expected to trickle)."""
    import httpx2

    return httpx2.Timeout(seconds, connect=min(_config.DEFAULT_CONNECT_TIMEOUT, seconds))


def _limits() -> httpx2.Limits:
    import httpx2

    return httpx2.Limits(
        max_connections=_config.POOL_MAX_CONNECTIONS,
        max_keepalive_connections=_config.POOL_MAX_KEEPALIVE,
    )


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context shared by every pool: building one loads the CA bundle (~70 ms),
    which would otherwise be paid by every new client and by every event loop's async pool."""
    import httpx2

    return httpx2.create_ssl_context()


def make_client(settings: Settings) -> httpx2.Client:
    """The pooled sync client a ``FlotorchLLM`` owns (record/replay wraps its transport)."""
    import httpx2

    transport: httpx2.BaseTransport | None = None
    if settings.cassette_mode:
        from . import replay

        record = settings.cassette_mode == "record"
        inner = httpx2.HTTPTransport(limits=_limits(), verify=_tls()) if record else None
        transport = replay.wrap_transport(
            inner, settings.cassette_mode, settings.cassette_path or "", asynchronous=False
        )
    return httpx2.Client(
        limits=_limits(), timeout=timeout_for(settings.timeout), transport=transport, verify=_tls()
    )


def make_async_client(settings: Settings) -> httpx2.AsyncClient:
    """The pooled async client a ``FlotorchLLM`` owns for one event loop."""
    import httpx2

    transport: httpx2.AsyncBaseTransport | None = None
    if settings.cassette_mode:
        from . import replay

        record = settings.cassette_mode == "record"
        inner = httpx2.AsyncHTTPTransport(limits=_limits(), verify=_tls()) if record else None
        transport = replay.wrap_transport(
            inner, settings.cassette_mode, settings.cassette_path or "", asynchronous=True
        )
    return httpx2.AsyncClient(
        limits=_limits(), timeout=timeout_for(settings.timeout), transport=transport, verify=_tls()
    )


def transport_error(exc: Exception, call: Call, key: Secret) -> FlotorchError:
    """An httpx2 failure as ours: a timeout or a connection problem, naming the URL and the budget."""
    import httpx2

    if isinstance(exc, FlotorchError):  # raised by our own transports (replay): already precise
        return exc
    if isinstance(exc, httpx2.TimeoutException):
        phase = "connect to" if isinstance(exc, httpx2.ConnectTimeout) else "get an answer from"
        return APITimeoutError(
            f"could not {phase} {call.display_url} within {call.timeout:g} s ({type(exc).__name__}); "
            "pass timeout=... to allow longer"
        )
    if isinstance(exc, httpx2.LocalProtocolError):
        # Its message quotes the offending header bytes, which can be the key itself.
        detail = "the request could not be encoded as HTTP (an invalid header value?)"
    else:
        detail = redact(str(exc) or type(exc).__name__, key)
    return APIConnectionError(f"could not reach {call.display_url}: {detail} ({type(exc).__name__})")


def deadline_error(call: Call) -> APITimeoutError:
    """The answer kept trickling in past the call's budget: as much a timeout as silence is."""
    return APITimeoutError(
        f"{call.display_url} did not finish its answer within {call.timeout:g} s (it kept sending "
        "slowly); pass timeout=... to allow longer"
    )


def is_transport_error(exc: BaseException) -> bool:
    """Whether an exception is one httpx2 raises for a failed exchange (not a bug of ours)."""
    import httpx2

    return isinstance(exc, httpx2.HTTPError | httpx2.InvalidURL | httpx2.StreamError)


def is_event_stream(response: httpx2.Response) -> bool:
    """Whether the gateway answered a stream request with SSE (some answer one JSON body instead)."""
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def request_id(headers: httpx2.Headers) -> str | None:
    """The gateway's id for this exchange, the thing to quote when asking FloTorch about a failure."""
    return headers.get("x-request-id") or headers.get("x-flotorch-request-id")


def response_info(headers: httpx2.Headers, latency_s: float) -> ResponseInfo:
    """Timing and the gateway's headers, for the ``LLMResponse``."""
    return ResponseInfo(
        latency_s=latency_s,
        request_id=request_id(headers),
        gateway_latency_ms=_float(headers.get("x-gateway-total-latency")),
        offline_header=headers.get(OFFLINE_HEADER, "").lower() == "offline",
    )


def scrub(error: FlotorchError, key: Secret) -> None:
    """Remove the key from an error built from a 2xx body or a stream (a gateway may echo it back)."""
    clean = redact(str(error), key)
    if clean != str(error):
        error.args = (clean,)


def _scrub_value(value: Any, key: Secret) -> Any:
    if isinstance(value, str):
        return redact(value, key)
    if isinstance(value, Mapping):
        return {k: _scrub_value(v, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_value(v, key) for v in value]
    return value


def status_failure(response: httpx2.Response, body: bytes, key: Secret) -> APIStatusError:
    """A 4xx/5xx answer as the typed error, the key scrubbed from its message and its parsed body."""
    error = parse_error(
        response.status_code,
        body,
        request_id(response.headers),
        parse_retry_after(response.headers.get("retry-after")),
    )
    location = response.headers.get("location")
    if 300 <= response.status_code < 400 and location:
        # httpx2 does not follow redirects for a POST (the body would be lost): say where it points.
        error.args = (f"{error} — the gateway redirects to {display_url(location)}; set base_url to it",)
    error.args = (redact(str(error), key),)
    error.message = redact(error.message, key)
    error.body = _scrub_value(error.body, key)
    return error
