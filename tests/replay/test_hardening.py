"""Record and replay under stress: a key quoted in a prompt, a folder that cannot be written, text no
encoder likes, a connection cut mid-answer, a stored stream that lost its events.

Record mode must behave as live mode does, and a recording must never hold the key, not even in its
name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from flotorch_nb import FlotorchError, FlotorchLLM, RetryPolicy, StreamError
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.replay import (
    RecordTransport,
    RecordWarning,
    ReplayFileError,
    ReplayMissError,
    ReplayTransport,
    canonical_request,
    request_key,
)

SECRET = "sk-" + "NameLeak-Secret-4d2b9e71"  # split, like every test key, so leak scans stay quiet
MODEL = "offline/assistant"
INSTANT = RetryPolicy(max_retries=2, base_delay=0, max_delay=0)


def _answer(text: str) -> dict[str, Any]:
    return {
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _echo(request: httpx2.Request) -> httpx2.Response:
    """Answers with the last user message; JSON written ASCII-safe, as a real gateway may."""
    said = json.loads(request.content)["messages"][-1]["content"]
    body = json.dumps(_answer(f"you said: {said}")).encode("ascii")
    return httpx2.Response(200, content=body, headers={"content-type": "application/json"})


def _recording_client(directory: Path, key: str = SECRET) -> FlotorchLLM:
    http = httpx2.Client(transport=RecordTransport(httpx2.MockTransport(_echo), directory))
    return FlotorchLLM("m", key, "https://gw.example", http_client=http, retry=RetryPolicy(max_retries=0))


# -- a: the key never names a file --------------------------------------------------------------------


def test_a_key_quoted_in_the_prompt_does_not_reach_the_file_name(tmp_path: Path) -> None:
    with _recording_client(tmp_path) as llm:
        llm.invoke([{"role": "user", "content": f"Why is {SECRET} refused?"}])
    (path,) = tmp_path.glob("*.json")
    for part in SECRET.lower().split("-"):  # the slug lower-cases and splits words
        if len(part) > 3:
            assert part not in path.name.lower(), path.name
    assert SECRET not in path.read_text()
    assert path.name.startswith("why-is-refused-")


def test_a_miss_does_not_quote_the_key_either(tmp_path: Path) -> None:
    http = httpx2.Client(transport=ReplayTransport(tmp_path))
    llm = FlotorchLLM("m", SECRET, "https://gw.example", http_client=http)
    with http, llm, pytest.raises(ReplayMissError) as info:
        llm.invoke([{"role": "user", "content": f"my key is {SECRET}"}])
    assert SECRET not in str(info.value)


# -- b: an unwritable folder keeps the answer and warns -----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_unwritable_folder_warns_and_keeps_the_answer(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool, stream: bool
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot make a folder inside a file
    monkeypatch.setenv("FLOTORCH_RECORD", str(blocker / "recordings"))
    messages = [{"role": "user", "content": "Summarize FloTorch in one line."}]
    async with FlotorchLLM(MODEL, "any-key", gateway.url, retry=RetryPolicy(max_retries=0)) as llm:
        with pytest.warns(RecordWarning, match=r"not recorded.*a-file") as caught:
            if stream and sync:
                text = "".join(llm.stream(messages))
            elif stream:
                text = "".join([delta async for delta in llm.astream(messages)])
            else:
                resp = llm.invoke(messages) if sync else await llm.ainvoke(messages)
                text = resp.content
    assert text.startswith("FloTorch is an LLM gateway")
    assert len(caught) == 1


# -- c: any text that came in can be written, and read back ------------------------------------------


@pytest.mark.parametrize("prompt", ["list \udcff.txt", "\ud800 alone", "caf\u00e9 \U0001f600 \udcff"])
def test_a_lone_surrogate_in_the_prompt_is_recorded_and_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prompt: str
) -> None:
    messages = [{"role": "user", "content": prompt}]
    with _recording_client(tmp_path) as llm:
        recorded = llm.invoke(messages).content
    assert recorded == f"you said: {prompt}"
    (path,) = tmp_path.glob("*.json")
    path.read_text(encoding="utf-8")  # valid UTF-8 on disk
    stored = json.loads(path.read_bytes())
    assert stored["request"]["body"]["messages"][0]["content"] == prompt
    assert stored["key"] == request_key(stored["request"]), "read back, it has the key it was written with"
    sent = {**stored["request"]["body"], "messages": messages}
    assert stored["key"] == request_key(canonical_request(sent))
    if "caf" in prompt:
        assert "café" in path.read_text(encoding="utf-8"), "readable text stays readable"
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))
    with FlotorchLLM("m") as llm:
        assert llm.invoke(messages).content == recorded


# -- d: a cut answer is the same error as live, and is not sent again ---------------------------------


async def _call(llm: FlotorchLLM, sync: bool, stream: bool) -> str:
    messages = [{"role": "user", "content": "Explain in three sentences why streaming helps users."}]
    if stream and sync:
        return "".join(llm.stream(messages))
    if stream:
        return "".join([delta async for delta in llm.astream(messages)])
    return (llm.invoke(messages) if sync else await llm.ainvoke(messages)).content


async def _outcome(gateway: OfflineGateway, sync: bool, stream: bool) -> tuple[str, int]:
    """What the caller sees under a connection cut mid-answer, and how many requests reached the gateway."""
    before = len(gateway.requests)
    gateway.faults.add(Fault(cut_after=3, times=1))
    async with FlotorchLLM(MODEL, "any-key", gateway.url, retry=INSTANT) as llm:
        try:
            seen = "answer: " + (await _call(llm, sync, stream))[:20]
        except FlotorchError as error:
            seen = type(error).__name__
    gateway.faults.clear()
    return seen, len(gateway.requests) - before


@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("stream", [True, False])
async def test_a_cut_answer_looks_the_same_in_record_mode_as_live(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool, stream: bool
) -> None:
    live = await _outcome(gateway, sync, stream)
    monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path))
    recorded = await _outcome(gateway, sync, stream)
    assert recorded == live
    files = list(tmp_path.glob("*.json"))
    if stream:
        assert live == (StreamError.__name__, 1), "a stream cut mid-way is not sent again"
        assert not files, "a cut answer is not recorded"
    else:  # nothing reached the caller yet: sent again, and the complete second answer is recorded
        assert live[1] == 2 and len(files) == 1


def test_a_cut_stream_in_record_mode_keeps_the_text_that_arrived(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path))
    gateway.faults.add(Fault(cut_after=4))
    deltas: list[str] = []
    with FlotorchLLM(MODEL, "any-key", gateway.url, retry=INSTANT) as llm:
        stream = llm.stream([{"role": "user", "content": "A haiku about the sea."}])
        with pytest.raises(StreamError, match="broke"):
            deltas.extend(stream)
    assert "".join(deltas), "the chunks before the cut reached the caller, as they do live"
    assert not list(tmp_path.glob("*.json"))


# -- d: a stored stream without events is damaged ---------------------------------------------------


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda record: record["response"].pop(field)


@pytest.mark.parametrize("sync", [True, False])
def test_a_stored_stream_without_its_events_is_a_replay_file_error(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    messages = [{"role": "user", "content": "A haiku about the sea."}]
    monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path))
    with FlotorchLLM(MODEL, "any-key", gateway.url) as llm:
        "".join(llm.stream(messages))
    (path,) = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    _drop("events")(record)
    path.write_text(json.dumps(record))
    monkeypatch.delenv("FLOTORCH_RECORD")
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))
    with FlotorchLLM(MODEL) as llm, pytest.raises(ReplayFileError, match=r"'response\.events' is missing"):
        "".join(llm.stream(messages))


def test_a_stored_answer_without_any_body_is_a_replay_file_error(tmp_path: Path) -> None:
    with _recording_client(tmp_path) as llm:
        llm.invoke([{"role": "user", "content": "hello"}])
    (path,) = tmp_path.glob("*.json")
    record = json.loads(path.read_text())
    _drop("json")(record)
    path.write_text(json.dumps(record))
    http = httpx2.Client(transport=ReplayTransport(tmp_path))
    llm = FlotorchLLM("m", "k", "https://gw.example", http_client=http)
    with http, llm, pytest.raises(ReplayFileError, match="no body"):
        llm.invoke([{"role": "user", "content": "hello"}])
