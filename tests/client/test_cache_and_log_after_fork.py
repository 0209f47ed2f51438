"""The answer cache and the call log in a forked child (``os.fork``: what multiprocessing's fork start
method and a Dask worker started from a notebook do), which both handle one way (``_sqlite``): the
child forgets the parent's connection and lock and opens its own.

Each child reports by its exit status and is waited for with a bound: a child that hangs (on a lock
one of the parent's threads held at the fork) is killed and fails the test.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flotorch_nb import calllog
from flotorch_nb.cache import AnswerCache, StoredAnswer
from flotorch_nb.calllog import CallLog
from tests.client.test_call_log_life import a_call, held_by_another_process, record

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="os.fork")

#: Seconds a child may take at most: it needs milliseconds; one that hangs never ends.
CHILD_BOUND = 30.0


def fork(work: Callable[[], bool]) -> int:
    """Run ``work`` in a forked child (its exit status 0 if ``work`` says True); the child's id."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 2
        try:
            status = 0 if work() else 1
        finally:
            os._exit(status)
    return pid


def exit_status(pid: int) -> int:
    """The forked child's exit status, once it has ended (killed and failed if it does not)."""
    deadline = time.monotonic() + CHILD_BOUND
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung")


def answer(text: str) -> StoredAnswer:
    raw = b'{"choices":[{"message":{"content":"' + text.encode() + b'"}}]}'
    return StoredAnswer(text, raw, "stop", (), 0.0, None, None, True, "offline", "m", None)


def test_a_child_forked_while_a_thread_writes_the_cache_uses_the_cache(tmp_path: Path) -> None:
    # The cache once noticed a fork by the process id, at its next use: the parent's lock came along
    # as it was, held by a thread in the middle of a write, which does not exist in the child, and
    # the child's first lookup waited for it forever.
    path = tmp_path / "answers.sqlite"
    cache = AnswerCache(path, busy_timeout=CHILD_BOUND)
    assert cache.put("kept", answer("from before"))

    def child() -> bool:
        found = cache.get("kept")
        return found is not None and found.content == "from before" and cache.put("child", answer("mine"))

    writing = threading.Thread(target=cache.put, args=("new", answer("from the parent")))
    # Another process holds the file (one of ours would be inherited by the child: SQLite locks do
    # not survive a fork), so the thread's write waits for it.
    with held_by_another_process(path, "write"):
        writing.start()
        lock = cache._file.lock
        while not lock.locked():  # the thread is in the middle of its write
            time.sleep(0.001)
        pid = fork(child)
    writing.join()  # the other process is done: ours go on
    assert exit_status(pid) == 0
    assert cache.keys() == {"kept", "new", "child"}
    cache.close()


def test_a_forked_child_logs_its_own_calls_and_leaves_the_parent_s_to_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calllog, "FLUSH_EVERY", 3600.0)  # only flush() writes: the parent's call waits
    log = CallLog(tmp_path / "calls.sqlite").open()
    record(log, a_call("the parent asks"), "the parent's")
    assert log.pending == 1

    def child() -> bool:
        if log.pending:  # the parent's call is the parent's to write
            return False
        record(log, a_call("the child asks"), "the child's")
        log.close()
        return log.written == 1

    assert exit_status(fork(child)) == 0
    log.close()
    rows = {row["answer"]: row["pid"] for row in log.search()}
    assert rows["the parent's"] == os.getpid() and rows["the child's"] not in (None, os.getpid())
    assert len(rows) == 2
