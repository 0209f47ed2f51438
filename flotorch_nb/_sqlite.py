"""Opening one of our SQLite files that several processes share: the answer cache and the call log.

Both are plain SQLite files in WAL mode (``synchronous=NORMAL``) that any number of processes on one
machine (Dask workers, several kernels) open, create and write at once. What it takes to open one
safely is the same for both, so it lives here once:

- the file is checked before anything else happens: a folder, a missing folder, a file that is not
  SQLite, a SQLite file of another kind or format, one that cannot be written, or one locked for
  longer than ``busy_timeout`` is the caller's typed error (``FileKind.error``), raised at once;
- setting it up (WAL, the schema in one ``BEGIN IMMEDIATE`` transaction, the ``meta`` row naming its
  kind and format) may be repeated, and is retried with backoff while another process holds the
  file, for up to ``busy_timeout``: switching the journal mode fails at once with "database is
  locked" rather than waiting, which is exactly what several processes opening one new file meet;
- each process has its own connection (``PerProcess``): a child forked from a process that has
  one forgets it, and the lock around it, first thing (``in_child``). SQLite forbids using a
  connection across a fork, and a lock held at the fork by one of the parent's threads (which do not
  exist in the child) would never be released there.

``sqlite3`` is imported when a file is first opened, never at ``import flotorch_nb``.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import FlotorchError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["FileKind", "PerProcess", "in_child", "is_lock", "open_shared", "typed_error"]


@dataclass(frozen=True, slots=True)
class FileKind:
    """What one kind of our files is: its name and format in ``meta``, its schema, its error."""

    #: Stored in ``meta`` as ``kind`` (say "flotorch_nb answer cache"); a file of another kind is refused.
    name: str
    format: str
    #: ``CREATE ... IF NOT EXISTS`` statements of its own tables, run in one transaction after ``meta``'s.
    schema: tuple[str, ...]
    #: Its own tables (with ``meta``, what a file of this kind has; one without them is someone else's).
    tables: frozenset[str]
    #: ``error(path, problem, advice)``: the typed error of this kind of file.
    error: Callable[[Path, str, str | None], FlotorchError]


#: Every file of ours names its kind and format here (``FileKind.name``, ``FileKind.format``).
_META = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


def is_lock(exc: BaseException) -> bool:
    """Whether a ``sqlite3`` error means another connection holds the file (worth waiting for)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _problem(exc: BaseException) -> str:
    text = str(exc).lower()
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return "it is not a SQLite database, or it is damaged"
    if "readonly" in text or "read-only" in text or "unable to open" in text or "permission" in text:
        return f"it cannot be written ({exc})"
    return f"{type(exc).__name__}: {exc}"


def typed_error(exc: BaseException, kind: FileKind, path: Path, busy_timeout: float) -> FlotorchError:
    """A ``sqlite3`` error met while using a file (waiting ``busy_timeout`` for it), as the kind's
    typed error."""
    if not is_lock(exc):
        return kind.error(path, _problem(exc), None)
    # Never "remove it": the process holding the lock is using the file, and its rows are in it.
    return kind.error(
        path,
        f"another process has held it locked for more than {busy_timeout:g} s (a long write, or a "
        "process stopped in the middle of one)",
        "Wait for that process to finish and try again, or use another file; keep this one, it is in use",
    )


