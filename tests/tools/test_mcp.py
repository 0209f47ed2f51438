"""MCP servers as tools: a real server process built with the SDK (tests/support/mcp_server.py), over
stdio and streamable HTTP, listed by ``mcp_tools`` and called through ``llm.run`` against the offline
gateway, ``offline/scripted`` playing the model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flotorch_nb import FlotorchError, FlotorchLLM, InvalidRequestError
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.mcp import MCPServerError, McpTools, amcp_tools, mcp_tools

SERVER = str(Path(__file__).resolve().parents[1] / "support" / "mcp_server.py")
#: ``-P``: the script's folder (tests/support, which has an ``html`` module) stays off ``sys.path``.
COMMAND = (sys.executable, "-P", SERVER)


def _turns(*turns: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": json.dumps({"script": {"turns": list(turns)}})}]


@pytest.fixture(scope="module")
def server_tools() -> McpTools:
    return mcp_tools(*COMMAND, timeout=20)


def test_listing_gives_the_servers_tools_with_their_input_schema(server_tools: McpTools) -> None:
    by_name = {t.name: t.to_dict()["function"] for t in server_tools.tools}
    assert sorted(by_name) == ["add", "explode"]
    assert by_name["add"]["description"] == "Add two whole numbers."
    assert by_name["add"]["parameters"]["required"] == ["a", "b"]
    assert by_name["add"]["parameters"]["properties"]["a"]["type"] == "integer"


def test_invoke_sends_the_servers_tools_beside_a_dict_and_a_function(
    server_tools: McpTools, gateway: OfflineGateway
) -> None:
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    plain = {"type": "function", "function": {"name": "plain", "parameters": {"type": "object"}}}
    with FlotorchLLM("offline/scripted", "test-key-mcp", gateway.url) as llm:
        llm.invoke(_turns({"content": "fine"}), tools=[plain, server_tools, shout])
        llm.invoke(_turns({"content": "fine"}), tools=[server_tools])  # no function to set it off
    sent = [[t["function"]["name"] for t in r.body["tools"]] for r in gateway.requests]
    assert sent == [["plain", "add", "explode", "shout"], ["add", "explode"]]


def test_the_loop_calls_both_tools_and_the_error_goes_back_to_the_model(
    server_tools: McpTools, gateway: OfflineGateway
) -> None:
    calls = [
        {"name": "add", "arguments": {"a": 2, "b": 40}, "id": "c_add"},
        {"name": "explode", "arguments": {"reason": "boom"}, "id": "c_boom"},
    ]
    messages = _turns({"tool_calls": calls}, {"content": "2 + 40 is 42; explode failed."})
    with FlotorchLLM("offline/scripted", "test-key-mcp", gateway.url) as llm:
        run = llm.run(messages, tools=[server_tools])
    assert run.content == "2 + 40 is 42; explode failed."
    sent = gateway.requests[0].body["tools"]
    assert sorted(t["function"]["name"] for t in sent) == ["add", "explode"]
    results = {m["tool_call_id"]: m["content"] for m in run.messages if m["role"] == "tool"}
    assert results["c_add"] == "2 + 40 = 42"
    assert results["c_boom"].startswith("Error: MCPToolError:")
    assert "explode" in results["c_boom"]
    add, boom = run.calls
    assert (add.result, add.error) == ("2 + 40 = 42", None)
    assert boom.error is not None and boom.result is None
    # What the model was sent on its second turn: both results.
    second = [m for m in gateway.requests[1].body["messages"] if m["role"] == "tool"]
    assert {m["tool_call_id"]: m["content"] for m in second} == results


def test_approval_applies_to_mcp_tools(server_tools: McpTools, gateway: OfflineGateway) -> None:
    messages = _turns(
        {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}, "id": "c1"}]}, {"content": "ok"}
    )
    with FlotorchLLM("offline/scripted", "test-key-mcp", gateway.url) as llm:
        run = llm.run(messages, tools=[server_tools], approve=lambda call: "not today")
    (call,) = run.calls
    assert call.denied and call.result is None and call.error == "denied: not today"


@pytest.mark.anyio
async def test_amcp_tools_lists_from_async_code() -> None:
    listed = await amcp_tools(*COMMAND, timeout=20)
    assert [t.name for t in listed.tools] == ["add", "explode"]


@pytest.mark.parametrize(("flag", "said"), [("--exit", "refusing to start"), ("--hang", "within 2s")])
def test_a_server_that_dies_or_hangs_is_a_typed_error_within_the_timeout(flag: str, said: str) -> None:
    started = time.monotonic()
    with pytest.raises(MCPServerError, match=said) as caught:
        mcp_tools(*COMMAND, flag, timeout=2)
    assert SERVER in str(caught.value)  # names the command
    assert isinstance(caught.value, FlotorchError)
    # The timeout, plus the SDK's grace period for stopping the process (generous: no flaky timing).
    assert time.monotonic() - started < 2 + 10


def test_a_command_that_does_not_exist_is_a_typed_error() -> None:
    with pytest.raises(MCPServerError, match="no-such-mcp-server-command"):
        mcp_tools("no-such-mcp-server-command", timeout=5)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"command": "python", "url": "http://127.0.0.1:1/mcp"}, {"command": "python", "timeout": 0}],
)
def test_bad_arguments_are_refused_before_any_process(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        mcp_tools(**kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [*COMMAND, "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def test_streamable_http_lists_and_calls(http_server: str, gateway: OfflineGateway) -> None:
    listed = mcp_tools(url=http_server, timeout=20)
    assert [t.name for t in listed.tools] == ["add", "explode"]
    messages = _turns(
        {"tool_calls": [{"name": "add", "arguments": {"a": 3, "b": 4}, "id": "c1"}]}, {"content": "7"}
    )
    with FlotorchLLM("offline/scripted", "test-key-mcp", gateway.url) as llm:
        run = llm.run(messages, tools=[listed])
    assert run.calls[0].result == "3 + 4 = 7"


def test_an_http_server_that_is_not_there_is_a_typed_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/mcp"
    with pytest.raises(MCPServerError, match=url):
        mcp_tools(url=url, timeout=5)
