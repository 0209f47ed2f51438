"""``offline/scripted`` scripts a whole conversation: ``{"script": {"turns": [...]}}`` answers with the
turn numbered by the assistant messages after the scripted user message (what a tool loop needs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flotorch_nb import BadRequestError, FlotorchLLM
from flotorch_nb.gateway import OfflineGateway


def _script(script: Any) -> dict[str, Any]:
    return {"role": "user", "content": json.dumps({"script": script})}


def test_each_turn_answers_in_order(gateway: OfflineGateway) -> None:
    with FlotorchLLM("offline/scripted", "test-key-turns", gateway.url) as llm:
        first = _script({"turns": [{"tool_calls": [{"name": "f", "id": "c1"}]}, {"content": "second"}]})
        reply = llm.invoke([first])
        assert [c.name for c in reply.tool_calls] == ["f"]
        tool_result = {"role": "tool", "tool_call_id": "c1", "content": "r"}
        assert llm.invoke([first, reply.assistant_message(), tool_result]).content == "second"
        onward = [first, reply.assistant_message(), tool_result, {"role": "assistant", "content": "second"}]
        with pytest.raises(BadRequestError, match=r"2 turn\(s\); this request is turn 3"):
            llm.invoke(onward)


@pytest.mark.parametrize(
    "script",
    [{"turns": []}, {"turns": [{"content": "x"}], "content": "y"}, {"turns": ["x"]}, {"turns": [{"bad": 1}]}],
)
def test_a_bad_turns_script_is_a_400(gateway: OfflineGateway, script: Any) -> None:
    with (
        FlotorchLLM("offline/scripted", "test-key-turns", gateway.url) as llm,
        pytest.raises(BadRequestError),
    ):
        llm.invoke([_script(script)])
