"""``LLMResponse``: the seed's ``content``/``metadata`` exactly, the typed extras, and how it displays."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import httpx2
import pytest

from flotorch_nb import LLMResponse, ResponseError, ToolCall, Usage
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import (
    MOCK_MODEL,
    OMIT,
    SYNC,
    SYNC_IDS,
    Recorder,
    completion,
    invoke,
    live_llm,
    mock_llm,
    stream,
)

TOOL_CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    },
    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "UTC"}}},
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_fields_from_a_full_answer(sync: bool) -> None:
    body = completion(
        "Hello **there**", usage={"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    )
    headers = {"x-request-id": "req-42", "x-gateway-total-latency": "123.5"}
    async with mock_llm(Recorder(httpx2.Response(200, json=body, headers=headers))) as llm:
        response = await invoke(llm, sync)
    assert isinstance(response, LLMResponse)
    assert response.content == "Hello **there**"
    assert str(response) == "Hello **there**"
    meta = response.metadata
    assert (meta["inputTokens"], meta["outputTokens"], meta["totalTokens"]) == (11, 4, 15)
    assert all(type(meta[k]) is int for k in ("inputTokens", "outputTokens", "totalTokens"))
    assert meta["usageKnown"] is True
    assert meta["raw_response"] == body
    assert response.usage == Usage(11, 4, 15)
    assert response.model == meta["model"] == MOCK_MODEL
    assert response.id == "chatcmpl-test"
    assert response.finish_reason == meta["finishReason"] == "stop"
    assert response.request_id == meta["requestId"] == "req-42"
    assert response.gateway_latency_ms == meta["gatewayLatencyMs"] == 123.5
    assert response.latency_s > 0
    assert meta["latencyMs"] == pytest.approx(response.latency_s * 1000, abs=0.01)
    assert response.offline is meta["offline"] is False
    assert response.tool_calls == []
    assert response.parsed is None
    assert response.assistant_message() == {"role": "assistant", "content": "Hello **there**"}


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    "usage", [OMIT, None, {}, {"prompt_tokens": 3}], ids=["omitted", "null", "{}", "half"]
)
async def test_unknown_usage_does_not_crash_and_says_unknown(sync: bool, usage: Any) -> None:
    async with mock_llm(Recorder(httpx2.Response(200, json=completion("Hi", usage=usage)))) as llm:
        response = await invoke(llm, sync)
    assert response.content == "Hi"
    assert response.usage is None
    meta = response.metadata
    assert meta["usageKnown"] is False
    assert (meta["inputTokens"], meta["outputTokens"], meta["totalTokens"]) == (0, 0, 0)
    assert "unknown" in repr(response)
    bundle = response._repr_mimebundle_()
    assert "unknown" in bundle["text/plain"].lower()
    assert "unknown" in bundle["text/html"].lower()


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_total_tokens_is_derived_when_the_gateway_leaves_it_out(sync: bool) -> None:
    body = completion(usage={"prompt_tokens": 5, "completion_tokens": 6})
    async with mock_llm(Recorder(httpx2.Response(200, json=body))) as llm:
        response = await invoke(llm, sync)
    assert response.metadata["totalTokens"] == 11
    assert response.metadata["usageKnown"] is True


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_tool_calls_only_gives_empty_content(sync: bool) -> None:
    body = completion(None, tool_calls=TOOL_CALLS, finish_reason="tool_calls")
    async with mock_llm(Recorder(httpx2.Response(200, json=body))) as llm:
        response = await invoke(llm, sync)
    assert response.content == ""
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == [
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "get_time", '{"tz": "UTC"}'),
    ]
    assert response.tool_calls[0].args == {"city": "Paris"}
    assert response.tool_calls[1].args == {"tz": "UTC"}
    message = response.assistant_message()
    assert message["role"] == "assistant"
    assert message["content"] is None
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "get_time"]
    assert "get_weather" in response._repr_mimebundle_()["text/plain"]


def test_tool_call_args_that_are_not_a_json_object_are_a_response_error() -> None:
    with pytest.raises(ResponseError, match="not JSON"):
        _ = ToolCall("1", "f", "{bad").args
    with pytest.raises(ResponseError, match="not a JSON object"):
        _ = ToolCall("1", "f", "[1]").args
    assert ToolCall("1", "f", "").args == {}


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("headers", "model", "offline"),
    [
        ({}, "gpt-4o", False),
        ({"x-flotorch-gateway": "offline"}, "gpt-4o", True),
        ({"x-flotorch-gateway": "OFFLINE"}, "gpt-4o", True),
        ({}, "offline/assistant", True),
        ({"x-flotorch-gateway": "live"}, "gpt-4o", False),
    ],
)
async def test_offline_flag_from_header_or_model(
    sync: bool, headers: dict[str, str], model: str, offline: bool
) -> None:
    response_body = completion(model=model)
    async with mock_llm(Recorder(httpx2.Response(200, json=response_body, headers=headers))) as llm:
        response = await invoke(llm, sync)
    assert response.offline is offline
    assert response.metadata["offline"] is offline


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("value", ["abc", ""])
async def test_an_unreadable_gateway_latency_header_is_ignored(sync: bool, value: str) -> None:
    headers = {"x-gateway-total-latency": value}
    async with mock_llm(Recorder(httpx2.Response(200, json=completion(), headers=headers))) as llm:
        response = await invoke(llm, sync)
    assert response.gateway_latency_ms is None


def test_a_response_shown_as_plain_text_cannot_drive_a_terminal() -> None:
    """Terminal IPython prints ``llm.invoke(...)``'s value as ``Out[n]``: an answer (or a tool
    call's arguments) holding an escape sequence shows it as symbols; ``content`` keeps it."""
    response = LLMResponse(
        content="\x1b[2Jcleared\x07",
        metadata={},
        tool_calls=[ToolCall("c1", "get_weather", '{"city": "\x1b]0;pwned\x07"}')],
    )
    plain = response._repr_mimebundle_()["text/plain"]
    assert "\x1b" not in plain and "\x07" not in plain
    assert plain.startswith("␛[2Jcleared␇") and "␛]0;pwned␇" in plain
    assert response.content == "\x1b[2Jcleared\x07"


