"""Every default and every ``FLOTORCH_*`` environment variable, resolved in one place.

Precedence is argument > environment variable > default, and the environment is read when a client
is built, never at import: notebook users run ``%env FLOTORCH_API_KEY=...`` after ``import flotorch_nb``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, overload
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ._errors import ConfigurationError

ENV_API_KEY = "FLOTORCH_API_KEY"
ENV_BASE_URL = "FLOTORCH_BASE_URL"
ENV_MODEL_ID = "FLOTORCH_MODEL_ID"
ENV_TIMEOUT = "FLOTORCH_TIMEOUT"
ENV_MAX_RETRIES = "FLOTORCH_MAX_RETRIES"
ENV_RECORD = "FLOTORCH_RECORD"
ENV_REPLAY = "FLOTORCH_REPLAY"
ENV_NO_NEST_ASYNCIO = "FLOTORCH_NO_NEST_ASYNCIO"
#: Set by a launcher (python -m flotorch_nb.lab, binder/start) to the URL of the offline gateway it started.
ENV_OFFLINE_GATEWAY = "FLOTORCH_OFFLINE_GATEWAY"
#: The models ``%%flotorch --compare`` asks when no ``-m`` list is given (comma-separated); ``%load_ext``
#: sets it to the offline gateway's three text models when that gateway answers.
ENV_COMPARE_MODELS = "FLOTORCH_COMPARE_MODELS"

DEFAULT_ENDPOINT = "/api/openai/v1/chat/completions"
#: Long enough for a slow model's full answer, short enough that a dead gateway never hangs a cell.
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 2
#: 64 concurrent notebook tasks is a common fan-out; keep that many sockets alive between calls.
POOL_MAX_CONNECTIONS = 100
POOL_MAX_KEEPALIVE = 100

#: Used in replay mode, where no request reaches a network: recordings match on content only.
REPLAY_API_KEY = "replay-no-key"
REPLAY_BASE_URL = "http://replay.invalid"

CassetteMode = Literal["record", "replay"]


class Secret:
    """A string that never shows itself: ``repr``/``str`` print a mask, so logs and tracebacks stay clean."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The real value, for the one place that needs it (the Authorization header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        raise TypeError("a Secret is not picklable, so it cannot be written to disk by accident")

    def fingerprint(self) -> str:
        """A short, non-reversible name for this value (a salted SHA-256 prefix): two clients on
        one key share what is per key (``concurrency="auto"``'s window) without holding the key."""
        import hashlib

        return hashlib.sha256(b"flotorch_nb key fingerprint\0" + self._value.encode()).hexdigest()[:16]


def redact(text: str, secret: Secret | None) -> str:
    """Remove the key from text that came from elsewhere (a gateway may echo a header back)."""
    if secret is None:
        return text
    value = secret.get_secret_value()
    return text.replace(value, "***") if len(value) >= 4 else text


def display_url(url: str) -> str:
    """``url`` fit to show or save (reprs, errors, banners, the provenance a notebook keeps): without
    its ``user:password@`` part, query string and fragment, any of which may hold a key."""
    try:
        return _shown(urlsplit(url))
    except ValueError:  # urlsplit refuses e.g. "http://[::1"; its text may still hold a key
        return "(not a valid URL)"


def _check_key(key: str) -> str:
    """A key that can travel in an HTTP header. Never echoes the key: its error would be printed."""
    key = key.strip()
    if not key:
        raise ConfigurationError(
            f"the API key is empty: pass api_key=... or set {ENV_API_KEY} to your FloTorch key "
            "(in a notebook, %flotorch login asks for it)"
        )
    if any(not "!" <= ch <= "~" for ch in key):
        raise ConfigurationError(
            "api_key contains a character that cannot be sent in an HTTP header (a space, a control "
            "character, or a non-ASCII character such as a smart quote pasted from a document); "
            "copy the key again from FloTorch"
        )
    return key


