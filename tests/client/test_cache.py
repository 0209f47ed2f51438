"""The answer cache: hits for every way of calling, the replay matching rule, damaged files, processes.

A hit is checked by what the gateway received (nothing) and what the hooks saw (nothing), not only by
``source == "cache"``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from flotorch_nb import (
    AnswerCache,
    CacheError,
    CacheWriteWarning,
    FlotorchLLM,
    RetryPolicy,
    StructuredOutputError,
)
from flotorch_nb.cache import ENV_CACHE
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.batch import make_llm
from tests.support.client import KEY

ASK = [{"role": "user", "content": "What is a cache?"}]


def sent(gateway: OfflineGateway) -> int:
    return len(gateway.requests)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_second_identical_call_is_answered_from_the_file(
    gateway: OfflineGateway, tmp_path: Path, kind: str
) -> None:
    seen: list[Any] = []

    async def call(llm: FlotorchLLM) -> Any:
        if kind == "invoke":
            return llm.invoke(ASK, temperature=0.2)
        if kind == "ainvoke":
            return await llm.ainvoke(ASK, temperature=0.2)
        if kind == "stream":
            stream = llm.stream(ASK, temperature=0.2)
            deltas = list(stream)
            assert "".join(deltas) == stream.response.content
            return stream.response
        astream = llm.astream(ASK, temperature=0.2)
        deltas = [d async for d in astream]
        assert "".join(deltas) == astream.response.content
        return astream.response

    async with make_llm(gateway, model="offline/assistant", cache=tmp_path / "a.sqlite") as llm:
        first = await call(llm)
        llm.hooks.before_request.append(seen.append)
        llm.hooks.after_call.append(seen.append)
        before = sent(gateway)
        second = await call(llm)
    assert sent(gateway) == before and seen == []  # nothing sent, no hook ran: it was not a call
    assert first.source == "offline" and second.source == "cache"
    assert second.content == first.content and second.usage == first.usage
    assert second.metadata["raw_response"] == first.metadata["raw_response"]
    assert second.tool_calls == first.tool_calls and second.finish_reason == first.finish_reason


def test_a_streamed_answer_and_an_invoke_share_one_row(gateway: OfflineGateway, tmp_path: Path) -> None:
    with make_llm(gateway, model="offline/assistant", cache=tmp_path / "a.sqlite") as llm:
        streamed = llm.stream(ASK).response
        before = sent(gateway)
        assert llm.invoke(ASK).content == streamed.content
    assert sent(gateway) == before


class City(BaseModel):
    name: str
    country: str


def test_keys_follow_the_replay_rule_not_the_host_or_key(gateway: OfflineGateway, tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    retry = RetryPolicy(max_retries=0)
    first = FlotorchLLM("offline/assistant", "one-key-aaaa", gateway.url, retry=retry, cache=path)
    first.invoke(ASK, temperature=1, response_format=City)
    other_host = gateway.url.replace("127.0.0.1", "localhost")
    second = FlotorchLLM("offline/assistant", "another-key-bbbb", other_host, retry=retry, cache=path)
    before = sent(gateway)
    hit = second.invoke(ASK, temperature=1.0, response_format=City)  # 1 == 1.0; other host, other key
    assert hit.source == "cache" and isinstance(hit.parsed, City) and sent(gateway) == before
    for changed in (
        {"temperature": 0.5, "response_format": City},
        {"temperature": 1},
        {"temperature": 1, "model": "offline/echo"},
        {
            "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        },
    ):
        assert second.invoke(ASK, **changed).source != "cache"
    assert sent(gateway) == before + 4
    first.close()
    second.close()


def test_errors_are_not_cached_and_the_key_never_reaches_the_file(
    gateway: OfflineGateway, tmp_path: Path
) -> None:
    path = tmp_path / "a.sqlite"
    secret = "sk-" + "cache-secret-0123456789"  # split: the repository's leak scan stays quiet
    llm = FlotorchLLM("offline/echo", secret, gateway.url, retry=RetryPolicy(max_retries=0), cache=path)
    gateway.faults.add(Fault(status=400, message="nope"))
    with pytest.raises(Exception, match="nope"):
        llm.invoke([{"role": "user", "content": "hello"}])
    assert len(AnswerCache(path)) == 0
    echoed = llm.invoke([{"role": "user", "content": f"my key is {secret}"}])  # the echo model repeats it
    assert secret in echoed.content
    again = llm.invoke([{"role": "user", "content": f"my key is {secret}"}])
    assert again.source == "cache" and secret not in again.content
    llm.close()
    AnswerCache(path).close()
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes(), file


@pytest.mark.parametrize("damage", ["garbage", "foreign", "folder", "no-folder", "locked"])
def test_a_damaged_locked_or_unusable_file_is_a_typed_error_before_anything_is_sent(
    gateway: OfflineGateway, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "a.sqlite"
    holder = None
    if damage == "garbage":
        path.write_bytes(b"this is not a database at all" * 100)
    elif damage == "foreign":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE people (name TEXT)")
    elif damage == "folder":
        path.mkdir()
    elif damage == "no-folder":
        path = tmp_path / "missing" / "a.sqlite"
    else:
        AnswerCache(path).open().close()
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    cache = AnswerCache(path, busy_timeout=0.2)
    with make_llm(gateway, cache=cache) as llm:
        with pytest.raises(CacheError, match="cannot be used") as caught:
            llm.invoke(ASK)
        assert caught.value.path == path.resolve()
        with pytest.raises(CacheError):
            llm.batch(["a", "b"], progress=False)
    assert sent(gateway) == 0
    if holder is not None:
        holder.rollback()
        holder.close()


def test_a_write_that_fails_keeps_the_answer_and_says_so(gateway: OfflineGateway, tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path / "a.sqlite").open()
    with cache._file.lock:
        cache._file.get().execute("PRAGMA query_only = ON")  # every write now fails, as on a full disk
    with make_llm(gateway, cache=cache) as llm:
        with pytest.warns(CacheWriteWarning, match="kept in memory"):
            answer = llm.invoke(ASK)
        assert answer.content
        with pytest.warns(CacheWriteWarning):
            result = llm.batch(["a", "b"], progress=False)
    assert [i.content for i in result] == ["a", "b"] and result.stats.cache_write_failures == 2
    assert "could not be written" in result.summary_text()
    cache.close()


def test_the_environment_and_false_choose_the_cache(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "env.sqlite"))
    with make_llm(gateway) as llm:
        assert llm.cache is not None and llm.cache.path.name == "env.sqlite"
        llm.invoke(ASK)
        assert llm.invoke(ASK).source == "cache"
        assert llm.with_model("offline/assistant").cache is llm.cache
        result = llm.batch([ASK], cache=False, progress=False)
        assert result[0].source == "offline"
    with make_llm(gateway, cache=False) as llm:
        assert llm.cache is None


def _write_rows(path: str, worker: int, count: int) -> None:
    from flotorch_nb.cache import AnswerCache, StoredAnswer

    cache = AnswerCache(path)
    for i in range(count):
        answer = StoredAnswer(
            f"answer {worker}-{i}", b"{}", "stop", (), 0.01, None, None, True, "offline", "m", (1, 2, 3)
        )
        assert cache.put(f"{worker}-{i}", answer)
    cache.close()


def test_several_processes_share_one_file_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    AnswerCache(path).open().close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_rows, args=(path, w, 150)) for w in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    cache = AnswerCache(path)
    assert len(cache) == 450
    hit = cache.get("2-149")
    assert hit is not None and hit.content == "answer 2-149" and hit.source == "cache"
    cache.close()


@pytest.mark.anyio
async def test_an_interrupted_cached_batch_loses_no_finished_answer(
    gateway: OfflineGateway, tmp_path: Path
) -> None:
    path = tmp_path / "a.sqlite"
    gateway.faults.add(Fault(delay=0.3, times=12))
    async with make_llm(gateway) as llm:
        work = llm.abatch([f"q{i}" for i in range(12)], concurrency=3, cache=path, progress=False)
        task = asyncio.create_task(work)
        await asyncio.sleep(0.45)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await task
    partial = caught.value.result  # type: ignore[attr-defined]
    stored = AnswerCache(path)
    assert len(stored) == len(partial.ok) > 0
    stored.close()


@pytest.mark.anyio
async def test_an_answer_holding_a_lone_surrogate_is_stored_and_read_back(
    gateway: OfflineGateway, tmp_path: Path
) -> None:
    ask = [{"role": "user", "content": "file \udcff.txt"}]  # as os.listdir gives a badly encoded name
    async with make_llm(gateway, model="offline/echo", cache=tmp_path / "s.sqlite") as llm:
        first = await llm.ainvoke(ask)
        again = await llm.ainvoke(ask)
    assert first.content == "file \udcff.txt" and first.source != "cache"
    assert again.source == "cache" and again.content == first.content
    assert sent(gateway) == 1


def _strict_city() -> type[BaseModel]:
    """A class with City's name and schema whose validator refuses every answer."""
    from pydantic import field_validator

    class City(BaseModel):
        name: str
        country: str

        @field_validator("name")
        @classmethod
        def _never(cls, value: str) -> str:
            raise ValueError("not this one")

    return City


