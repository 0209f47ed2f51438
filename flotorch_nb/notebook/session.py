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
- the ``%%flotorch`` conversation, a ``Conversation`` like each chat panel's;
- the usage ledger with its token and money budgets, attached to every client the session builds (and
  to a client given to a ``ChatPanel``) as a gate and an ``after_call`` hook, so every attempt made
  with them is checked *before* any network I/O, under any concurrency, and every call counted (and
  priced) once, whichever surface or user code makes it;
- the answers of the session with their provenance (``answers``, ``%flotorch provenance``), kept by
  ``AnswerLog.after_call``, a hook on the same clients that reads each answer's ``provenance``.

Prices are ``pricing``'s process-wide table; ``FLOTORCH_PRICES`` is (re)read whenever a client is
asked for, so a malformed price file is a ``ConfigurationError`` naming its line there, before
anything is sent, rather than inside a hook.

Record/replay is deliberately not a session override: it is the ``FLOTORCH_RECORD`` /
``FLOTORCH_REPLAY`` environment (``%flotorch record DIR`` sets exactly that, through ``setenv``, so
``reset()`` can undo it), so a ``FlotorchLLM()`` the user builds in the same notebook records or
replays too.

``reset()`` returns the whole notebook layer of the process to a clean state (tests use it).

Pure: no IPython, no widgets. Thread-safe for the kernel's main thread plus chat-panel tasks.
"""

from __future__ import annotations

import hashlib
import os
import threading
from decimal import Decimal

from .. import _config, pricing
from .._config import Secret
from .._errors import ConfigurationError
from .._text import non_empty
from .._transport._pools import forget_closed_loops
from ..llm import FlotorchLLM
from ..spending import MoneyBudget
from . import autostart
from .answer_log import AnswerLog
from .conversation import Conversation
from .ledger import Ledger

__all__ = ["Session", "get_session", "reset", "reset_session"]

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
        #: The ``%%flotorch`` conversation.
        self.conversation = Conversation()
        #: Usage of every call made with a session client, and the token and money budgets.
        self.ledger = Ledger()
        #: Every answer of the session's clients, with its provenance (``%flotorch provenance``).
        self.answers = AnswerLog()
        # FLOTORCH_* variables this session set (record/replay/live): their values before, and after.
        self._env_before: dict[str, str | None] = {}
        self._env_set: dict[str, str | None] = {}

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
                self._model_id = non_empty(model_id, "model_id")
            if base_url is not None:
                self._base_url = check_base_url(base_url)
            if api_key is not None:
                self._api_key = Secret(non_empty(api_key, "api_key"))

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
        return _config.cassette_from_env()[0] or "live"

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
        when the model, key or URL is missing, or the ``FLOTORCH_PRICES`` file is malformed.
        """
        self.prices()
        with self._lock:
            fingerprint = self._current_fingerprint()
            if fingerprint != self._fingerprint:
                self._retire_clients()
                self._fingerprint = fingerprint
            name = non_empty(model_id, "model_id") if model_id is not None else None
            client = self._clients.get(name)
            if client is None:
                key = self._api_key.get_secret_value() if self._api_key else None
                client = self.watch(FlotorchLLM(name or self._model_id, key, self._base_url))
                self._clients[name] = client
            return client

    def watch(self, llm: FlotorchLLM) -> FlotorchLLM:
        """Check every call of ``llm`` against the budgets, count it in the ledger and keep its
        answer's provenance (idempotent).

        Done to every client the session builds; the chat panel does it to a client it is given.
        """
        self.ledger.attach(llm)
        if self.answers.after_call not in llm.hooks.after_call:
            llm.hooks.after_call.append(self.answers.after_call)
        return llm

    def prices(self) -> pricing.PriceTable:
        """The price table, ``FLOTORCH_PRICES``'s file reread if the variable changed (a malformed
        file: ``ConfigurationError`` naming the line)."""
        return pricing.default_prices()

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

    # -- usage and budget (the ledger's; kept here for %flotorch and existing callers) -------------
    @property
    def budget(self) -> int | None:
        """The session's token budget, or None for no limit."""
        return self.ledger.budget

    def set_budget(self, tokens: int | None) -> None:
        """Keep the session at or under ``tokens`` total tokens (None: no limit): a call waits while calls
        in flight hold what is left, and is refused when its worst case cannot fit even without them."""
        self.ledger.set_budget(tokens)

    @property
    def spent_tokens(self) -> int:
        """Total tokens of the calls recorded so far (estimates included)."""
        return self.ledger.spent_tokens

    def check_budget(self) -> None:
        """Raise ``BudgetExceededError`` if the token budget is spent already."""
        self.ledger.check_budget()

    @property
    def money_budget(self) -> MoneyBudget | None:
        """The money budget, or None."""
        return self.ledger.money_budget

    def set_money_budget(self, limit: object | None) -> None:
        """Keep the session's spend at or under ``limit`` dollars (None: no limit), by the token
        budget's rule."""
        self.ledger.set_money_budget(limit)

    @property
    def spent_money(self) -> Decimal:
        """Dollars spent by the priced calls recorded so far."""
        return self.ledger.spent_money

    # -- environment ------------------------------------------------------------------------------
    def setenv(self, name: str, value: str | None) -> None:
        """Set (or with None remove) an environment variable, remembering it so ``reset`` undoes it."""
        with self._lock:
            self._env_before.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
            self._env_set[name] = value

    def _restore_env(self) -> None:
        for name, before in self._env_before.items():
            if os.environ.get(name) != self._env_set.get(name):
                continue  # changed by someone else since: theirs now, left alone
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        self._env_before.clear()
        self._env_set.clear()

    # -- clearing ---------------------------------------------------------------------------------
    def clear(self) -> tuple[int, int]:
        """Clear the conversation and the ledger (budget and configuration stay); return both counts."""
        with self._lock:
            return self.conversation.clear(), self.ledger.clear()

    def reset(self) -> None:
        """Everything this session holds back to new: clients closed (once idle), overrides, the
        conversation, the ledger, both budgets, the answers, and the environment variables it set."""
        with self._lock:
            self.close()
            self.clear_overrides()
            self.conversation = Conversation()
            self.ledger.clear()
            self.ledger.set_budget(None)
            self.ledger.set_money_budget(None)
            self.answers.clear()
            self._restore_env()

    def __repr__(self) -> str:
        key = f"set ({self.api_key_source})" if self.api_key_source else "not set"
        return (
            f"Session(model_id={self.model_id!r}, base_url={self.base_url!r}, api_key={key!r}, "
            f"mode={self.mode!r}, turns={len(self.conversation)}, calls={len(self.ledger)}, "
            f"budget={self.budget!r})"
        )


def check_base_url(url: str) -> str:
    """An http(s) URL with a host, without a trailing slash; ``ConfigurationError`` otherwise."""
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a string, got {type(url).__name__}")
    return _config.check_base_url(url)  # the client's own rule, so both always agree


_session: Session | None = None
_session_lock = threading.Lock()


def get_session() -> Session:
    """The process-wide session (created on first use)."""
    global _session
    with _session_lock:
        if _session is None:
            _session = Session()
        return _session


def reset() -> Session:
    """Return the notebook layer of this process to a clean state, and the (same) session.

    The session's clients, overrides, conversation, ledger, budgets, answers and the environment
    variables it set; the prices of ``%flotorch price`` and ``FLOTORCH_PRICES``; the offline gateway
    ``%load_ext`` started (and the variables it set); the client module's record of pools on event
    loops that were closed without cancelling their tasks. The session object itself stays, so the
    hooks it attached to clients someone still holds stay live.
    """
    session = get_session()
    session.reset()
    pricing.reset_default_prices()
    autostart.stop_gateway()
    forget_closed_loops()
    return session


#: The former name of ``reset``.
reset_session = reset
