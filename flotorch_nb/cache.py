"""The answer cache: finished answers kept in one SQLite file, so a request asked again costs nothing.

``FlotorchLLM(cache="answers.sqlite")`` (or ``FLOTORCH_CACHE``, or ``%flotorch cache PATH``, or
``llm.batch(..., cache=PATH)``) answers a request it has answered before from the file, with
``source="cache"``: no network, no hooks (a hit is not a call, so no budget or ledger sees it) and no
tokens spent. That is what makes an interrupted batch resumable: run it again with the same cache and
only the missing answers are sent.

Rows are keyed by the canonical request, with the very rule replay matches on
(``flotorch_nb._request_key``, re-exported as ``flotorch_nb.replay.canonical_request`` /
``request_key``): endpoint, model, messages, tools, schema
and every parameter, ``1`` equal to ``1.0``; not the host, not the key. One difference, on purpose:
``stream`` and ``stream_options`` are left out, because a cached answer is the finished answer, so a
streamed call and an ``invoke`` of the same request share one row.

Decisions:

- stdlib ``sqlite3`` in WAL mode, ``synchronous=NORMAL``, one connection per process
  (``_sqlite.PerProcess``: a forked child opens its own): several processes on one machine (Dask
  workers) read and write one file at once.
- Only answers are stored, never errors. Each answer is committed on its own as it arrives, so an
  interrupt or a killed process loses nothing that had been answered.
- The file never holds the key: request bodies are not stored (the hash identifies them), and the
  answer's text is scrubbed of the key as a last guard, as replay scrubs its files.
- Opening checks the file (a SQLite file of ours, writable, not locked for longer than
  ``busy_timeout``) and raises ``CacheError`` before any request is sent. Any number of processes
  may open, and so create, one new file at the same moment (every worker of a Dask job with
  ``cache=``): each step of setting it up waits for the others within ``busy_timeout``, so a lock
  that is only transient is never an error (``_sqlite``, shared with the call log). A write that fails later
  keeps the answer where it already is (returned, or in the batch result) and warns
  (``CacheWriteWarning``); nothing is silently lost.

``StoredAnswer`` (``_stored``) is the compact form of an ``LLMResponse`` used both for rows here and
for the items of a ``BatchResult``. Pure stdlib at import; ``sqlite3`` is imported when a cache is
first opened. The client asks and fills it from its call pipeline (``_call.answered`` /
``_call.finished``), which stamps a hit like any other answer; ``lookup`` parses it as the call's
class, so that a row that does not parse is a miss where the misses are counted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import Secret, redact
from ._errors import FlotorchError, StructuredOutputError
from ._response import LLMResponse, parse_structured
from ._sqlite import FileKind, PerProcess, in_child, open_shared
from ._stored import StoredAnswer

if TYPE_CHECKING:
    from ._transport import Call

__all__ = [
    "ENV_CACHE",
    "AnswerCache",
    "CacheError",
    "CacheWriteWarning",
    "StoredAnswer",
    "cache_key",
    "resolve_cache",
]

logger = logging.getLogger("flotorch_nb")

ENV_CACHE = "FLOTORCH_CACHE"
FORMAT = "1"
KIND = "flotorch_nb answer cache"
#: How long a write waits for another process's write to finish before the file counts as locked.
DEFAULT_BUSY_TIMEOUT = 30.0


class CacheError(FlotorchError):
    """The answer cache file cannot be used (corrupt, not ours, locked, unwritable); nothing was sent."""

    def __init__(self, path: Path, problem: str, advice: str | None = None) -> None:
        advice = (
            advice or "Use another file, or remove this one (it only holds answers that can be asked again)"
        )
        super().__init__(f"The answer cache {path} cannot be used: {problem}. Nothing was sent. {advice}")
        self.path = path
        self.problem = problem


class CacheWriteWarning(UserWarning):
    """An answer arrived but could not be written to the cache (it is still returned / in the result)."""


# -- the compact answer ----------------------------------------------------------------------------
def cache_key(call: Call) -> str:
    """The row key of a prepared call: its request key without ``stream``/``stream_options``
    (``flotorch_nb._request_key.answer_key``)."""
    return call.answer_key()


# -- the file --------------------------------------------------------------------------------------
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, answer TEXT NOT NULL, "
    "created REAL NOT NULL)",
)


_KIND = FileKind(KIND, FORMAT, _SCHEMA, frozenset(("answers",)), CacheError)


class AnswerCache:
    """One answer-cache file. Thread-safe; one SQLite connection per process, opened on first use."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout = busy_timeout
        self._file = PerProcess(lambda: open_shared(self.path, _KIND, self.busy_timeout))
        #: Counters for this process: lookups answered, lookups missed, answers written, writes failed.
        self.hits = self.misses = self.writes = self.write_failures = 0

    def __repr__(self) -> str:
        return f"AnswerCache({str(self.path)!r})"

    # -- opening -----------------------------------------------------------------------------------
    def open(self) -> AnswerCache:
        """Open and check the file now (``CacheError`` if it cannot serve); safe to call again."""
        with self._file.lock:
            self._file.get()
        return self

    def close(self) -> None:
        """Close this process's connection (reopened on next use)."""
        with self._file.lock:
            self._file.close()

    # -- rows --------------------------------------------------------------------------------------
    def get(self, key: str) -> StoredAnswer | None:
        """The stored answer for a request key, or None. A row that cannot be read is a miss (warned)."""
        answer = self._read(key)
        self._count(answer is not None)
        return answer

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def _read(self, key: str) -> StoredAnswer | None:
        import sqlite3

        started = time.perf_counter()
        try:
            with self._file.lock:
                row = self._file.get().execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
            answer = None if row is None else StoredAnswer.from_json(row[0], latency_s=0.0)
        except (sqlite3.Error, ValueError, LookupError, TypeError) as exc:
            logger.warning("answer cache %s: could not read a row (%s); asking the gateway", self.path, exc)
            return None
        if answer is not None:
            answer.latency_s = time.perf_counter() - started
        return answer

    def put(self, key: str, answer: StoredAnswer, secret: Secret | None = None) -> bool:
        """Store an answer (replacing any); False, with a ``CacheWriteWarning``, if it could not be."""
        import sqlite3

        text = redact(answer.to_json(), secret)
        try:
            with self._file.lock:
                self._file.get().execute(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                    (key, answer.model, text, time.time()),
                )
        except (sqlite3.Error, CacheError) as exc:
            self.write_failures += 1
            message = (
                f"answer cache {self.path}: an answer could not be written ({exc}); it is kept in memory"
            )
            logger.warning("%s", message)
            warnings.warn(message, CacheWriteWarning, stacklevel=3)
            return False
        self.writes += 1
        return True

    def __len__(self) -> int:
        with self._file.lock:
            (count,) = self._file.get().execute("SELECT COUNT(*) FROM answers").fetchone()
        return int(count)

    def keys(self) -> set[str]:
        """Every request key stored (for tests and tools)."""
        with self._file.lock:
            return {row[0] for row in self._file.get().execute("SELECT key FROM answers")}

    # -- what FlotorchLLM calls ----------------------------------------------------------------------
    def lookup(self, call: Call) -> LLMResponse | None:
        """The cached answer to ``call`` as an ``LLMResponse`` (``source="cache"``), its structured
        output parsed as ``call``'s class, or None. A row that does not parse as that class (stored
        for another class with the same schema) is a miss: the call is sent. ``hits`` and
        ``misses`` count what the caller got."""
        stored = self._read(cache_key(call))
        response = None if stored is None else stored.to_response()
        if response is not None and call.model_class is not None:
            try:
                response.parsed = parse_structured(call.model_class, response.content)
            except StructuredOutputError:
                response = None
        self._count(response is not None)
        return response

    def store(self, call: Call, response: LLMResponse) -> bool:
        """Keep ``response`` as the answer to ``call`` (only answers are ever stored)."""
        if response.source == "cache":
            return True
        return self.put(cache_key(call), StoredAnswer.of(response), call.key)


