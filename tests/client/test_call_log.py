"""Issue 17 item 5: the call log records every call of the process in one SQLite file, never the key.

Real HTTP against the offline gateway; ``offline/scripted`` pins the exact answers, usage, tool calls
and errors, so each row can be checked field by field.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flotorch_nb
from flotorch_nb import (
    APIConnectionError,
    ConfigurationError,
    FlotorchLLM,
    RateLimitError,
    StreamError,
    call_label,
    calllog,
)
from flotorch_nb._pipeline import _logsink
from flotorch_nb._request_key import request_hash
from flotorch_nb.calllog import CallLog, CallLogError, CallLogWarning
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.pricing import reset_default_prices, shared_prices
from tests.support.calllog_worker import CALLS, KEY, work
from tests.support.dask_cluster import two_workers
from tests.support.scripts import run_script

SCRIPTED = "offline/scripted"


def script(**fields: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": json.dumps({"script": fields})}]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[CallLog]:
    """A call log on for this test only (the process-wide sink is put back afterwards)."""
    on = calllog.enable(tmp_path / "calls.sqlite")
    yield on
    calllog.disable()
    on.close()


@pytest.fixture
def llm(gateway: OfflineGateway) -> Iterator[FlotorchLLM]:
    with FlotorchLLM(SCRIPTED, KEY, gateway.url, max_retries=0) as client:
        yield client


def only_row(log: CallLog) -> dict[str, Any]:
    rows = log.search(limit=None)
    assert len(rows) == 1, rows
    return rows[0]


# -- what a row holds -------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
async def test_an_answer_is_logged_with_messages_parameters_tool_calls_tokens_and_provenance(
    log: CallLog, llm: FlotorchLLM, sync: bool
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        *script(
            content="Paris",
            tool_calls=[{"name": "lookup", "arguments": {"city": "Paris"}, "id": "call_1"}],
            usage={"prompt_tokens": 7, "completion_tokens": 2},
        ),
    ]
    if sync:
        response = llm.invoke(messages, temperature=0.25, max_tokens=50)
    else:
        response = await llm.ainvoke(messages, temperature=0.25, max_tokens=50)
    row = only_row(log)
    assert row["model"] == SCRIPTED and row["answered_model"] == response.model
    assert (row["outcome"], row["source"], row["stream"]) == ("ok", "offline", 0)
    assert json.loads(row["messages"]) == messages
    assert json.loads(row["params"]) == {"temperature": 0.25, "max_tokens": 50}
    assert row["answer"] == "Paris"
    assert json.loads(row["tool_calls"]) == [t.to_dict() for t in response.tool_calls]
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (7, 2, 9)
    assert row["finish_reason"] == "tool_calls"
    assert row["request_hash"] == response.provenance["request_hash"]  # type: ignore[index]
    assert row["request_id"] == response.request_id
    assert row["gateway"] == response.provenance["gateway"]  # type: ignore[index]
    assert row["latency_ms"] > 0 and row["error_type"] is None
    assert row["pid"] == os.getpid() and row["version"] == flotorch_nb.__version__
    assert row["prompt"] == messages[-1]["content"]


def test_the_cost_is_priced_at_the_process_prices(log: CallLog, llm: FlotorchLLM) -> None:
    shared_prices().set(SCRIPTED, 1, 3)  # dollars per million input / output tokens
    try:
        llm.invoke(script(content="x", usage={"prompt_tokens": 1000, "completion_tokens": 2000}))
        log.flush()  # priced when written (a fraction of a second after the call)
    finally:
        reset_default_prices()
    llm.invoke(script(content="y"))  # no price now: unknown, not 0
    newest, oldest = log.search()
    assert oldest["cost"] == pytest.approx(0.001 + 0.006)
    assert newest["cost"] is None


def test_the_label_and_the_cell_are_recorded(log: CallLog, llm: FlotorchLLM) -> None:
    calllog.set_cell(("analysis.ipynb", "cell-7", 12))
    try:
        with call_label("magic"):
            llm.invoke(script(content="a"))
    finally:
        calllog.set_cell(None)
    llm.invoke(script(content="b"))
    newest, oldest = log.search()
    assert (oldest["label"], oldest["notebook"], oldest["cell"], oldest["execution_count"]) == (
        "magic",
        "analysis.ipynb",
        "cell-7",
        12,
    )
    assert (newest["label"], newest["notebook"], newest["cell"]) == (None, None, None)


# -- outcomes ---------------------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
async def test_an_error_is_logged_with_its_type_status_message_and_request_hash(
    log: CallLog, llm: FlotorchLLM, sync: bool
) -> None:
    messages = script(error={"status": 429, "message": "slow down please"})
    with pytest.raises(RateLimitError):
        if sync:
            llm.invoke(messages)
        else:
            await llm.ainvoke(messages)
    row = only_row(log)
    assert (row["outcome"], row["error_type"], row["error_status"]) == ("error", "RateLimitError", 429)
    assert "slow down please" in row["error_message"]
    assert row["answer"] is None and row["total_tokens"] is None
    assert row["cost"] == 0.0  # it never reached a model
    call = llm._pipeline.prepare(messages, None, None, None, {}, stream=False)
    assert row["request_hash"] == request_hash(call.content, llm.endpoint)


def test_an_unreachable_gateway_is_logged_as_a_connection_error(log: CallLog) -> None:
    with (
        FlotorchLLM(SCRIPTED, KEY, "http://127.0.0.1:9", max_retries=0) as down,
        pytest.raises(APIConnectionError),
    ):
        down.invoke(script(content="never"))
    row = only_row(log)
    assert (row["outcome"], row["error_type"], row["source"]) == ("error", "APIConnectionError", "live")
    assert row["gateway"] == "http://127.0.0.1:9"


def test_a_failed_call_names_its_gateway_and_request_as_an_answer_s_provenance_would(log: CallLog) -> None:
    """A failure has no provenance record, so its row names the gateway and the request hash itself:
    the same ones an answer's record carries, a base URL's own path included."""
    import httpx2

    statuses = iter([200, 503])

    def gateway(request: httpx2.Request) -> httpx2.Response:
        status = next(statuses)
        if status != 200:
            return httpx2.Response(status, json={"error": {"message": "busy"}})
        message = {"role": "assistant", "content": "hi"}
        return httpx2.Response(200, json={"choices": [{"message": message, "finish_reason": "stop"}]})

    http = httpx2.Client(transport=httpx2.MockTransport(gateway))
    with FlotorchLLM(SCRIPTED, KEY, "http://gw.test/flotorch", max_retries=0, http_client=http) as client:
        answer = client.invoke(script(content="hi"))
        with pytest.raises(flotorch_nb.APIStatusError):
            client.invoke(script(content="hi"))
    assert answer.provenance is not None
    failed = next(row for row in log.search(limit=None) if row["outcome"] == "error")
    assert failed["gateway"] == answer.provenance["gateway"] == "http://gw.test/flotorch"
    assert failed["request_hash"] == answer.provenance["request_hash"]
    http.close()


@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
async def test_a_stream_is_logged_when_it_ends_and_a_stopped_or_cut_one_says_so(
    log: CallLog, llm: FlotorchLLM, sync: bool
) -> None:
    whole = script(chunks=["Hel", "lo"], usage={"prompt_tokens": 3, "completion_tokens": 2})
    stopped = script(chunks=["a", "b", "c", "d"], token_delay=0.05)
    cut = script(chunks=["x", "y", "z", "w"], cut_after=2)
    if sync:
        stream = llm.stream(whole)
        next(iter(stream))
        assert log.search(limit=None) == []  # not ended yet: nothing logged
        assert "".join(stream) == "lo"
        deltas = iter(llm.stream(stopped))
        next(deltas)
        deltas.close()  # the generator: closed mid-answer
        with pytest.raises(StreamError):
            "".join(llm.stream(cut))
    else:
        astream = llm.astream(whole)
        assert [d async for d in astream] == ["Hel", "lo"]
        partial = llm.astream(stopped).__aiter__()
        await partial.__anext__()
        await partial.aclose()
        with pytest.raises(StreamError):
            async for _ in llm.astream(cut):
                pass
    rows = log.search(limit=None)
    assert [(r["outcome"], r["stream"]) for r in rows] == [("error", 1), ("stopped", 1), ("ok", 1)]
    assert rows[2]["answer"] == "Hello" and rows[2]["total_tokens"] == 5
    assert rows[0]["error_type"] == "StreamError"


def test_a_cache_hit_is_logged_with_source_cache(
    log: CallLog, gateway: OfflineGateway, tmp_path: Path
) -> None:
    with FlotorchLLM(SCRIPTED, KEY, gateway.url, cache=tmp_path / "answers.sqlite") as cached:
        first = cached.invoke(script(content="kept"))
        again = cached.invoke(script(content="kept"))
        stream = cached.stream(script(content="kept"))
        assert "".join(stream) == "kept"
    assert again.source == "cache"
    rows = log.search(limit=None)
    assert [r["source"] for r in rows] == ["cache", "cache", "offline"]
    answers = [stream.response, again, first]  # a stream's request (stream: true) has its own hash
    assert [r["request_hash"] for r in rows] == [a.provenance["request_hash"] for a in answers]  # type: ignore[index]
    assert all(r["answer"] == "kept" and r["outcome"] == "ok" for r in rows)


def test_every_item_of_a_concurrent_batch_is_logged(log: CallLog, llm: FlotorchLLM) -> None:
    prompts = [f"item {i}" for i in range(60)]
    with llm.with_model("offline/echo") as echo:
        result = echo.batch(prompts, concurrency=16, progress=False)
    assert not result.errors
    rows = log.search(limit=None)
    assert sorted(r["answer"] for r in rows) == sorted(prompts)
    assert {r["label"] for r in rows} == {"batch"}


# -- never the key ------------------------------------------------------------------------------------
def test_the_key_is_never_written_even_when_a_prompt_an_answer_or_an_error_holds_it(
    log: CallLog, llm: FlotorchLLM
) -> None:
    llm.invoke(script(content=f"echoing {KEY} back"))
    llm.invoke([{"role": "user", "content": f"my key is {KEY}"}], model="offline/echo")
    with pytest.raises(RateLimitError):
        llm.invoke(script(error={"status": 429, "message": f"key {KEY} is over its limit"}))
    rows = log.search(limit=None)
    assert len(rows) == 3 and "***" in rows[0]["error_message"] and "***" in rows[2]["answer"]
    log.close()  # checkpointed: everything is in the main file, and the WAL is read too if left
    data = b"".join(p.read_bytes() for p in log.path.parent.glob("calls.sqlite*"))
    assert data and KEY.encode() not in data


# -- search ---------------------------------------------------------------------------------------------
def test_search_by_words_model_and_time_newest_first(log: CallLog, llm: FlotorchLLM) -> None:
    with llm.with_model("offline/echo") as echo:
        echo.invoke([{"role": "user", "content": "the capital of France?"}])
        echo.invoke([{"role": "user", "content": "a poem about the sea"}])
    llm.invoke(script(content="France has many rivers"))
    found = log.search("france")
    assert [r["answer"] for r in found] == ["France has many rivers", "the capital of France?"]
    assert [r["answer"] for r in log.search('capital "France?" (')] == ["the capital of France?"]
    assert [r["answer"] for r in log.search("sea-poem")] == ["a poem about the sea"]  # two words
    assert [r["model"] for r in log.search(model="offline/echo")] == ["offline/echo"] * 2
    assert len(log.search("france", model="offline/echo")) == 1
    assert log.search(since=timedelta(hours=1), limit=1)[0]["model"] == SCRIPTED
    assert log.search(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert log.search("nowhere-to-be-found") == []
    with pytest.raises(ConfigurationError, match="no word"):
        log.search("?!")
    with pytest.raises(ConfigurationError, match="limit"):
        log.search(limit=0)
    with pytest.raises(ConfigurationError, match="ISO 8601"):
        log.search(since="yesterday")


@pytest.mark.parametrize("selective", [0, 10**9], ids=["walk-the-filter", "walk-the-text"])
def test_text_with_a_filter_finds_the_same_rows_either_way(
    log: CallLog, llm: FlotorchLLM, monkeypatch: pytest.MonkeyPatch, selective: int
) -> None:
    from flotorch_nb import _calllog_store

    monkeypatch.setattr(_calllog_store, "_SELECTIVE", selective)
    with llm.with_model("offline/echo") as echo:
        echo.invoke([{"role": "user", "content": "river one"}])
        for i in range(12):
            llm.invoke(script(content=f"river {i}"))
        echo.invoke([{"role": "user", "content": "river two"}])
        echo.invoke([{"role": "user", "content": "lake three"}])
    since = log.search(limit=None)[-1]["time"]
    assert [r["answer"] for r in log.search("river", model="offline/echo")] == ["river two", "river one"]
    assert [r["answer"] for r in log.search("river", model="offline/echo", limit=1)] == ["river two"]
    assert [r["answer"] for r in log.search("river 11", model=SCRIPTED, since=since)] == ["river 11"]
    assert log.search("river", model="never-used") == []
    assert len(log.search("river", since=since, limit=None)) == 14


def test_logs_returns_a_dataframe_of_the_log_that_is_on(log: CallLog, llm: FlotorchLLM) -> None:
    llm.invoke(script(content="one", usage={"prompt_tokens": 1, "completion_tokens": 1}))
    with pytest.raises(RateLimitError):
        llm.invoke(script(error={"status": 429}))
    frame = flotorch_nb.logs()
    assert list(frame["outcome"]) == ["error", "ok"]
    assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["total_tokens"].dtype) == "Int64" and frame["total_tokens"].isna().tolist() == [
        True,
        False,
    ]
    assert list(flotorch_nb.logs("one")["answer"]) == ["one"]
    assert list(flotorch_nb.logs(path=log.path, limit=1)["outcome"]) == ["error"]


def test_logs_without_a_log_or_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    assert calllog.active() is None
    with pytest.raises(ConfigurationError, match="no call log is on"):
        flotorch_nb.logs()
    with pytest.raises(CallLogError, match="no such file"):
        flotorch_nb.logs(path=tmp_path / "never.sqlite")
    assert not (tmp_path / "never.sqlite").exists()


def test_export_writes_json_lines_oldest_first(log: CallLog, llm: FlotorchLLM, tmp_path: Path) -> None:
    for word in ("first", "second", "third"):
        llm.invoke(script(content=word), temperature=0)
    out = tmp_path / "calls.jsonl"
    assert calllog.export(out) == 3
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["answer"] for line in lines] == ["first", "second", "third"]
    assert lines[0]["messages"] == script(content="first") and lines[0]["params"] == {"temperature": 0}
    assert datetime.fromisoformat(lines[0]["time"]).tzinfo is not None
    assert calllog.export(out, "second") == 1


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(CallLogError, match="not a flotorch_nb call log"):
        calllog.enable(foreign)
    assert calllog.active() is None


# -- turning it on and off ------------------------------------------------------------------------------
def test_flotorch_log_is_read_when_a_client_is_built_and_disable_holds(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.sqlite"
    monkeypatch.setenv(calllog.ENV_LOG, str(path))
    try:
        with FlotorchLLM(SCRIPTED, KEY, gateway.url) as client:
            client.invoke(script(content="logged"))
            assert calllog.active() is not None
            calllog.disable()
            client.invoke(script(content="not logged"))
        with FlotorchLLM(SCRIPTED, KEY, gateway.url) as again:  # the same value: disable() holds
            again.invoke(script(content="not logged either"))
        assert list(flotorch_nb.logs(path=path)["answer"]) == ["logged"]
        monkeypatch.delenv(calllog.ENV_LOG)
        monkeypatch.setenv(calllog.ENV_LOG, str(tmp_path / "other.sqlite"))
        FlotorchLLM(SCRIPTED, KEY, gateway.url).close()  # a new value turns it on again
        assert calllog.active() is not None and calllog.active().path == tmp_path / "other.sqlite"  # type: ignore[union-attr]
        monkeypatch.delenv(calllog.ENV_LOG)
        FlotorchLLM(SCRIPTED, KEY, gateway.url).close()  # cleared: the log it turned on is off
        assert calllog.active() is None
    finally:
        calllog.disable()


def test_a_log_that_cannot_be_written_never_fails_a_call_and_warns_once(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(calllog.ENV_LOG, str(tmp_path / "no-such-folder" / "calls.sqlite"))
    try:
        with FlotorchLLM(SCRIPTED, KEY, gateway.url) as client:
            assert client.invoke(script(content="fine")).content == "fine"
            broken = calllog.active()
            assert broken is not None
            with pytest.warns(CallLogWarning, match="could not be written"):
                broken.flush()
            assert client.invoke(script(content="still fine")).content == "still fine"
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                broken.flush()  # counted, not warned again
        assert broken.dropped == 2 and broken.written == 0
        assert "does not exist" in str(broken.last_error)
    finally:
        calllog.disable()


def test_a_full_queue_is_written_by_the_caller(
    log: CallLog, llm: FlotorchLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calllog, "MAX_PENDING", 3)
    monkeypatch.setattr(calllog, "FLUSH_EVERY", 60.0)
    log.close()  # the writer restarts with the long round: only a full queue writes now
    calllog.enable(log.path)
    for i in range(3):
        llm.invoke(script(content=str(i)))
    assert log.pending == 0 and log.written == 3


# -- processes ------------------------------------------------------------------------------------------
def test_what_is_recorded_is_written_at_interpreter_exit(gateway: OfflineGateway, tmp_path: Path) -> None:
    path = tmp_path / "exit.sqlite"
    done = run_script(
        f"""
        import flotorch_nb.calllog as calllog
        from flotorch_nb import FlotorchLLM
        calllog.FLUSH_EVERY = 3600  # only the exit can write them
        calllog.enable({str(path)!r})
        llm = FlotorchLLM("offline/echo", "k-exit", {gateway.url!r})
        llm.batch([f"q{{i}}" for i in range(20)], progress=False)
        print(calllog.active().pending)
        """
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0  # still waiting when the script ended
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone() == (20,)


@pytest.mark.slow
def test_several_processes_write_one_log_at_once(gateway: OfflineGateway, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    spawn = multiprocessing.get_context("spawn")
    workers = 4
    barrier = spawn.Barrier(workers)
    out: Any = spawn.Queue()
    processes = [
        spawn.Process(target=work, args=(w, gateway.url, str(path), barrier, out)) for w in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        reports = [out.get(timeout=120) for _ in range(workers)]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert [error for _, error in reports if error] == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        by_pid = dict(conn.execute("SELECT pid, count(*) FROM calls GROUP BY pid").fetchall())
    assert sorted(by_pid) == sorted(pid for pid, _ in reports)
    assert set(by_pid.values()) == {CALLS}
    assert len(calllog.search_log("worker", limit=None, path=path)) == workers * CALLS


def test_a_client_built_without_flotorch_log_does_not_import_the_call_log() -> None:
    done = run_script(
        """
        import sys
        from flotorch_nb import FlotorchLLM
        FlotorchLLM("m", "k-light", "http://127.0.0.1:9").close()
        print("flotorch_nb.calllog" in sys.modules, "sqlite3" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


@pytest.mark.slow
def test_a_dask_job_logs_every_item_from_its_workers(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    from flotorch_nb.dask import map_dataframe

    path = tmp_path / "dask.sqlite"
    data = pd.DataFrame({"q": [f"dask question {i}" for i in range(32)]})
    try:  # the workers inherit FLOTORCH_LOG too; closing the cluster makes them exit, writing what waits
        with two_workers(monkeypatch, gateway.url, KEY, **{calllog.ENV_LOG: str(path)}):
            job = map_dataframe(dd.from_pandas(data, npartitions=8), template="{q}", model="offline/echo")
            got = job.compute()
    finally:
        calllog.disable()
    assert got["error_type"].isna().all(), got["error"].dropna().tolist()
    rows = calllog.search_log("dask question", limit=None, path=path)
    assert sorted(r["answer"] for r in rows) == sorted(data["q"])
    assert os.getpid() not in {r["pid"] for r in rows}


def test_a_full_queue_of_a_failing_log_is_dropped_not_written_by_the_caller(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = CallLog(tmp_path / "no-such-folder" / "calls.sqlite")
    monkeypatch.setattr(calllog, "FLUSH_EVERY", 60.0)
    monkeypatch.setattr(calllog, "MAX_PENDING", 2)
    monkeypatch.setattr(_logsink, "current", failing)
    with FlotorchLLM(SCRIPTED, KEY, gateway.url) as client:
        client.invoke(script(content="first"))
        with pytest.warns(CallLogWarning):
            failing.flush()  # the file cannot be used: it is failing now
        monkeypatch.setattr(failing, "flush", lambda: pytest.fail("a caller waited for a failing log"))
        client.invoke(script(content="second"))
        client.invoke(script(content="third"))
    assert failing.pending == 0 and failing.dropped == 3
    monkeypatch.undo()
    failing.close()


def test_every_model_a_fallback_asks_is_a_row_of_its_own(log: CallLog, gateway: OfflineGateway) -> None:
    from flotorch_nb.gateway import Fault

    gateway.faults.add(Fault(status=503, model="offline/concise", times=1))
    with FlotorchLLM(
        "offline/concise", KEY, gateway.url, max_retries=0, fallbacks=["offline/echo"]
    ) as client:
        answer = client.invoke([{"role": "user", "content": "fall back please"}])
    assert answer.model == "offline/echo"
    newest, oldest = log.search(limit=None)
    assert (oldest["model"], oldest["outcome"], oldest["error_status"]) == ("offline/concise", "error", 503)
    assert (newest["model"], newest["outcome"], newest["answer"]) == (
        "offline/echo",
        "ok",
        "fall back please",
    )


def test_a_waiting_call_holds_nothing_the_garbage_collector_walks(
    log: CallLog, llm: FlotorchLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The queue once held the call's objects (the response, its dicts) until the writer's round:
    # every collection in between walked them, which cost a logged abatch more CPU than the row.
    import gc

    monkeypatch.setattr(calllog, "FLUSH_EVERY", 60.0)
    log.close()  # the writer restarts with the long round: the call waits in the queue
    calllog.enable(log.path)
    llm.invoke(script(content="kept as plain values"))
    gc.collect()
    assert log.pending == 1
    assert not any(gc.is_tracked(waiting) for waiting in log._pending)
    (found,) = log.search("plain values")
    assert found["answer"] == "kept as plain values"


def test_the_writers_round_leaves_a_few_late_calls_for_its_next_round(
    log: CallLog, llm: FlotorchLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Calls that arrived while a round wrote were once written at once, a transaction of a few
    # rows each, round after round: in a logged abatch that made the writer's CPU per call half again.
    monkeypatch.setattr(calllog, "FLUSH_EVERY", 60.0)
    log.close()  # the writer restarts with the long round: nothing is written behind the test's back
    calllog.enable(log.path)
    llm.invoke(script(content="first"))
    write = log._write
    late: list[object] = []

    def write_while_a_call_ends(batch: list[Any]) -> None:
        if not late:
            late.append(llm.invoke(script(content="late")))  # ends while the round writes
        write(batch)

    monkeypatch.setattr(log, "_write", write_while_a_call_ends)
    log._drain(whole_batches_after_first=True)  # what one round of the writer does
    assert (log.written, log.pending) == (1, 1)
    log.flush()  # everything, as flush always does
    assert (log.written, log.pending) == (2, 0)


def test_the_index_keeps_no_token_counts_and_a_file_made_before_still_works(
    llm: FlotorchLLM, tmp_path: Path
) -> None:
    # Token counts per row serve only ranking, and a search orders by id: not keeping them is a
    # b-tree insert less per call. A file whose index keeps them (made before) is read the same way.
    new, old = tmp_path / "new.sqlite", tmp_path / "old.sqlite"
    CallLog(old).open().close()
    with sqlite3.connect(old) as conn:  # the index as files made before had it
        conn.execute("DROP TABLE calls_fts")
        conn.execute("CREATE VIRTUAL TABLE calls_fts USING fts5(prompt, answer, content='', detail=none)")
    for path in (new, old):
        log = calllog.enable(path)
        try:
            llm.invoke(script(content="counted tokens"))
            assert [r["answer"] for r in log.search("tokens")] == ["counted tokens"]
        finally:
            calllog.disable()
            log.close()
    with sqlite3.connect(new) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "calls_fts" in tables and "calls_fts_docsize" not in tables


def test_the_log_bench_runs_its_search_part() -> None:
    """``bench/bench_log.py`` fills its log through the client's pipeline (no network): a smoke run
    keeps it working when the pipeline moves (it once called a ``FlotorchLLM._prepare`` gone since)."""
    done = run_script(
        """
        import runpy, sys
        sys.path.insert(0, "bench")
        sys.argv = ["bench_log.py", "--quick", "--search-only", "--rows", "200"]
        runpy.run_path("bench/bench_log.py", run_name="__main__")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "log of 200 calls" in done.stdout and "search no match" in done.stdout


def test_the_log_is_a_plain_sqlite_file_in_wal_mode(log: CallLog, llm: FlotorchLLM) -> None:
    """Issue 17 names WAL: readers (a search, another kernel) never wait for the writer's batch."""
    llm.invoke(script(content="plain"))
    log.flush()
    with sqlite3.connect(log.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT answer FROM calls").fetchall() == [("plain",)]
        assert conn.execute("SELECT rowid FROM calls_fts WHERE calls_fts MATCH 'plain'").fetchall() == [(1,)]


def test_dropping_a_failing_log_s_queue_counts_what_it_took_when_the_writer_took_some_first() -> None:
    """A full queue of a failing log is dropped by the caller without the writer's lock; the writer
    may have drained part of it since it was counted, so what is dropped is what was there."""
    import collections

    from flotorch_nb.calllog import _drop

    pending: collections.deque[Any] = collections.deque([(1,), (2,), (3,)])
    assert _drop(pending, 5) == 3 and not pending
    pending.extend([(4,), (5,)])
    assert _drop(pending, 1) == 1 and list(pending) == [(5,)]
