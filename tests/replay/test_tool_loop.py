"""A whole tool loop (``llm.run`` against the offline assistant) records and replays step by step.

Recorded once against the embedded gateway; replayed with a base URL nobody listens on and another
key. Every step (the model's calls with their ids and arguments, each tool's result, the final text,
the usage) must come back the same, and the gateway must not see the replay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM, RetryPolicy
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.replay import ReplayMissError

from .test_replay import _closed_port_url

RAN: list[str] = []


def find_user(name: str) -> dict[str, Any]:
    """Find a user's id by name.

    Args:
        name: The user's full name.
    """
    RAN.append(f"find_user({name})")
    return {"user_id": 42, "name": name}


def list_orders(user_id: int) -> list[str]:
    """List the orders of a user id.

    Args:
        user_id: The id find_user returned.
    """
    RAN.append(f"list_orders({user_id})")
    return ["book", "pen"] if user_id == 42 else []


def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: The city.
    """
    RAN.append(f"get_weather({city})")
    return f"{len(city) * 4} degrees in {city}"


PROMPT = "Find the user Ada Lovelace and the weather in Paris and in Rome, then list her orders"
TOOLS = [find_user, list_orders, get_weather]


def _steps(run: Any) -> list[Any]:
    return [
        {
            "content": step.response.content,
            "finish": step.response.finish_reason,
            "tokens": [step.response.usage.input_tokens, step.response.usage.output_tokens],
            "calls": [(c.id, c.name, json.loads(c.arguments), c.result, c.error) for c in step.calls],
        }
        for step in run.steps
    ]


def _run(url: str, key: str) -> Any:
    with FlotorchLLM("offline/assistant", key, url, retry=RetryPolicy(max_retries=0)) as llm:
        return llm.run([{"role": "user", "content": PROMPT}], tools=TOOLS)


def test_a_multi_step_loop_replays_step_by_step(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path))
    RAN.clear()
    recorded = _run(gateway.url, "key-record-123456")
    ran_live, seen = list(RAN), len(gateway.requests)
    # The loop is really several steps: three calls in one turn, one call once their results are in.
    assert [[c[1] for c in s["calls"]] for s in _steps(recorded)] == [
        ["find_user", "get_weather", "get_weather"],
        ["list_orders"],
        [],
    ]
    assert len(list(tmp_path.glob("*.json"))) == 3

    monkeypatch.delenv("FLOTORCH_RECORD")
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))
    RAN.clear()
    replayed = _run(_closed_port_url(), "another-key-7890")
    assert _steps(replayed) == _steps(recorded)
    assert replayed.messages == recorded.messages and replayed.content == recorded.content
    assert ran_live == RAN, "the tools run again, with the same arguments"
    assert len(gateway.requests) == seen, "replay must not reach the gateway"


def test_a_loop_whose_tool_answers_differently_misses_the_recording(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay matches each step on the whole conversation: a changed tool result is not answered."""
    monkeypatch.setenv("FLOTORCH_RECORD", str(tmp_path))
    _run(gateway.url, "key-record-123456")
    monkeypatch.delenv("FLOTORCH_RECORD")
    monkeypatch.setenv("FLOTORCH_REPLAY", str(tmp_path))

    def find_user(name: str) -> dict[str, Any]:
        """Find a user's id by name.

        Args:
            name: The user's full name.
        """
        return {"user_id": 7, "name": name}

    with FlotorchLLM("offline/assistant", "k-2", _closed_port_url()) as llm, pytest.raises(ReplayMissError):
        llm.run([{"role": "user", "content": PROMPT}], tools=[find_user, list_orders, get_weather])
