"""The transport boundary, its pure half: a prepared ``Call``, what the send loops may expect of an HTTP
library, and what an exchange's outcome means for us.

Two libraries sit behind this boundary: httpx2 (``_httpx``: the sync pool, injected clients, the
record/replay transports) and aiohttp (``_aio``: the default async pool). Each hands the send loops a
*reply* (status, headers, a body to read or stream, a way to let go of the connection) and raises
only ``FlotorchError`` subclasses for anything that went wrong on the wire, so the send loops and the
streams of ``_pipeline`` never see a library's own exceptions. Everything here is a pure
function: a timeout, a refused connection or a redirect reads the same whichever path met it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from .._config import DEFAULT_ENDPOINT, Secret, display_url, redact
from .._errors import APIConnectionError, APIStatusError, APITimeoutError, FlotorchError
from .._request_key import answer_key, canonical_body_key, request_hash
from .._response import OFFLINE_HEADER, ResponseInfo, parse_error
from .._retry import retry_after_of

USER_AGENT = "flotorch_nb/0.1"

#: Same-origin 307/308 redirects followed per attempt before the last one is reported as an error.
MAX_REDIRECTS = 5
#: The only redirects that keep the method and the body by definition (RFC 9110 15.4.8, 15.4.9): a
#: 301/302/303 would turn our POST into a GET, which no chat endpoint answers usefully.
REDIRECT_STATUSES = frozenset({307, 308})


@dataclass(frozen=True, slots=True)
class Call:
    """One prepared request: everything the send loops need, decided before any I/O."""

    url: str
    body: Mapping[str, Any] = field(repr=False)  # what hooks, replay and the cache look at
    content: bytes
    headers: Mapping[str, str] = field(repr=False)  # holds the key: a verbose traceback shows reprs
    key: Secret = field(repr=False)  # to redact error text that may echo it back
    timeout: float
    model: str
    stream: bool
    model_class: type[Any] | None = None
    #: The endpoint path ``url`` ends with (what identifies the request: ``_request_key``).
    endpoint: str = DEFAULT_ENDPOINT
    #: Whether ``content`` is the canonical body's own text (``_request.encode_body``): then the
    #: request hash is one sha256 over it.
    canonical: bool = False
    #: The request's keys, each worked out once, on first use: the answer cache asks for its key on
    #: lookup and again on store, provenance and the call log for the request hash.
    _keys: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def display_url(self) -> str:
        """The URL for messages and logs: without any ``user:password@`` part."""
        return display_url(self.url)

    @property
    def base_url(self) -> str:
        """The gateway's base URL: ``url`` without its endpoint."""
        return self.url.removesuffix(self.endpoint)

    def request_hash(self) -> str:
        """The request's key (``_request_key.request_hash``): what its provenance and log row carry."""
        found = self._keys.get("request")
        if found is None:
            found = self._keys["request"] = (
                canonical_body_key(self.content, self.endpoint)
                if self.canonical
                else request_hash(self.content, self.endpoint)
            )
        return found

    def answer_key(self) -> str:
        """The answer cache's key (``_request_key.answer_key``: streamed or not, the same answer)."""
        found = self._keys.get("answer")
        if found is None:
            found = self._keys["answer"] = answer_key(self.body, self.url)
        return found


class Reply(Protocol):
    """A sync HTTP answer whose head has arrived (``_httpx.SyncReply``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def read(self) -> bytes:
        """The whole body, within the call's deadline; the connection is then released."""

    def iter_text(self) -> Generator[str, None, None]:
        """The body as text as it arrives (a stream's events)."""

    @property
    def is_closed(self) -> bool: ...
    def close(self) -> None:
        """Let go of the connection: back to the pool if the body was read to its end, else closed."""


class AsyncReply(Protocol):
    """The async twin of ``Reply`` (``_aio.AioReply``, ``_httpx.AsyncReply``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    async def read(self) -> bytes: ...
    def aiter_text(self) -> AsyncGenerator[str, None]: ...
    @property
    def is_closed(self) -> bool: ...
    async def aclose(self) -> None: ...


class AsyncPool(Protocol):
    """One event loop's connection pool, whichever library keeps it."""

    @property
    def is_closed(self) -> bool: ...
    async def open(self, call: Call, url: str, started: float) -> AsyncReply:
        """POST ``call`` to ``url`` and return once the answer's head has arrived."""

    async def aclose(self) -> None: ...


def headers_for(key: Secret) -> dict[str, str]:
    """Per-request headers; the key is set here only, so a shared injected client never holds it."""
    return {
        "Authorization": f"Bearer {key.get_secret_value()}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "User-Agent": USER_AGENT,
    }