@dataclass(frozen=True, slots=True)
class Settings:
    """What a client was built with, after arguments, environment and defaults were combined."""

    model_id: str
    api_key: Secret
    base_url: str
    endpoint: str
    timeout: float
    max_retries: int
    cassette_mode: CassetteMode | None
    cassette_path: str | None

    @property
    def url(self) -> str:
        """The full chat-completions URL; a trailing ``/`` on base_url never doubles the slash."""
        return self.base_url + self.endpoint


def _from_env(value: str | None, name: str, env: Mapping[str, str]) -> str | None:
    if value is not None:
        return value
    found = env.get(name)
    return found if found else None


def check_base_url(base_url: str, endpoint: str = DEFAULT_ENDPOINT) -> str:
    """An http(s) URL with a host, without the trailing slash (so paths never get a double ``//``).

    A query string or fragment is refused: the endpoint would be appended after it, and whatever it
    holds (often a key: ``?api_key=...``) would travel into reprs, logs and errors. Messages show the
    URL without its query, fragment or ``user:password@`` part, for the same reason.

    A URL that already ends with the start of ``endpoint`` (``http://host/api/openai/v1``, pasted from
    an OpenAI-style example) is refused too, naming the URL to use: the client appends the endpoint
    itself, so every request would go to ``/api/openai/v1/api/openai/v1/...`` and come back as a
    puzzling 404. Refused rather than silently trimmed, because a gateway may really be mounted under
    such a path with another ``endpoint``; the fix is one edit the message spells out.
    """
    text = base_url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- parsing the port is what raises for ":99999" or ":abc"
    except ValueError as exc:
        # urlsplit's reasons ("Invalid IPv6 URL", "Port out of range") never quote the URL itself.
        raise ConfigurationError(
            f"base_url is not a valid URL ({exc}); expected something like https://gateway.flotorch.cloud"
        ) from None
    shown = _shown(parts)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"base_url must be an http(s) URL such as https://gateway.flotorch.cloud, got {shown!r}"
        )
    if "?" in text or "#" in text:
        raise ConfigurationError(
            f"base_url must not have a query string or fragment (the part from '?' or '#' on, not shown "
            f"here since it may hold a key); use only scheme://host[:port][/path], e.g. {shown!r}"
        )
    text = text.rstrip("/")
    doubled = _endpoint_overlap(parts.path.rstrip("/"), endpoint)
    if doubled:
        fixed = _shown(parts._replace(path=parts.path.rstrip("/").removesuffix(doubled)))
        raise ConfigurationError(
            f"base_url {shown.rstrip('/')!r} already ends with {doubled!r}, which the client adds "
            f"itself (it sends to base_url + {endpoint!r}); set base_url / {ENV_BASE_URL} to "
            f"{fixed.rstrip('/')!r}"
        )
    return text


def _endpoint_overlap(path: str, endpoint: str) -> str | None:
    """The longest start of ``endpoint``, two path segments or more (``/api/openai``), that ``path``
    ends with; None when there is none (``/gateway`` is a prefix, not a pasted endpoint)."""
    segments = [s for s in endpoint.split("/") if s]
    for count in range(len(segments), 1, -1):
        start = "/" + "/".join(segments[:count])
        if path == start or path.endswith(start):
            return start
    return None


def _shown(parts: SplitResult) -> str:
    """A parsed URL as it may be shown in a message: no credentials, no query, no fragment."""
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


