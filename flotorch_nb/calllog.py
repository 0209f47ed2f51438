"""The call log: every call of the process kept in one SQLite file, searchable, never holding the key.

``FLOTORCH_LOG=calls.sqlite`` (read when a client is built), ``%flotorch log on [PATH]`` or
``calllog.enable(PATH)`` records every finished call of every client in the process — an answer, a
failure, a stop, an answer-cache hit — with its model, messages, parameters, answer, tool calls,
tokens, cost, latency, outcome and error, source, request hash, time, and the notebook cell when the
extension knows it. ``flotorch_nb.logs(query, model=, since=, limit=)`` reads it back as a DataFrame;
``%flotorch logs -q TEXT`` shows a table; ``export(...)`` writes JSON lines. The file's tables are
described in ``_calllog_store``; opening it is ``_sqlite``'s, shared with the answer cache.

Decisions:

- One process-wide sink (``_logsink``): ``_call.end`` hands it each finished call, so invoke,
  streams (when they end), batch items, comparisons, tool-loop steps and the chat panel are logged
  by the one pipeline they share, whoever built their client.
- The caller builds the row (plain values: about 4 µs) and appends it to a queue; a background
  thread prices, writes and indexes batches (every ``FLUSH_EVERY`` seconds, or at once when
  ``BATCH`` calls wait) in one transaction each. The row rather than the call's objects waits: a
  queue of responses and their dicts is walked by every garbage collection until the writer's
  round, which cost a logged ``abatch`` more CPU than building the row. The queue is bounded: a
  caller that finds ``MAX_PENDING`` calls waiting writes them itself, so memory never grows
  without bound; while the file is failing (locked for longer than the busy timeout, unwritable)
  they are dropped instead, counted and warned about, so that a broken log never holds calls up.
- Several processes (Dask workers, several kernels) write one file: WAL, a busy timeout, and a batch
  that meets a lock is tried again (``RETRIES``) before it is given up.
- A log write never fails a call: a batch that cannot be written is counted (``dropped``,
  ``last_error``) and warned about once per log (``CallLogWarning``, and the ``flotorch_nb`` logger).
- A search reads on a connection of its own that only reads: in WAL mode it never waits for a
  writer, ours or another process's. This process's calls are written first when that can be done
  within ``SEARCH_WAIT``; while the file is held longer (the writer waits out another process's
  write, up to ``busy_timeout`` x ``RETRIES``), the search answers with what the file holds and
  those calls are written later. A file nobody may read for ``SEARCH_WAIT`` is a ``CallLogError``.
- What is recorded is flushed by ``flush()``, ``close()``, ``disable()``, before every search (see
  above), and at interpreter exit (after the background loop of ``_bridge`` has ended its calls,
  so those are in too). A process killed hard (SIGKILL, a crash) loses what it had not written: at
  most the last ``FLUSH_EVERY`` seconds of calls; every batch written before is whole (one
  transaction each).
- In a forked child the parent's unwritten calls are the parent's to write: the child starts empty,
  with a connection of its own (``_sqlite.in_child``, as the answer cache does).

Stdlib only at import (``sqlite3`` when the file is first opened, pandas in ``logs``).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ._calllog_store import COLUMNS, KIND, CallLogError, Row, Where, count, priced, row, search, write
from ._config import check_whole
from ._errors import ConfigurationError
from ._pipeline import _logsink
from ._pipeline._hooks import current_label
from ._sqlite import PerProcess, in_child, is_lock, open_shared, typed_error

if TYPE_CHECKING:
    import sqlite3

    import pandas

    from ._response import LLMResponse, Source
    from ._transport import Call

__all__ = [
    "DEFAULT_PATH",
    "ENV_LOG",
    "CallLog",
    "CallLogError",
    "CallLogWarning",
    "active",
    "disable",
    "enable",
    "export",
    "from_env",
    "logs",
    "search_log",
    "set_cell",
]

logger = logging.getLogger("flotorch_nb")
_T = TypeVar("_T")

ENV_LOG = _logsink.ENV_LOG
#: Where ``%flotorch log on`` writes without a path (and ``enable()`` without ``FLOTORCH_LOG``).
DEFAULT_PATH = "calls.sqlite"
#: Seconds between the background writer's rounds: the most a hard kill can lose.
FLUSH_EVERY = 0.2
#: Calls written per transaction; this many waiting wake the writer before its round.
BATCH = 512
#: Calls waiting at most; a caller that finds this many writes them itself.
MAX_PENDING = 10_000
#: Seconds a write waits for another process's write before it counts as a failed try.
DEFAULT_BUSY_TIMEOUT = 10.0
#: Tries of a batch that meets a lock before it is given up (counted and warned about).
RETRIES = 3
#: Seconds a search waits at most, to write this process's calls first and then to read.
SEARCH_WAIT = 1.0


class CallLogWarning(UserWarning):
    """Calls could not be written to the call log (the calls themselves went on unharmed)."""


#: This process's id, as every row records it (kept here: ``os.getpid`` is a system call).
_pid = [os.getpid()]

#: The cell calls are being made in, as the notebook layer says (``set_cell``), else None.
_cell: Where | None = None


def set_cell(where: Where | None) -> None:
    """Say which notebook, cell id and execution count the calls made from now on belong to (None:
    none). The notebook extension calls it before and after every cell it runs."""
    global _cell
    _cell = where


def _drop(pending: collections.deque[Row], most: int) -> int:
    """Take up to ``most`` rows off ``pending`` without its lock, and say how many were taken: the
    writer drains the same deque, so it may be shorter than when it was counted."""
    for taken in range(most):
        try:
            pending.popleft()
        except IndexError:
            return taken
    return most


class CallLog:
    """One call-log file, written by a background thread of this process (see the module docstring).

    ``record`` is the sink ``_call.end`` calls; ``flush``/``close`` write what waits; ``search`` reads.
    Counters for this process: ``written``, ``dropped`` (could not be written), ``last_error``.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout = busy_timeout
        self.written = self.dropped = 0
        self.last_error: str | None = None
        self._warned = False
        #: This process's connection; its lock is held by whoever writes (one batch after another).
        self._file = PerProcess(self._open)
        #: Searches read here: never behind the writer's lock (see the module docstring).
        self._reader = PerProcess(self._open_reader)
        self._reset()
        in_child(self._reset)
        _LOGS.add(self)

    def _reset(self) -> None:
        """Fresh state for this process (also in a forked child: the parent's calls are its own)."""
        self._pending: collections.deque[Row] = collections.deque()
        self._wake = threading.Event()
        #: Held while the writer is started or stopped: ``_thread`` is always the one running writer.
        self._life = threading.Lock()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()  # the running writer's: set, it ends after its round

    def __repr__(self) -> str:
        return f"CallLog({str(self.path)!r})"

    @property
    def pending(self) -> int:
        """Calls recorded but not written yet."""
        return len(self._pending)

    # -- the sink ----------------------------------------------------------------------------------
    def record(
        self,
        call: Call,
        outcome: LLMResponse | BaseException,
        latency_s: float,
        source: Source,
        partial_chars: int,
    ) -> None:
        """Queue one finished call's row (the caller's only cost); never raises."""
        try:
            pending = self._pending
            label, now = current_label(), time.time()
            pending.append(row(call, outcome, latency_s, source, partial_chars, label, now, _cell, _pid[0]))
            if self._thread is None:
                self._start()
            waiting = len(pending)
            if waiting >= MAX_PENDING:  # the writer is behind
                if self.last_error is None:
                    self.flush()  # this caller writes them
                else:  # the file is failing (locked, unwritable): never hold calls up for it
                    dropped = _drop(pending, waiting)  # the writer may be taking some meanwhile
                    self._failed(RuntimeError(f"{dropped} calls waited for a failing log"), dropped)
            elif waiting >= BATCH and not (wake := self._wake).is_set():
                wake.set()  # once: Event.set takes a lock and notifies, a cost every call would pay
        except Exception as exc:  # never the call's problem
            self._failed(exc, 1)

    def _start(self) -> None:
        with self._life:
            if self._thread is not None:
                return
            _watch_exit()
            self._halt = halt = threading.Event()
            args = (halt, self._wake)
            thread = threading.Thread(target=self._run, args=args, name="flotorch-calllog", daemon=True)
            thread.start()
            self._thread = thread

    def _stop(self) -> threading.Thread | None:
        """Tell the writer to end after its round and forget it, as one step under ``_life``: a call
        ending meanwhile on another thread starts a writer of its own, which ``_thread`` then names
        (each writer has its own ``halt`` and ``wake``: that one is neither stopped nor woken early,
        nor this one restarted). The writer stopped, if there was one, for the caller to join."""
        with self._life:
            thread, self._thread = self._thread, None
            halt, wake = self._halt, self._wake
            self._wake = threading.Event()
        halt.set()
        wake.set()
        return thread

    def _run(self, halt: threading.Event, wake: threading.Event) -> None:
        while not halt.is_set():
            wake.wait(FLUSH_EVERY)
            wake.clear()
            self._drain(whole_batches_after_first=True)

    # -- writing -----------------------------------------------------------------------------------
    def open(self) -> CallLog:
        """Open and check the file now (``CallLogError`` if it cannot be used); safe to call again."""
        with self._file.lock:
            self._file.get()
        return self

    def _open(self) -> sqlite3.Connection:
        return open_shared(self.path, KIND, self.busy_timeout)

    def _open_reader(self) -> sqlite3.Connection:
        return open_shared(self.path, KIND, SEARCH_WAIT, write=False)

    def flush(self) -> None:
        """Write every call recorded so far, on this thread (what cannot be written is counted)."""
        self._drain()

    def _drain(self, *, whole_batches_after_first: bool = False) -> None:
        """Write what waits, ``BATCH`` rows to a transaction. The writer's round passes
        ``whole_batches_after_first``: calls that arrive while it writes wait for its next round
        unless a whole batch of them does, or each round would end in a train of transactions of a
        few rows each (each costs as much as hundreds of rows: the commit, the index's new segment)."""
        with self._file.lock:
            first = True
            while self._pending and (first or not whole_batches_after_first or len(self._pending) >= BATCH):
                first = False
                self._write(self._take())

    def _take(self) -> list[Row]:
        """Up to ``BATCH`` waiting rows, oldest first (the caller holds the file's lock)."""
        batch: list[Row] = []
        while self._pending and len(batch) < BATCH:
            batch.append(self._pending.popleft())
        return batch

    def _catch_up(self) -> None:
        """Before a search: write what waits, if that can be done within ``SEARCH_WAIT`` (the
        writer's round ends, another process's write ends); else leave it to the writer."""
        import sqlite3

        started = time.monotonic()
        if not self._file.lock.acquire(timeout=SEARCH_WAIT):
            return  # the writer is waiting for the file: the search reads what it holds
        try:
            if not self._pending:
                return
            left = max(0.0, SEARCH_WAIT - (time.monotonic() - started))
            # Not open yet: its set-up takes the write lock, so it too waits only what is left.
            conn = self._file.get(lambda: open_shared(self.path, KIND, left))
            conn.execute(f"PRAGMA busy_timeout = {int(left * 1000)}")
            try:
                while self._pending:
                    batch = self._take()
                    if not self._write(batch, patient=False):
                        self._pending.extendleft(reversed(batch))  # the writer's, in their order
                        return
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except (sqlite3.Error, CallLogError) as exc:  # the writer meets it too, and counts it
            logger.debug("call log %s: not written before a search (%s)", self.path, exc)
        finally:
            self._file.lock.release()

    def _write(self, batch: list[Row], *, patient: bool = True) -> bool:
        """Write one batch, trying again (``RETRIES``) while another process holds the file; what
        cannot be written is counted. ``patient=False``: one try, and False, nothing counted, if
        the file is held (the caller keeps the rows)."""
        import sqlite3

        from .pricing import shared_prices

        prices = shared_prices()  # priced as the rows are written: a fraction of a second after the call
        try:
            rows = priced(batch, prices if len(prices) else None)
        except Exception as exc:  # a bug: the rows are still worth keeping, unpriced
            self._failed(exc, 0)
            rows = batch
        attempt = 0
        while True:
            attempt += 1
            try:
                write(self._file.get(), rows)
            except sqlite3.Error as exc:
                if is_lock(exc) and not patient:
                    return False
                if is_lock(exc) and attempt < RETRIES:
                    time.sleep(0.05 * attempt)
                    continue
                self._failed(exc, len(rows))
            except Exception as exc:  # CallLogError (the file cannot be used), or a bug
                self._failed(exc, len(rows))
            else:
                self.written += len(rows)
                self.last_error = None  # writing again: a full queue is written, not dropped
            return True

    def _failed(self, exc: BaseException, calls: int) -> None:
        self.dropped += calls
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._warned:
            return
        self._warned = True
        message = (
            f"call log {self.path}: {calls} call(s) could not be written ({self.last_error}); the calls "
            "themselves are unharmed. Later failures of this log are only counted (CallLog.dropped)"
        )
        logger.warning("%s", message)
        with contextlib.suppress(Exception):  # a warnings filter set to "error" must not break the writer
            warnings.warn(message, CallLogWarning, stacklevel=2)

    def close(self) -> None:
        """Write what waits, stop the writer and close the file (a later call starts them again)."""
        if _logsink.current is self:
            _logsink.current = None
        thread = self._stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        self.flush()
        with self._file.lock:
            self._file.close()
        with self._reader.lock:
            self._reader.close()

    # -- reading -----------------------------------------------------------------------------------
    def search(
        self,
        query: str | None = None,
        *,
        model: str | None = None,
        since: datetime | timedelta | str | float | None = None,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Rows (dicts by ``_calllog_store.COLUMNS``), newest first: ``query`` words all in the prompt
        or the answer, ``model`` asked (not the one that answered), made at ``since`` or later;
        ``limit`` (None: all). Answers within about ``SEARCH_WAIT`` seconds, or ``CallLogError``
        (see the module docstring)."""
        text = _query(query)
        after = _since(since)
        check_whole(limit, "limit", 1, or_none=True)
        return self._read(lambda conn: search(conn, query=text, model=model, since=after, limit=limit))

    def __len__(self) -> int:
        return self._read(count)

    def _read(self, reading: Callable[[sqlite3.Connection], _T]) -> _T:
        """``reading`` on the reading connection, this process's calls written first if they can be."""
        import sqlite3

        self._catch_up()
        if not self.path.is_file():
            raise CallLogError(self.path, "there is no such file (no call was logged to it)")
        try:
            with self._reader.lock:
                return reading(self._reader.get())
        except sqlite3.Error as exc:
            raise typed_error(exc, KIND, self.path, SEARCH_WAIT) from exc


def _query(query: str | None) -> str | None:
    if query is None:
        return None
    from ._calllog_store import match_query

    try:
        match_query(query)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return query


def _since(since: datetime | timedelta | str | float | None) -> float | None:
    """``since`` as a Unix time: a datetime (naive: local time), the time that long ago (a
    timedelta), an ISO 8601 text, or a Unix time."""
    if since is None:
        return None
    if isinstance(since, timedelta):
        return time.time() - since.total_seconds()
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since)
        except ValueError:
            raise ConfigurationError(
                f"since must be an ISO 8601 time such as 2026-01-31T12:00Z, got {since!r}"
            ) from None
    if isinstance(since, datetime):
        return since.timestamp()
    if isinstance(since, int | float) and not isinstance(since, bool):
        return float(since)
    raise ConfigurationError(
        f"since must be a datetime, a timedelta, an ISO 8601 text or a Unix time, got {type(since).__name__}"
    )