# -- redirects ----------------------------------------------------------------------------------
def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # a port that is not a number: no origin we would send a key to
        return ("", "", None)
    return scheme, (parts.hostname or "").lower(), port


def redirect_target(status: int, headers: Mapping[str, str], url: str, hops: int) -> str | None:
    """Where to send the same POST again after answer ``status`` from ``url``, or None: the answer is
    final. Only a 307/308 (method and body kept) to the same origin (scheme, host and port: the
    Authorization header must never travel to anyone else), and at most ``MAX_REDIRECTS`` hops."""
    if status not in REDIRECT_STATUSES or hops >= MAX_REDIRECTS:
        return None
    location = headers.get("location")
    if not location:
        return None
    target = urljoin(url, location.strip())
    return target if _origin(target) == _origin(url) != ("", "", None) else None


# -- errors the loops build themselves ------------------------------------------------------------
def timeout_error(call: Call, phase: str, cause: str) -> APITimeoutError:
    """No answer in time: ``phase`` is "connect to" or "get an answer from"."""
    return APITimeoutError(
        f"could not {phase} {call.display_url} within {call.timeout:g} s ({cause}); "
        "pass timeout=... to allow longer"
    )


def deadline_error(call: Call) -> APITimeoutError:
    """The answer kept trickling in past the call's budget: as much a timeout as silence is."""
    return APITimeoutError(
        f"{call.display_url} did not finish its answer within {call.timeout:g} s (it kept sending "
        "slowly); pass timeout=... to allow longer"
    )


def connection_error(call: Call, detail: str, kind: str) -> APIConnectionError:
    """The gateway could not be reached, or the connection broke; ``detail`` is redacted here."""
    return APIConnectionError(f"could not reach {call.display_url}: {redact(detail, call.key)} ({kind})")


def cut_error(call: Call, kind: str) -> APIConnectionError:
    """The gateway answered, but the connection closed before its answer was complete (a restart, a
    proxy's idle timeout, a dropped network): the head had arrived, so this is no "could not reach".
    Worded by us: the libraries' own text ("Response payload is not completed: <TransferEncodingError
    ...>") says nothing to a reader, and their exceptions are never chained (aiohttp's carry the key)."""
    return APIConnectionError(
        f"the answer from {call.display_url} was cut off: the connection closed before the answer was "
        f"complete ({kind})"
    )


def closed_error(call: Call, during: FlotorchError | None = None) -> APIConnectionError:
    """The pool was closed under a call (``close()``/``aclose()``, or the owner of an injected client
    closed it): final, since a retry would only meet the closed pool."""
    seen = f" (the attempt ended with: {during})" if during is not None else ""
    return APIConnectionError(
        f"the FlotorchLLM's connection pool was closed while a call to {call.display_url} was in "
        f"flight (close()/aclose(), or by the owner of an injected client), so the call was not "
        f"retried{seen}; later calls open a new pool"
    )


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """Whether the gateway answered a stream request with SSE (some answer one JSON body instead)."""
    return headers.get("content-type", "").startswith("text/event-stream")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def request_id(headers: Mapping[str, str]) -> str | None:
    """The gateway's id for this exchange, the thing to quote when asking FloTorch about a failure."""
    return headers.get("x-request-id") or headers.get("x-flotorch-request-id")


def response_info(headers: Mapping[str, str], latency_s: float) -> ResponseInfo:
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


#: The headers a gateway says its limits with (OpenAI's names): what ``rate_headers`` keeps of an answer.
RATE_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def rate_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The rate-limit headers of an answer (lower-case names), or None when it has none: what a
    gate is told at settle time (``Spent.headers``), never the rest (cookies, ids)."""
    if not headers:
        return None
    found = {name: value for name in RATE_HEADERS if (value := headers.get(name)) is not None}
    return found or None


def status_failure(
    status: int, headers: Mapping[str, str], body: bytes, call: Call, url: str, hops: int = 0
) -> APIStatusError:
    """A 3xx/4xx/5xx answer as the typed error, the key scrubbed from its message and parsed body.

    A redirect we did not follow (another origin, a 301/302/303, one hop too many) names its target,
    display-safe, so a person can fix ``base_url``.
    """
    error = parse_error(status, body, request_id(headers), retry_after_of(headers))
    error.rate_headers = rate_headers(headers)
    location = headers.get("location")
    if 300 <= status < 400 and location:
        target = display_url(urljoin(url, location.strip()))
        why = f"after {hops} redirects already followed" if hops >= MAX_REDIRECTS else "set base_url to it"
        error.args = (f"{error} — the gateway redirects to {target}; {why}",)
    error.args = (redact(str(error), call.key),)
    error.message = redact(error.message, call.key)
    error.body = _scrub_value(error.body, call.key)
    return error