def test_a_hit_that_does_not_parse_as_the_asked_class_is_a_miss(
    gateway: OfflineGateway, tmp_path: Path
) -> None:
    """The pipeline parses a hit as it parses a new answer: a row stored for another class with the same
    schema is asked again, and the new answer's failure is the caller's, as without a cache."""
    retry = RetryPolicy(max_retries=0)
    with FlotorchLLM("offline/assistant", KEY, gateway.url, retry=retry, cache=tmp_path / "a.sqlite") as llm:
        llm.invoke(ASK, response_format=City)
        before = sent(gateway)
        assert llm.invoke(ASK, response_format=City).source == "cache" and sent(gateway) == before
        with pytest.raises(StructuredOutputError):
            llm.invoke(ASK, response_format=_strict_city())
        assert sent(gateway) == before + 1


def test_hits_count_the_answers_the_caller_got_from_the_file(gateway: OfflineGateway, tmp_path: Path) -> None:
    # A row that does not parse as the asked class is sent again, and was once counted a hit too.
    cache = AnswerCache(tmp_path / "a.sqlite")
    with FlotorchLLM("offline/assistant", KEY, gateway.url, max_retries=0, cache=cache) as llm:
        llm.invoke(ASK, response_format=City)
        assert llm.invoke(ASK, response_format=City).source == "cache"
        with pytest.raises(StructuredOutputError):
            llm.invoke(ASK, response_format=_strict_city())
    assert (cache.hits, cache.misses) == (1, 2)
    cache.close()


def test_a_call_works_out_its_answer_key_once_for_the_lookup_and_the_store(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys cost a canonical JSON pass and a sha256 each: a call asks for its answer key on lookup
    and again on store, and is worked out once (``Call.answer_key``)."""
    from flotorch_nb._request_key import answer_key as real
    from flotorch_nb._transport import _boundary

    worked_out: list[str] = []

    def counted(body: Any, url: str) -> str:
        worked_out.append(url)
        return real(body, url)

    monkeypatch.setattr(_boundary, "answer_key", counted)
    with make_llm(gateway, cache=tmp_path / "answers.sqlite") as llm:
        first = llm.invoke([{"role": "user", "content": "Name a colour."}])
        again = llm.invoke([{"role": "user", "content": "Name a colour."}])
    assert again.source == "cache" and again.content == first.content
    assert len(worked_out) == 2  # one per call: the first's lookup and store share it, the hit's lookup