# -- choosing a cache ------------------------------------------------------------------------------
_OPEN: dict[Path, AnswerCache] = {}
_OPEN_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    """The lock may have been held at the fork; the caches stay (each opens its own connection)."""
    global _OPEN_LOCK
    _OPEN_LOCK = threading.Lock()


in_child(_forget_after_fork)


def resolve_cache(cache: object = None, *, env: Mapping[str, str] | None = None) -> AnswerCache | None:
    """The cache a client or batch uses: ``cache`` (a path, an ``AnswerCache``, or False for none),
    else ``FLOTORCH_CACHE``, else None. One ``AnswerCache`` per file and process is shared."""
    if cache is False:
        return None
    if isinstance(cache, AnswerCache):
        return cache
    if cache is None or cache is True:
        found = (os.environ if env is None else env).get(ENV_CACHE)
        if not found:
            if cache is True:
                from ._errors import ConfigurationError

                raise ConfigurationError(f"cache=True needs {ENV_CACHE}=PATH; or pass cache='answers.sqlite'")
            return None
        cache = found
    if not isinstance(cache, str | os.PathLike):
        from ._errors import ConfigurationError

        raise ConfigurationError(
            f"cache must be a file path, an AnswerCache, or False; got {type(cache).__name__}"
        )
    path = Path(cache).expanduser().resolve()
    with _OPEN_LOCK:
        found_cache = _OPEN.get(path)
        if found_cache is None:
            found_cache = _OPEN[path] = AnswerCache(path)
        return found_cache
