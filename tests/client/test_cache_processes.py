"""Issue 19: any number of processes may open one new answer cache at the same moment.

Eight worker processes open the same fresh file at once (a barrier), twenty times over, each writing
and reading its own and shared prompts; then the same through ``flotorch_nb.dask`` on a two-worker
``LocalCluster``, whose workers open a fresh cache together as a Dask job with ``cache=`` starts.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from flotorch_nb.cache import AnswerCache, CacheError
from flotorch_nb.gateway import OfflineGateway
from tests.support.cache_worker import prompts, work
from tests.support.dask_cluster import two_workers

WORKERS = 8
ROUNDS = 20


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.mark.slow
def test_eight_processes_open_one_new_cache_at_once_twenty_times(
    gateway: OfflineGateway, tmp_path: Path
) -> None:
    paths = [str(tmp_path / f"round-{r}.sqlite") for r in range(ROUNDS)]
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(WORKERS)
    out: Any = spawn.Queue()
    workers = [spawn.Process(target=work, args=(w, gateway.url, paths, barrier, out)) for w in range(WORKERS)]
    for process in workers:
        process.start()
    try:
        reports = [out.get(timeout=120) for _ in range(WORKERS * ROUNDS)]
    finally:
        for process in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    failures = [(w, r, error) for w, r, error, _, _ in reports if error]
    assert not failures
    for worker, round_, _, answers, sources in reports:
        assert answers == prompts(worker, round_) * 2  # offline/echo answers with the prompt
        assert sources == ["cache"]  # the second pass was answered from the file
    for round_, path in enumerate(paths):
        assert _integrity(Path(path)) == "ok"
        shared = {p for p in prompts(0, round_) if p.startswith("everyone")}
        assert len(AnswerCache(path).keys()) == WORKERS * 5 + len(shared)


def test_opening_waits_while_another_process_writes_the_new_files_schema(tmp_path: Path) -> None:
    """The deterministic core of the race: while another connection holds the write lock of a new
    file (still in rollback-journal mode, writing the schema), switching to WAL fails at once with
    "database is locked" (SQLite does not call the busy handler there); opening must wait instead."""
    path = tmp_path / "new.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    let_go = threading.Timer(0.3, other.execute, ("ROLLBACK",))
    let_go.start()
    try:
        cache = AnswerCache(path, busy_timeout=10).open()
    finally:
        let_go.join()
        other.close()
    assert len(cache) == 0 and _integrity(path) == "ok"
    cache.close()


def test_a_file_locked_for_longer_than_busy_timeout_is_a_cache_error_that_keeps_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.sqlite"
    AnswerCache(path).open().close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        with pytest.raises(CacheError) as caught:
            AnswerCache(path, busy_timeout=0.2).open()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    message = str(caught.value)
    assert "locked" in message and "0.2 s" in message
    assert "remove" not in message and "delete" not in message  # another process may be using it
    AnswerCache(path).open()  # once let go, the same file serves


@pytest.mark.slow
def test_a_dask_job_with_a_fresh_cache_on_two_workers(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from flotorch_nb.dask import map_dataframe

    path = tmp_path / "dask.sqlite"
    data = pd.DataFrame({"q": [f"question {i}" for i in range(24)] + ["the same question"] * 8})
    with two_workers(monkeypatch, gateway.url, "dask-cache-key-1b9e"):
        job = map_dataframe(
            dd.from_pandas(data, npartitions=8),
            template="{q}",
            model="offline/echo",
            cache=str(path),
            concurrency=4,
        )
        got = job.compute()
    assert got["error_type"].isna().all(), got["error"].dropna().tolist()
    assert list(got["answer"]) == list(data["q"])
    assert _integrity(path) == "ok"
    assert len(AnswerCache(path).keys()) == 25
