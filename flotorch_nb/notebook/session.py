"""The notebook session: what ``%%flotorch``, ``%flotorch`` and the chat panel share in one kernel.

One process-wide ``Session`` (``get_session()``) holds

- configuration overrides set from the notebook (``%flotorch model`` / ``base_url`` / ``login``). They
  win over the ``FLOTORCH_*`` environment, which is read each time a client is built, so a user's
  ``%env`` after ``import flotorch_nb`` still counts. The key is held as a ``Secret``: no ``repr``,
  ``str`` or error message of this module ever shows it;
- the client, built lazily and rebuilt whenever that configuration changes, so a cell never talks to
  a stale gateway. The old client is *retired*, not closed under its callers' feet: a chat-panel
  stream or an ``ainvoke`` still running on it finishes normally, and its pools are closed the
  moment its last call ends (at once if it is idle): ``FlotorchLLM.close_when_idle``;
- the ``%%flotorch`` conversation (OpenAI message dicts) and which answer produced each reply;
- the usage ledger and an optional token budget, checked *before* any network I/O.

Record/replay is deliberately not a session override: it is the ``FLOTORCH_RECORD`` /
``FLOTORCH_REPLAY`` environment (``%flotorch record DIR`` sets exactly that), so a ``FlotorchLLM()``
the user builds in the same notebook records or replays too.

Pure: no IPython, no widgets. Thread-safe for the kernel's main thread plus chat-panel tasks.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _config
from .._config import Secret
from .._errors import BudgetExceededError, ConfigurationError
from ..llm import FlotorchLLM
from .ledger import Ledger

if TYPE_CHECKING:

    from .._response import LLMResponse

__all__ = ["Exchange", "Session", "get_session", "reset_session"]

# Everything a built client depends on; a change to any of them means "build a new one".
_CLIENT_ENV = (
    _config.ENV_API_KEY,
    _config.ENV_BASE_URL,
    _config.ENV_MODEL_ID,
    _config.ENV_TIMEOUT,
    _config.ENV_MAX_RETRIES,
    _config.ENV_RECORD,
    _config.ENV_REPLAY,
)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One answered turn of the conversation: the reply message and the response that produced it."""

    message: dict[str, Any]
    response: LLMResponse


def _digest(value: str | None) -> str | None:
    # The fingerprint must notice a changed key without keeping a second plain copy of it.
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