# -- the process's log ---------------------------------------------------------------------------------
_LOGS: weakref.WeakSet[CallLog] = weakref.WeakSet()
_BY_PATH: dict[Path, CallLog] = {}
_LOCK = threading.Lock()
#: Whether the installed log came from FLOTORCH_LOG (so that clearing the variable turns it off).
_from_env: list[bool] = [False]


def _log_for(path: str | os.PathLike[str]) -> CallLog:
    resolved = Path(path).expanduser().resolve()
    with _LOCK:
        found = _BY_PATH.get(resolved)
        if found is None:
            found = _BY_PATH[resolved] = CallLog(resolved)
        return found


def _install(log: CallLog | None) -> None:
    previous = _logsink.current
    _logsink.current = log
    if isinstance(previous, CallLog) and previous is not log:
        previous.flush()


def enable(path: str | os.PathLike[str] | None = None) -> CallLog:
    """Log every call of this process to ``path`` (default: ``FLOTORCH_LOG``, else ``calls.sqlite``),
    checked now (``CallLogError``); the log that was on before is flushed and replaced."""
    log = _log_for(path or os.environ.get(ENV_LOG) or DEFAULT_PATH).open()
    _install(log)
    _from_env[0] = False
    return log


def disable() -> CallLog | None:
    """Stop logging (what was recorded is written first); the log that was on, if any."""
    log = _logsink.current
    _install(None)
    _from_env[0] = False
    if isinstance(log, CallLog):
        log.flush()
        return log
    return None


