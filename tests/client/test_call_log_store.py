"""The call log's file as the writer fills it (``_calllog_store.write``): what is written is what a
search reads back, whatever mix of answers and failures a batch holds.
"""

from __future__ import annotations

from pathlib import Path

from flotorch_nb import RateLimitError
from flotorch_nb.calllog import CallLog
from tests.client.test_call_log_life import a_call, record


def test_a_batch_of_answers_and_failures_reads_back_in_order_with_nulls_as_none(tmp_path: Path) -> None:
    # Columns a call has no value for (an answer's error, a failure's answer) are written as NULL
    # literals, in runs of rows alike: the rows must still come back in the order the calls ended.
    log = CallLog(tmp_path / "calls.sqlite")
    failure = RateLimitError("slow down", status_code=429, gateway_message="slow down")
    outcomes: list[str | RateLimitError] = ["first", failure, "second", "third", failure, "fourth"]
    for i, outcome in enumerate(outcomes):
        call = a_call(f"question {i}")
        if isinstance(outcome, str):
            record(log, call, outcome)
        else:
            log.record(call, outcome, 0.01, "offline", 0)
    rows = list(reversed(log.search(limit=None)))
    log.close()
    assert [r["prompt"] for r in rows] == [f"question {i}" for i in range(6)]
    assert [r["answer"] for r in rows] == ["first", None, "second", "third", None, "fourth"]
    assert [r["error_status"] for r in rows] == [None, 429, None, None, 429, None]
    assert [r["error_type"] for r in rows] == [None, "RateLimitError", None, None, "RateLimitError", None]
    assert [r["tool_calls"] for r in rows] == [None] * 6 and [r["label"] for r in rows] == [None] * 6
    assert [r["cost"] for r in rows] == [None, 0.0, None, None, 0.0, None]  # unknown price; never sent
