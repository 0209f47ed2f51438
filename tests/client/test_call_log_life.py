"""The call log's life in a process: closing while calls end, searching while the file is locked, and
a forked child. Each interleaving is forced by a hook at the exact step, never left to a timer.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotorch_nb import FlotorchLLM, calllog
from flotorch_nb._response import LLMResponse
from flotorch_nb._transport import Call
from flotorch_nb.calllog import CallLog, CallLogError

MODEL = "offline/scripted"


def a_call(text: str) -> Call:
    """A prepared call asking ``text`` (nothing is sent)."""
    with FlotorchLLM(MODEL, "life-key", "http://127.0.0.1:9") as llm:
        return llm._pipeline.prepare([{"role": "user", "content": text}], None, None, None, {}, stream=False)


def record(log: CallLog, call: Call, answer: str) -> None:
    """What ``_call.end`` hands the log when ``call`` has been answered ``answer``."""
    response = LLMResponse(content=answer, metadata={}, model=MODEL, source="offline")
    log.record(call, response, 0.01, "offline", 0)


def writers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "flotorch-calllog" and t.is_alive()}


def test_a_call_ending_while_the_log_closes_leaves_no_writer_close_cannot_stop(tmp_path: Path) -> None:
    # close() once marked the log closed, woke the writer and only then forgot it; a call ending on
    # another thread in between started a writer (and marked the log open again) that close then
    # forgot: it ran on, unreachable, and the next call started a second one.
    log = CallLog(tmp_path / "calls.sqlite")
    before = writers()
    call = a_call("asked while closing")
    ended: list[bool] = []

    class CallEndsMeanwhile(threading.Event):
        """close() wakes the writer: at that instant another thread's call ends."""

        def set(self) -> None:
            if not ended:
                ended.append(True)
                record(log, call, "meanwhile")
            super().set()

    log._wake = CallEndsMeanwhile()
    log.close()
    assert ended
    assert all(writer is log._thread for writer in writers() - before)  # a later call's own writer
    log.close()  # stops every writer the log has
    assert writers() - before == set()
    assert [row["answer"] for row in log.search()] == ["meanwhile"]
    log.close()


#: Another process holding the file until it reads a line: ``sys.argv[2]`` is "write" (a write
#: transaction: readers go on, writers wait) or "exclusive" (nobody else can even read).
OTHER_PROCESS = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "exclusive":
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE" if sys.argv[2] == "exclusive" else "BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextlib.contextmanager
def held_by_another_process(path: Path, how: str) -> Iterator[None]:
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, str(path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "holding\n"
        yield
    finally:
        other.communicate("done\n", timeout=60)


def test_a_search_answers_from_the_file_while_the_writer_waits_for_another_process(tmp_path: Path) -> None:
    # A search once wrote this process's calls first, behind the writer's lock: while another process
    # held the file, it waited out the writer's whole retry back-off (busy timeout x RETRIES, about
    # 30 s by default; here 600 s each). A WAL reader needs neither the writer's lock nor the file's.
    log = CallLog(tmp_path / "calls.sqlite", busy_timeout=600).open()
    record(log, a_call("asked first"), "on file")
    log.flush()
    found: list[list[dict[str, object]]] = []
    with held_by_another_process(log.path, "write"):
        record(log, a_call("asked while the file is held"), "waiting")
        writing = threading.Thread(target=log.flush)  # the writer's round: it waits for the file
        writing.start()
        while not log._file.lock.locked():
            time.sleep(0.001)
        searching = threading.Thread(target=lambda: found.append(log.search()), daemon=True)
        searching.start()
        searching.join(60)  # a bound for a search that hangs, not a measure of speed
        assert not searching.is_alive(), "the search waited behind the writer"
    assert [row["answer"] for row in found[0]] == ["on file"]  # what the file holds
    writing.join()
    assert [row["answer"] for row in log.search()] == ["waiting", "on file"]  # written since
    log.close()


def test_a_search_of_a_file_no_one_else_may_read_is_a_call_log_error_soon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A search waits for the file as long as a search may (SEARCH_WAIT), not the writer's busy timeout.
    monkeypatch.setattr(calllog, "SEARCH_WAIT", 0.2)
    log = CallLog(tmp_path / "calls.sqlite", busy_timeout=2).open()
    record(log, a_call("asked"), "on file")
    log.close()  # an exclusive hold needs every other connection gone
    try:
        with (
            held_by_another_process(log.path, "exclusive"),
            pytest.raises(CallLogError, match=r"more than 0.2 s"),
        ):
            log.search("asked")
        assert [row["answer"] for row in log.search("asked")] == ["on file"]
    finally:
        log.close()


def test_a_search_before_the_first_write_does_not_wait_out_the_busy_timeout_to_open(tmp_path: Path) -> None:
    # A search writes this process's calls first, within SEARCH_WAIT; when the writer's connection
    # was not open yet, opening it (its set-up takes the write lock) waited the whole busy timeout.
    path = tmp_path / "calls.sqlite"
    CallLog(path).open().close()  # the file exists: another process logged to it
    log = CallLog(path, busy_timeout=600)
    found: list[list[dict[str, object]]] = []
    with held_by_another_process(path, "write"):
        record(log, a_call("asked before any write"), "waiting")
        searching = threading.Thread(target=lambda: found.append(log.search()), daemon=True)
        searching.start()
        searching.join(30)  # a bound for a search that hangs, not a measure of speed
        assert not searching.is_alive(), "the search waited to open the writer's connection"
    assert found == [[]]  # what the file held; the call is written later
    assert [row["answer"] for row in log.search()] == ["waiting"]
    log.close()