def active() -> CallLog | None:
    """The log calls go to now, or None."""
    log = _logsink.current
    return log if isinstance(log, CallLog) else None


def from_env(env: Mapping[str, str] | None = None) -> None:
    """Act on ``FLOTORCH_LOG`` (called when a client is built): a new value turns the log on there
    (opened by the writer: a bad file warns, never fails the client), clearing it turns a log it
    turned on off. The same value again changes nothing, so ``disable()`` holds."""
    value = (os.environ if env is None else env).get(ENV_LOG) or None
    if value == _logsink.env_seen:
        return
    _logsink.env_seen = value
    if value:
        _install(_log_for(value))
        _from_env[0] = True
    elif _from_env[0]:
        disable()


# -- reading a log -----------------------------------------------------------------------------------
def _source(path: str | os.PathLike[str] | None) -> CallLog:
    if path is not None:
        return _log_for(path)
    current = active()
    if current is not None:
        return current
    named = os.environ.get(ENV_LOG)
    if named:
        return _log_for(named)
    raise ConfigurationError(
        f"no call log is on: pass path=..., set {ENV_LOG}=calls.sqlite, or %flotorch log on"
    )


def search_log(
    query: str | None = None,
    *,
    model: str | None = None,
    since: datetime | timedelta | str | float | None = None,
    limit: int | None = 100,
    path: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """``CallLog.search`` on ``path``, else the log that is on, else ``FLOTORCH_LOG`` (no pandas)."""
    log = _source(path)
    try:
        return log.search(query, model=model, since=since, limit=limit)
    finally:
        if log is not active():  # a file only read: let it go (a log that is on keeps its file open)
            log.close()


def logs(
    query: str | None = None,
    *,
    model: str | None = None,
    since: datetime | timedelta | str | float | None = None,
    limit: int | None = 100,
    path: str | os.PathLike[str] | None = None,
) -> pandas.DataFrame:
    """Logged calls as a DataFrame, newest first (``flotorch_nb.logs``): ``query`` words all in the
    prompt or answer, ``model``, ``since`` (datetime, timedelta, ISO text), at most ``limit`` rows.

    Reads ``path``, else the log that is on, else ``FLOTORCH_LOG``. ``time`` is a UTC datetime,
    token counts nullable integers (unknown stays <NA>), ``cost`` dollars (NaN: no price known).
    """
    rows = search_log(query, model=model, since=since, limit=limit, path=path)
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("logs() needs pandas: pip install 'flotorch_nb[data]' (or pandas)") from None
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    for name in ("input_tokens", "output_tokens", "total_tokens", "error_status", "execution_count"):
        frame[name] = frame[name].astype("Int64")
    frame["stream"] = frame["stream"].astype(bool)
    return frame


def export(
    target: str | os.PathLike[str],
    query: str | None = None,
    *,
    model: str | None = None,
    since: datetime | timedelta | str | float | None = None,
    limit: int | None = None,
    path: str | os.PathLike[str] | None = None,
) -> int:
    """Write the matching calls (all of them by default) to ``target`` as JSON lines, oldest first;
    how many. ``time`` is ISO 8601 UTC; messages, params, tools and tool calls are JSON values."""
    rows = search_log(query, model=model, since=since, limit=limit, path=path)
    out = Path(target).expanduser()
    try:
        with out.open("w", encoding="utf-8") as file:
            for found in reversed(rows):
                file.write(json.dumps(_plain(found), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {out}: {exc.strerror or exc}") from None
    return len(rows)


def _plain(found: Mapping[str, Any]) -> dict[str, Any]:
    plain = dict(found)
    plain["time"] = datetime.fromtimestamp(found["time"], UTC).isoformat(timespec="milliseconds")
    plain["stream"] = bool(found["stream"])
    for name in ("messages", "params", "tools", "tool_calls"):
        if isinstance(found[name], str):
            plain[name] = json.loads(found[name])
    return plain


# -- process life ------------------------------------------------------------------------------------
_exit_watched: list[bool] = [False]


def _watch_exit() -> None:
    if not _exit_watched[0]:
        _exit_watched[0] = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    """Write what waits, after the background loop has ended the calls still running on it (their
    ends are logged too): ``_bridge.shutdown`` is idempotent, so calling it first here is safe."""
    bridge = sys.modules.get("flotorch_nb._bridge")
    if bridge is not None:
        with contextlib.suppress(Exception):
            bridge.shutdown()
    for log in list(_LOGS):
        log._stop()
        with contextlib.suppress(Exception):
            log.flush()


def _after_fork() -> None:
    """The child's own id for its rows, and a lock free whatever the parent's threads were doing."""
    global _LOCK
    _LOCK = threading.Lock()
    _pid[0] = os.getpid()


in_child(_after_fork)