class Session:
    """State shared by the notebook surfaces of one kernel; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._model_id: str | None = None
        self._base_url: str | None = None
        self._api_key: Secret | None = None
        self._clients: dict[str | None, FlotorchLLM] = {}
        self._fingerprint: tuple[str | None, ...] | None = None
        self.conversation: list[dict[str, Any]] = []
        self._exchanges: list[Exchange] = []
        self.ledger = Ledger()
        self._budget: int | None = None

    # -- configuration ---------------------------------------------------------------------------
    def configure(
        self,
        *,
        model_id: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """Override the model, gateway URL and/or key for this session (validated before storing).

        Only the arguments given change; the next ``client()`` call builds a new client.
        """
        with self._lock:
            if model_id is not None:
                self._model_id = _non_empty(model_id, "model_id")
            if base_url is not None:
                self._base_url = check_base_url(base_url)
            if api_key is not None:
                self._api_key = Secret(_non_empty(api_key, "api_key"))

    def clear_overrides(self) -> None:
        """Forget every override: the environment decides again."""
        with self._lock:
            self._model_id = self._base_url = None
            self._api_key = None

    @property
    def model_id(self) -> str | None:
        """The session's default model: the override, else ``FLOTORCH_MODEL_ID``, else None."""
        return self._model_id or os.environ.get(_config.ENV_MODEL_ID) or None

    @property
    def base_url(self) -> str | None:
        """The gateway URL in effect (override, else ``FLOTORCH_BASE_URL``; replay needs none)."""
        return self._base_url or os.environ.get(_config.ENV_BASE_URL) or None

    @property
    def api_key_source(self) -> str | None:
        """Where the key comes from (``"session"``, ``"FLOTORCH_API_KEY"``), or None: never the key."""
        if self._api_key is not None:
            return "session"
        return _config.ENV_API_KEY if os.environ.get(_config.ENV_API_KEY) else None

    @property
    def mode(self) -> str:
        """``replay``, ``record`` or ``live``, as ``FLOTORCH_REPLAY`` / ``FLOTORCH_RECORD`` say."""
        if os.environ.get(_config.ENV_REPLAY):
            return "replay"
        return "record" if os.environ.get(_config.ENV_RECORD) else "live"

    def missing(self) -> list[str]:
        """The environment variables a client still needs (empty when a client can be built)."""
        replay = self.mode == "replay"  # replay answers from files: it needs no key and no URL
        needed = [(_config.ENV_MODEL_ID, self.model_id)]
        if not replay:
            needed += [(_config.ENV_API_KEY, self.api_key_source), (_config.ENV_BASE_URL, self.base_url)]
        return [name for name, value in needed if not value]

    # -- the client ------------------------------------------------------------------------------
    def _current_fingerprint(self) -> tuple[str | None, ...]:
        env = tuple(
            _digest(os.environ.get(name)) if name == _config.ENV_API_KEY else os.environ.get(name)
            for name in _CLIENT_ENV
        )
        key = self._api_key.get_secret_value() if self._api_key else None
        return (self._model_id, self._base_url, _digest(key), *env)

    def client(self, model_id: str | None = None) -> FlotorchLLM:
        """The session's client (for ``model_id`` if given), built on first use.

        When the configuration changed since the client was built, the old clients are retired (see
        the module docstring) and a new one is built. Raises ``ConfigurationError`` (before any I/O)
        when the model, key or URL is missing.
        """
        with self._lock:
            fingerprint = self._current_fingerprint()
            if fingerprint != self._fingerprint:
                self._retire_clients()
                self._fingerprint = fingerprint
            name = _non_empty(model_id, "model_id") if model_id is not None else None
            client = self._clients.get(name)
            if client is None:
                key = self._api_key.get_secret_value() if self._api_key else None
                client = FlotorchLLM(name or self._model_id, key, self._base_url)
                self._clients[name] = client
            return client

    def _retire_clients(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close_when_idle()

    def close(self) -> None:
        """Drop every client the session built (rebuilt on next use); each is closed once idle.

        An idle client is closed now; one with a call in flight (a chat-panel stream) is closed by
        the end of that call, so closing the session never breaks an answer on its way.
        """
        with self._lock:
            self._retire_clients()
            self._fingerprint = None

    # -- the conversation ------------------------------------------------------------------------
    def messages_for(
        self, prompt: str, *, system: str | None = None, continue_: bool = False
    ) -> list[dict[str, Any]]:
        """The messages to send for ``prompt``: the conversation first if continuing, else a fresh turn.

        A ``system`` prompt replaces the conversation's own (there is at most one, first).
        """
        with self._lock:
            # The same dict objects, not copies: they identify which response produced each reply.
            history = list(self.conversation) if continue_ else []
        if system is not None:
            history = [m for m in history if m.get("role") != "system"]
            history.insert(0, {"role": "system", "content": system})
        return [*history, {"role": "user", "content": prompt}]

    def add_exchange(self, sent: list[dict[str, Any]], response: LLMResponse) -> None:
        """Make ``sent`` + the reply the conversation (``sent`` already holds any continued history)."""
        reply = response.assistant_message()
        with self._lock:
            keep = {id(e.message): e for e in self._exchanges}
            self.conversation = [*sent, reply]
            self._exchanges = [keep[id(m)] for m in self.conversation if id(m) in keep]
            self._exchanges.append(Exchange(reply, response))

    def response_for(self, message: Mapping[str, Any]) -> LLMResponse | None:
        """The response that produced an assistant ``message`` of the conversation, if known."""
        with self._lock:
            for exchange in self._exchanges:
                if exchange.message is message:
                    return exchange.response
        return None

    def clear_conversation(self) -> int:
        """Forget the conversation; return how many messages it had."""
        with self._lock:
            count = len(self.conversation)
            self.conversation = []
            self._exchanges = []
            return count

    # -- usage and budget ------------------------------------------------------------------------
    def record(self, resp: LLMResponse, source: str) -> None:
        """Count an answer in the ledger (``source``: ``"magic"``, ``"chat"``, ...)."""
        self.ledger.record(resp, source)

    @property
    def budget(self) -> int | None:
        """The session's token budget, or None for no limit."""
        return self._budget

    def set_budget(self, tokens: int | None) -> None:
        """Limit the session to ``tokens`` total tokens (None: no limit); calls are refused once spent."""
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0):
            raise ConfigurationError(f"the token budget must be a whole number > 0 (or None), got {tokens!r}")
        self._budget = tokens

    @property
    def spent_tokens(self) -> int:
        """Total tokens of the answers recorded so far."""
        return self.ledger.spent_tokens

    def check_budget(self) -> None:
        """Raise ``BudgetExceededError`` if the budget is spent; call it before sending anything."""
        budget, spent = self._budget, self.spent_tokens
        if budget is not None and spent >= budget:
            raise BudgetExceededError(
                f"token budget spent: {spent} of {budget} tokens used in this session, so the call was "
                "not sent. Raise it (`%flotorch budget N`), remove it (`%flotorch budget off`) or clear "
                "the usage (`%flotorch reset`)."
            )

    def reset(self) -> tuple[int, int]:
        """Clear the conversation and the ledger (budget and configuration stay); return both counts."""
        with self._lock:
            messages = self.clear_conversation()
            calls = len(self.ledger)
            self.ledger.clear()
            return messages, calls

    def __repr__(self) -> str:
        key = f"set ({self.api_key_source})" if self.api_key_source else "not set"
        return (
            f"Session(model_id={self.model_id!r}, base_url={self.base_url!r}, api_key={key!r}, "
            f"mode={self.mode!r}, messages={len(self.conversation)}, calls={len(self.ledger)}, "
            f"budget={self._budget!r})"
        )


def check_base_url(url: str) -> str:
    """An http(s) URL with a host, without a trailing slash; ``ConfigurationError`` otherwise."""
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a string, got {type(url).__name__}")
    return _config.check_base_url(url)  # the client's own rule, so both always agree


def _non_empty(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string")
    return value.strip()


_session: Session | None = None
_session_lock = threading.Lock()


def get_session() -> Session:
    """The process-wide session (created on first use)."""
    global _session
    with _session_lock:
        if _session is None:
            _session = Session()
        return _session


def reset_session() -> Session:
    """Close and drop the process-wide session; the next ``get_session()`` starts a fresh one."""
    global _session
    with _session_lock:
        old, _session = _session, None
    if old is not None:
        old.close()
    return get_session()