def _check_endpoint(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ConfigurationError(f"endpoint must be a non-empty path, got {endpoint!r}")
    endpoint = endpoint.strip()
    return endpoint if endpoint.startswith("/") else "/" + endpoint


def check_timeout(timeout: object, what: str = "timeout") -> float:
    """A positive, finite number of seconds; anything else is a configuration mistake."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(f"{what} must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigurationError(f"{what} must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


@overload
def check_whole(
    value: object,
    what: str,
    at_least: int = 0,
    error: Callable[[str], Exception] = ...,
    *,
    or_none: Literal[False] = False,
) -> int: ...
@overload
def check_whole(
    value: object, what: str, at_least: int = 0, error: Callable[[str], Exception] = ..., *, or_none: bool
) -> int | None: ...
def check_whole(
    value: object,
    what: str,
    at_least: int = 0,
    error: Callable[[str], Exception] = ConfigurationError,
    *,
    or_none: bool = False,
) -> int | None:
    """``value`` as a whole number >= ``at_least`` (or None, when ``or_none``), else ``error`` saying
    so: one rule for every count the package takes. ``True`` is not a count and ``2.0`` is not a
    whole number, though Python would let both through an ``int`` comparison."""
    if value is None and or_none:
        return None
    whole = whole_or(value, at_least)
    if whole is None:
        either = " or None" if or_none else ""
        raise error(f"{what} must be a whole number >= {at_least}{either}, got {value!r:.60}")
    return whole


def whole_or(value: object, at_least: int = 0) -> int | None:
    """``value`` when it is a whole number >= ``at_least``, else None: :func:`check_whole`'s rule for
    callers that answer a wrong count their own way (the offline gateway's 400s, a schema's bounds)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= at_least else None


def check_fallbacks(fallbacks: object, model_id: str) -> tuple[str, ...]:
    """The models to ask, in order, when ``model_id`` fails in a way another model may not (see
    ``flotorch_nb._pipeline._recover``): a list of distinct, non-empty model ids without ``model_id`` itself.
    A single string is refused rather than read as its letters."""
    if fallbacks is None:
        return ()
    if isinstance(fallbacks, str | bytes) or not isinstance(fallbacks, list | tuple):
        raise ConfigurationError(
            f"fallbacks must be a list of model ids, e.g. fallbacks=['model-b'], got {fallbacks!r:.80}"
        )
    models: list[str] = []
    for index, model in enumerate(fallbacks):
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"fallbacks[{index}] must be a non-empty model id, got {model!r:.80}")
        model = model.strip()
        if model == model_id:
            raise ConfigurationError(
                f"fallbacks[{index}] is {model!r}, the client's own model: a fallback is another model"
            )
        if model in models:
            raise ConfigurationError(f"fallbacks[{index}] repeats {model!r}: name each model once")
        models.append(model)
    return tuple(models)


def _timeout_from_env(env: Mapping[str, str]) -> float | None:
    """``FLOTORCH_TIMEOUT`` as seconds; a mistake names the variable and what it holds."""
    raw = env.get(ENV_TIMEOUT)
    if not raw:
        return None
    try:
        return check_timeout(float(raw), ENV_TIMEOUT)
    except (ValueError, ConfigurationError):  # ConfigurationError is a ValueError too
        raise ConfigurationError(
            f"{ENV_TIMEOUT} must be a positive, finite number of seconds, got {raw!r}"
        ) from None


def _retries_from_env(env: Mapping[str, str]) -> int | None:
    """``FLOTORCH_MAX_RETRIES`` as a whole number: ``1.7`` is a mistake, not one retry."""
    raw = env.get(ENV_MAX_RETRIES)
    if not raw:
        return None
    text = raw.strip()
    if not text.isdigit() or not text.isascii():  # no sign, point, exponent, "nan" or "inf"
        raise ConfigurationError(f"{ENV_MAX_RETRIES} must be a whole number >= 0, got {raw!r}")
    return int(text)


def check_max_retries(max_retries: object) -> int:
    """A whole number of retries >= 0 (``True`` and ``2.0`` are not)."""
    return check_whole(max_retries, "max_retries")


