"""The one exception tree of flotorch_nb.

Every failure a caller can see is a ``FlotorchError``; no bare httpx2, ``KeyError`` or ``TypeError``
escapes the public API, so ``except FlotorchError`` is always enough::

    FlotorchError
     +-- ConfigurationError (ValueError)   missing/invalid model_id, api_key, base_url, options
     +-- InvalidRequestError (ValueError)  bad messages/params, refused before any I/O
     +-- BudgetExceededError               the notebook session's token budget is spent
     +-- HookError                         a before_request/after_call hook raised (see _hooks)
     +-- ReplayMissError                   replay mode: no recording for this request
     +-- ReplayFileError                   replay mode: the recording exists but is damaged
     +-- APIConnectionError                the gateway could not be reached
     |    +-- APITimeoutError              ... or did not answer in time
     +-- APIStatusError                    the gateway answered with a 4xx/5xx status
     |    +-- BadRequestError (400, 422)
     |    +-- AuthenticationError (401)
     |    +-- PermissionDeniedError (403)
     |    +-- NotFoundError (404)
     |    +-- ConflictError (409)
     |    +-- RateLimitError (429)
     |    +-- ServerError (5xx)
     +-- ResponseError                     a 2xx answer that cannot be used
          +-- StreamError                  a stream that broke, carried an error or never finished
          +-- StructuredOutputError        JSON that does not validate against the requested model

Messages always name what a person needs to act: the HTTP status, the gateway's own message and the
request id. They never contain the API key (see ``redact``).

Every error survives ``pickle`` with its type, message and attributes, whatever its ``__init__``
takes: Dask and multiprocessing carry a worker's exception to the caller that way, and a class that
cannot be rebuilt arrives as a bare ``Exception`` with only its text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigurationError",
    "ConflictError",
    "FlotorchError",
    "HookError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReplayFileError",
    "ReplayMissError",
    "ResponseError",
    "ServerError",
    "StreamError",
    "StructuredOutputError",
    "status_error",
]


class FlotorchError(Exception):
    """Base class of every error raised by flotorch_nb."""

    #: Calls a recovering call made before it failed with this error (validation re-asks and
    #: fallbacks, see ``flotorch_nb._pipeline._recover``); 1 for a single call.
    attempts: int = 1
    #: Their usage summed (a ``Usage``; None when no call reported usage or nothing was summed).
    usage_total: Any = None
    #: The models asked before the one that failed and why each was passed over: ``(model, reason)``.
    fallbacks: Any = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls ``type(self)(*self.args)``, which fails for every subclass with
        # keyword-only or extra arguments (HookError, APIStatusError, CacheError...). Rebuild without
        # running ``__init__`` instead: the args (the message) and the attributes are restored as they
        # were, so a subclass added later pickles without writing anything.
        return (_rebuild, (type(self), self.args), self.__dict__ or None)


def _rebuild(cls: type[FlotorchError], args: tuple[Any, ...]) -> FlotorchError:
    """An error of ``cls`` with ``args`` and no ``__init__`` run (``pickle`` then sets its attributes)."""
    return cls.__new__(cls, *args)


class ConfigurationError(FlotorchError, ValueError):
    """The client is missing or given an invalid model id, key, URL or option (raised before any I/O)."""


class InvalidRequestError(FlotorchError, ValueError):
    """The messages or parameters of a call are malformed (raised before any I/O)."""


class BudgetExceededError(FlotorchError):
    """The notebook session's token budget is spent; further calls are refused before any I/O."""


class HookError(FlotorchError):
    """A client hook raised. Before a request: nothing was sent. After a call: the answer was received
    and is kept on ``.response`` (None when the call itself failed)."""

    def __init__(self, message: str, *, hook: str, response: Any = None) -> None:
        super().__init__(message)
        self.hook = hook
        self.response = response


class APIConnectionError(FlotorchError):
    """The gateway could not be reached (DNS, refused connection, broken connection)."""


class APITimeoutError(APIConnectionError):
    """The gateway did not answer within the configured timeout."""


class APIStatusError(FlotorchError):
    """The gateway answered with an error status; carries the status, its message and request id."""

    #: The answer's rate-limit headers (``Retry-After``, ``x-ratelimit-*``), set by the transport.
    rate_headers: Mapping[str, str] | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        gateway_message: str,
        request_id: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = gateway_message
        self.request_id = request_id
        self.body = body
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400/422: the gateway refused the request as malformed."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong or expired."""


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but not allowed to use this model or endpoint."""


class NotFoundError(APIStatusError):
    """404: unknown model id or wrong endpoint path."""


class ConflictError(APIStatusError):
    """409: the gateway reported a conflicting concurrent request (retried)."""


class RateLimitError(APIStatusError):
    """429: too many requests or tokens; retried after Retry-After."""


class ServerError(APIStatusError):
    """5xx: the gateway or the model provider failed (retried)."""


class ResponseError(FlotorchError):
    """A 2xx answer whose body is not a usable chat completion."""


class StreamError(ResponseError):
    """A streamed answer that broke, carried an in-band error, or ended without ``[DONE]``."""


class StructuredOutputError(ResponseError):
    """The model's JSON does not validate against the requested pydantic model."""

    def __init__(self, message: str, *, content: str, response: Any = None, problems: str = "") -> None:
        super().__init__(message)
        self.content = content
        #: The ``LLMResponse`` that failed validation: its tokens were spent and should be counted.
        self.response = response
        #: What failed, as sent back to the model by a validation retry (``field: message; ...``).
        self.problems = problems or message


class ReplayMissError(FlotorchError):
    """Replay mode got a request that was never recorded; the message names it and how to record it."""

    def __init__(self, message: str, *, directory: Path, request: Mapping[str, Any], key: str) -> None:
        super().__init__(message)
        self.directory = directory
        self.request = dict(request)
        self.key = key


class ReplayFileError(FlotorchError):
    """A recording file exists for the request but cannot be used; the message names it and the fault.

    Raised for a file that cannot be read, is not JSON, or lacks a field replay needs (``key``,
    ``response``, ``response.status``...). Record the request again or restore the file.
    """

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"The recording {path} cannot be replayed: {problem}. Restore it (e.g. from git) or record "
            f"it again with FLOTORCH_RECORD={path.parent}"
        )
        self.path = path
        self.problem = problem


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}

_HINTS: dict[type[APIStatusError], str] = {
    AuthenticationError: "check FLOTORCH_API_KEY (or `%flotorch login`)",
    NotFoundError: "check the model id and the base URL / endpoint",
    RateLimitError: "slow down or raise max_retries",
}


def status_error(
    status_code: int,
    gateway_message: str,
    *,
    request_id: str | None = None,
    body: Any = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """Build the right ``APIStatusError`` subclass for a status, with a message a person can act on."""
    if status_code in _STATUS_CLASSES:
        cls = _STATUS_CLASSES[status_code]
    elif status_code >= 500:
        cls = ServerError
    else:
        cls = APIStatusError
    text = f"HTTP {status_code} from the gateway: {gateway_message}"
    if request_id:
        text += f" (request id {request_id})"
    if cls in _HINTS:
        text += f" — {_HINTS[cls]}"
    return cls(
        text,
        status_code=status_code,
        gateway_message=gateway_message,
        request_id=request_id,
        body=body,
        retry_after=retry_after,
    )