def _ours(conn: sqlite3.Connection, path: Path, kind: FileKind) -> bool:
    """Whether the file has been set up as ``kind`` (reading only); ``kind.error`` if it is
    another kind of file."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return False
    if not kind.tables | {"meta"} <= tables:
        raise kind.error(path, f"it is a SQLite database, but not a {kind.name}", None)
    _check_meta(dict(conn.execute("SELECT name, value FROM meta").fetchall()), path, kind)
    return True


def _check_meta(found: dict[str, str], path: Path, kind: FileKind) -> None:
    if found.get("kind") != kind.name or found.get("format") != kind.format:
        raise kind.error(
            path,
            f"it is of kind {found.get('kind')!r}, format {found.get('format')!r}; "
            f"this version reads {kind.name!r} format {kind.format}",
            None,
        )


def _set_up(conn: sqlite3.Connection, path: Path, kind: FileKind) -> None:
    """WAL mode, then check or create the schema. Every step may be repeated: a run cut short by
    another process's lock leaves nothing half done (the schema is written in one transaction)."""
    conn.execute("PRAGMA journal_mode=WAL")  # persistent: a no-op once any process has switched
    conn.execute("PRAGMA synchronous=NORMAL")
    _ours(conn, path, kind)  # another kind of file is refused before anything is written to it
    # BEGIN IMMEDIATE takes the write lock: a read-only or locked file fails here, not later.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in (_META, *kind.schema):
            conn.execute(statement)
        found = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if not found:
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [("kind", kind.name), ("format", kind.format)])
        else:
            _check_meta(found, path, kind)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _set_up_within_busy_timeout(conn: sqlite3.Connection, path: Path, kind: FileKind, busy: float) -> None:
    """``_set_up``, again and again while another process holds the file, for up to ``busy`` seconds.

    Most steps wait for a lock by themselves (SQLite's busy handler), but switching the journal mode
    does not: while another process writes the new file's schema, it fails at once with "database is
    locked". Several processes opening one new file together (the workers of a Dask job) do exactly
    that, so a transient lock is waited out here with backoff.
    """
    import sqlite3

    deadline = time.monotonic() + busy
    pause = 0.005
    while True:
        # The steps that do wait by themselves wait only for what is left of the budget.
        left = max(0.0, deadline - time.monotonic())
        conn.execute(f"PRAGMA busy_timeout = {int(left * 1000)}")
        try:
            _set_up(conn, path, kind)
            break
        except sqlite3.OperationalError as exc:
            if not is_lock(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    conn.execute(f"PRAGMA busy_timeout = {int(busy * 1000)}")


def open_shared(path: Path, kind: FileKind, busy_timeout: float, *, write: bool = True) -> sqlite3.Connection:
    """A checked connection to the file at ``path`` (created if new), usable from any thread (the
    caller serialises its use), in autocommit mode; ``kind.error`` if the file cannot serve.

    ``write=False``: a connection that only reads (``query_only``), opened without the file's write
    lock when the file is set up already, so that it never waits for another process's write: in
    WAL mode readers go on while a writer writes."""
    import sqlite3

    if path.is_dir():
        raise kind.error(path, "it is a folder; give a file name such as answers.sqlite", None)
    if not path.parent.is_dir():
        raise kind.error(path, f"the folder {path.parent} does not exist", None)
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise typed_error(exc, kind, path, busy_timeout) from exc
    try:
        if write or not _ours(conn, path, kind):  # a new file is set up by whoever opens it first
            _set_up_within_busy_timeout(conn, path, kind, busy_timeout)
        if not write:
            conn.execute("PRAGMA query_only = ON")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise typed_error(exc, kind, path, busy_timeout) from exc
        raise  # kind.error already, or not ours to translate
    return conn


# -- one connection per process ------------------------------------------------------------------------
#: What a forked child calls first (``in_child``): bound methods held weakly, functions as they are.
_IN_CHILD: list[Callable[[], Callable[[], object] | None]] = []
_IN_CHILD_LOCK = threading.Lock()
#: The parent's connections a forked child forgot: kept, never used nor closed (closing is a use).
_INHERITED: list[sqlite3.Connection] = []


def in_child(forget: Callable[[], object]) -> None:
    """Have ``forget`` called first thing in every child this process forks: what the answer cache
    and the call log hold per process (connections, locks, queued calls) is the parent's. A bound
    method is held weakly (its object may go first); a function as it is."""
    ref: Callable[[], Callable[[], object] | None] = (
        weakref.WeakMethod(forget) if inspect.ismethod(forget) else lambda: forget
    )
    with _IN_CHILD_LOCK:
        _IN_CHILD[:] = [r for r in _IN_CHILD if r() is not None]
        _IN_CHILD.append(ref)


def _after_fork() -> None:
    global _IN_CHILD_LOCK
    _IN_CHILD_LOCK = threading.Lock()
    for ref in list(_IN_CHILD):
        forget = ref()
        if forget is not None:
            forget()


os.register_at_fork(after_in_child=_after_fork)


class PerProcess:
    """This process's connection to one shared file, opened on first use, and the lock its users hold
    around every use of it (``with file.lock: file.get().execute(...)``).

    A forked child starts with neither (``in_child``): it opens its own connection when it first
    needs one, and gets a lock of its own, free whatever the parent's threads were doing.
    """

    def __init__(self, opener: Callable[[], sqlite3.Connection]) -> None:
        self._opener = opener
        self.lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        in_child(self._forget)

    def get(self, opener: Callable[[], sqlite3.Connection] | None = None) -> sqlite3.Connection:
        """The connection, opened now if this process has none, by ``opener`` if given (one that waits
        less, say) else the usual one (the opener's typed error if the file cannot serve); the
        caller holds ``lock``."""
        if self._conn is None:
            self._conn = (opener or self._opener)()
        return self._conn

    def close(self) -> None:
        """Close the connection, if open (the next ``get`` opens another); the caller holds ``lock``."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _forget(self) -> None:
        self.lock = threading.Lock()
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None