def test_mimebundle_has_text_and_html_with_footer() -> None:
    response = LLMResponse(
        content="# Title\n\nSome *text* <script>alert(1)</script>",
        metadata={},
        model="offline/assistant",
        usage=Usage(12, 34, 46),
        latency_s=0.25,
        offline=True,
    )
    bundle = response._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    plain, html = bundle["text/plain"], bundle["text/html"]
    assert plain.startswith("# Title")
    assert "46" in plain and "offline/assistant" in plain
    assert "46" in html and "offline/assistant" in html
    assert "flotorch-footer" in html
    assert "<script>" not in html
    assert "<h1" in html


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_gateway_answer_metadata_matches_its_usage(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url) as llm:
        response = await invoke(llm, sync, [{"role": "user", "content": "Summarize FloTorch in one line."}])
    raw = response.metadata["raw_response"]
    usage = raw["usage"]
    assert response.content
    assert response.metadata["inputTokens"] == usage["prompt_tokens"] > 0
    assert response.metadata["outputTokens"] == usage["completion_tokens"] > 0
    assert response.metadata["totalTokens"] == usage["total_tokens"]
    assert response.offline is True
    assert response.model is not None and response.model.startswith("offline/")
    assert response.id == raw["id"]
    assert response.finish_reason == "stop"
    assert response.gateway_latency_ms is not None
    assert response.request_id


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("fault", [Fault(omit_usage=True), Fault(null_usage=True)], ids=["omitted", "null"])
async def test_gateway_without_usage_gives_unknown_counts(
    gateway: OfflineGateway, sync: bool, fault: Fault
) -> None:
    gateway.faults.add(fault)
    async with live_llm(gateway.url) as llm:
        response = await invoke(llm, sync)
    assert response.content
    assert response.usage is None
    assert response.metadata["usageKnown"] is False
    assert response.metadata["totalTokens"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("fault", [Fault(omit_usage=True), Fault(null_usage=True)], ids=["omitted", "null"])
async def test_gateway_stream_without_usage_gives_unknown_counts(
    gateway: OfflineGateway, sync: bool, fault: Fault
) -> None:
    gateway.faults.add(fault)
    async with live_llm(gateway.url) as llm:
        deltas, response = await stream(llm, sync)
    assert "".join(deltas) == response.content != ""
    assert response.usage is None
    assert response.metadata["usageKnown"] is False


def test_import_and_a_call_never_load_the_notebook_stack(gateway: OfflineGateway) -> None:
    """The core works in a plain script: no IPython, ipywidgets or traitlets get imported."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import flotorch_nb
        llm = flotorch_nb.FlotorchLLM("offline/assistant", "k-123456", {gateway.url!r})
        response = llm.invoke([{{"role": "user", "content": "hi"}}])
        response._repr_mimebundle_()
        repr(response)
        llm.close()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("IPython", "ipywidgets", "traitlets"))
        print(json.dumps({{"heavy": heavy, "content": response.content}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["content"]


def test_import_alone_is_light() -> None:
    script = (
        "import sys, flotorch_nb; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('IPython', 'ipywidgets', 'traitlets', 'httpx2', 'pydantic', 'markdown_it')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_the_client_knows_it_is_offline_after_a_call(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url) as llm:
        assert llm.offline is None
        await invoke(llm, sync)
        assert llm.offline is True
    async with mock_llm(Recorder(httpx2.Response(200, json=completion(model="gpt-4o")))) as live:
        await stream(live, sync)
        assert live.offline is False
