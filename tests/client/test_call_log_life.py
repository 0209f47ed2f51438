"""The call log's life in a process: closing while calls end, searching while the file is locked, and
a forked child. Each interleaving is forced by a hook at the exact step, never left to a timer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from flotorch_nb import FlotorchLLM
from flotorch_nb._response import LLMResponse
from flotorch_nb._transport import Call
from flotorch_nb.calllog import CallLog

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