def cassette_from_env(env: Mapping[str, str] | None = None) -> tuple[CassetteMode | None, str | None]:
    """``("replay", dir)``, ``("record", dir)`` or ``(None, None)`` from ``FLOTORCH_REPLAY`` / ``_RECORD``.

    The one place that decides: replay wins when both are set (answering from files must never
    silently turn into calling a gateway), and an empty variable counts as unset.
    """
    env = os.environ if env is None else env
    if env.get(ENV_REPLAY):
        return "replay", env[ENV_REPLAY]
    if env.get(ENV_RECORD):
        return "record", env[ENV_RECORD]
    return None, None


def _checked_model(model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("model_id must be a non-empty string")
    return model.strip()


def _checked_key(key: object) -> Secret:
    if not isinstance(key, str):
        raise ConfigurationError(f"api_key must be a string, got {type(key).__name__}")
    return Secret(_check_key(key))


def _checked_url(url: object, endpoint: str) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a string, got {type(url).__name__}")
    return check_base_url(url, endpoint)


def resolve(
    model_id: str | None,
    api_key: str | None,
    base_url: str | None,
    *,
    endpoint: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Combine arguments, environment and defaults into ``Settings``, or say exactly what is missing."""
    env = os.environ if env is None else env
    cassette_mode, cassette_path = cassette_from_env(env)

    model = _from_env(model_id, ENV_MODEL_ID, env)
    key = _from_env(api_key, ENV_API_KEY, env)
    url = _from_env(base_url, ENV_BASE_URL, env)
    if cassette_mode == "replay":
        key = key or REPLAY_API_KEY
        url = url or REPLAY_BASE_URL

    missing = [
        (arg, var)
        for arg, var, value in (
            ("model_id", ENV_MODEL_ID, model),
            ("api_key", ENV_API_KEY, key),
            ("base_url", ENV_BASE_URL, url),
        )
        if value is None
    ]
    if missing:
        args = ", ".join(f"{arg}=..." for arg, _ in missing)
        envs = " and ".join(var for _, var in missing)
        raise ConfigurationError(
            f"FlotorchLLM needs {', '.join(a for a, _ in missing)}: pass FlotorchLLM({args}) "
            f"or set {envs} in the environment"
        )
    assert model is not None and key is not None and url is not None
    model, secret = _checked_model(model), _checked_key(key)
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a string, got {type(url).__name__}")

    if timeout is None:
        timeout = _timeout_from_env(env)
    if max_retries is None:
        max_retries = _retries_from_env(env)
    retries = check_max_retries(max_retries if max_retries is not None else DEFAULT_MAX_RETRIES)
    checked_endpoint = _check_endpoint(endpoint if endpoint is not None else DEFAULT_ENDPOINT)

    return Settings(
        model_id=model,
        api_key=secret,
        base_url=_checked_url(url, checked_endpoint),
        endpoint=checked_endpoint,
        timeout=check_timeout(timeout if timeout is not None else DEFAULT_TIMEOUT),
        max_retries=retries,
        cassette_mode=cassette_mode,
        cassette_path=cassette_path,
    )


def derive(
    settings: Settings,
    *,
    model_id: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    endpoint: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> Settings:
    """``settings`` with some values replaced, each checked as ``resolve`` checks it (for a client's
    ``copy``): the key stays a ``Secret`` and is never unwrapped outside this module."""
    import dataclasses

    changes: dict[str, object] = {}
    if model_id is not None:
        changes["model_id"] = _checked_model(model_id)
    if api_key is not None:
        changes["api_key"] = _checked_key(api_key)
    if endpoint is not None:
        changes["endpoint"] = _check_endpoint(endpoint)
    if base_url is not None or endpoint is not None:  # a base URL is checked against its endpoint
        url = base_url if base_url is not None else settings.base_url
        changes["base_url"] = _checked_url(url, str(changes.get("endpoint", settings.endpoint)))
    if timeout is not None:
        changes["timeout"] = check_timeout(timeout)
    if max_retries is not None:
        changes["max_retries"] = check_max_retries(max_retries)
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
