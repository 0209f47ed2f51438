"""The tool loop (``llm.run`` / ``llm.arun``) against the offline gateway, ``offline/scripted`` playing
the model turn by turn (``{"script": {"turns": [...]}}``), so every assertion is about the protocol.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM, Hooks, InvalidRequestError, tool
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.tools import MaxStepsError, ToolRunCancelled, ToolRunInterrupted

pytestmark = pytest.mark.anyio


def _turns(*turns: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": json.dumps({"script": {"turns": list(turns)}})}]


def _calls(*calls: tuple[str, Any], usage: tuple[int, int] = (10, 2)) -> dict[str, Any]:
    listed = [{"name": n, "arguments": a, "id": f"call_{i}"} for i, (n, a) in enumerate(calls)]
    return {"tool_calls": listed, "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}


def _answer(text: str, usage: tuple[int, int] = (20, 3)) -> dict[str, Any]:
    return {"content": text, "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}


def get_weather(city: str) -> str:
    """Current weather.

    Args:
        city: The city.
    """
    return f"18 degrees in {city}"


@pytest.fixture
def scripted(gateway: OfflineGateway) -> Any:
    seen: list[Any] = []
    client = FlotorchLLM(
        "offline/scripted", "test-key-tools", gateway.url, hooks=Hooks(after_call=[seen.append])
    )
    client.seen = seen  # type: ignore[attr-defined]
    yield client
    client.close()


def _tool_messages(gateway: OfflineGateway, request: int) -> list[dict[str, Any]]:
    return [m for m in gateway.requests[request].body["messages"] if m["role"] == "tool"]


def test_the_loop_runs_the_tool_and_answers_from_its_result(scripted: Any, gateway: OfflineGateway) -> None:
    messages = _turns(_calls(("get_weather", {"city": "Paris"})), _answer("It is 18 in Paris."))
    run = scripted.run(messages, tools=[get_weather])
    assert run.content == "It is 18 in Paris." and run.response is run.steps[-1].response
    assert [len(s.calls) for s in run.steps] == [1, 0]
    call = run.steps[0].calls[0]
    assert (call.name, json.loads(call.arguments), call.result, call.error) == (
        "get_weather",
        {"city": "Paris"},
        "18 degrees in Paris",
        None,
    )
    assert call.approved is None and call.duration_s >= 0
    # the second request carried the tool's result; .messages is the whole conversation
    assert _tool_messages(gateway, 1) == [
        {"role": "tool", "tool_call_id": "call_0", "content": "18 degrees in Paris"}
    ]
    assert [m["role"] for m in run.messages] == ["user", "assistant", "tool", "assistant"]
    assert messages == _turns(_calls(("get_weather", {"city": "Paris"})), _answer("It is 18 in Paris."))
    # usage summed over both steps; every step seen by the hooks exactly once
    assert (run.usage.input_tokens, run.usage.output_tokens, run.usage.total_tokens) == (30, 5, 35)
    assert [r.response for r in scripted.seen] == [s.response for s in run.steps]
    assert gateway.requests[0].body["tools"][0]["function"]["name"] == "get_weather"


async def test_arun_awaits_async_tools(scripted: Any) -> None:
    async def lookup(term: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"term": term, "hits": 3}

    run = await scripted.arun(_turns(_calls(("lookup", {"term": "x"})), _answer("3 hits")), tools=[lookup])
    assert run.steps[0].calls[0].result == {"term": "x", "hits": 3}
    assert run.messages[2]["content"] == '{"term": "x", "hits": 3}'  # sent back as JSON


def test_a_tool_error_and_bad_arguments_go_back_to_the_model(scripted: Any, gateway: OfflineGateway) -> None:
    def divide(a: int, b: int) -> float:
        return a / b

    messages = _turns(
        _calls(("divide", {"a": 1, "b": 0}), ("divide", {"a": "one", "b": 2}), ("nope", {})),
        _calls(("divide", {"a": 1, "b": 2})),
        _answer("0.5"),
    )
    run = scripted.run(messages, tools=[divide])
    first = run.steps[0].calls
    assert first[0].error == "ZeroDivisionError: division by zero" and first[0].result is None
    not_an_int = "a: Input should be a valid integer, unable to parse string as an integer"
    assert first[1].error == f"invalid arguments for divide: {not_an_int}"  # no pydantic URL for the model
    assert first[2].error is not None and "no tool named 'nope'" in first[2].error
    sent = _tool_messages(gateway, 1)
    assert [m["content"].split(":")[0] for m in sent] == ["Error"] * 3
    assert run.steps[1].calls[0].result == 0.5 and run.content == "0.5"


def test_calls_of_one_turn_run_concurrently(scripted: Any) -> None:
    """Each sync tool waits at a barrier for the other: run one after the other, the first would break it."""
    barrier = threading.Barrier(2, timeout=10)

    def left(n: int) -> int:
        barrier.wait()
        return n

    def right(n: int) -> int:
        barrier.wait()
        return -n

    run = scripted.run(
        _turns(_calls(("left", {"n": 1}), ("right", {"n": 2})), _answer("done")), tools=[left, right]
    )
    assert [(c.result, c.error) for c in run.steps[0].calls] == [(1, None), (-2, None)]


async def test_async_calls_of_one_turn_run_concurrently(scripted: Any) -> None:
    arrived: list[str] = []
    both = asyncio.Event()

    async def meet(who: str) -> str:
        arrived.append(who)
        if len(arrived) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 10)
        return who

    run = await scripted.arun(
        _turns(_calls(("meet", {"who": "a"}), ("meet", {"who": "b"})), _answer("ok")), tools=[meet]
    )
    assert [c.result for c in run.steps[0].calls] == ["a", "b"]


def test_parallel_false_runs_them_in_order(scripted: Any) -> None:
    order: list[int] = []

    def note(n: int) -> int:
        order.append(n)
        return n

    calls = _calls(*[("note", {"n": n}) for n in range(5)])
    scripted.run(_turns(calls, _answer("ok")), tools=[note], parallel=False)
    assert order == [0, 1, 2, 3, 4]


def test_a_denied_call_never_runs_and_the_reason_goes_back(scripted: Any, gateway: OfflineGateway) -> None:
    sent: list[str] = []

    @tool(requires_approval=True)
    def send_mail(to: str) -> str:
        sent.append(to)
        return "sent"

    asked: list[str] = []

    def approve(call: Any) -> bool | str:
        asked.append(call.name)
        return call.name == "get_weather" or "not today"

    messages = _turns(
        _calls(("send_mail", {"to": "a@b.c"}), ("get_weather", {"city": "Oslo"})), _answer("ok")
    )
    run = scripted.run(messages, tools=[send_mail, get_weather], approve=approve)
    mail, weather = run.steps[0].calls
    assert sent == [] and sorted(asked) == ["get_weather", "send_mail"]
    assert (mail.approved, mail.denied, mail.error) == (False, True, "denied: not today")
    assert (weather.approved, weather.result) == (True, "18 degrees in Oslo")
    assert _tool_messages(gateway, 1)[0]["content"] == "Error: denied: not today"
    # a tool that requires approval, with nobody to approve it: denied, never run
    gateway.requests.clear()
    run = scripted.run(_turns(_calls(("send_mail", {"to": "x@y.z"})), _answer("ok")), tools=[send_mail])
    assert sent == [] and run.steps[0].calls[0].denied


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"approve": "get_weather"}, "set of tool names"),
        ({"approve": {1}}, "names tools by their names"),
        ({"max_steps": 0}, "max_steps"),
        ({"parallel": "yes"}, "parallel"),
    ],
)
def test_bad_loop_options_are_refused_before_any_io(
    scripted: Any, gateway: OfflineGateway, options: dict[str, Any], says: str
) -> None:
    with pytest.raises(InvalidRequestError, match=says):
        scripted.run(_turns(_answer("x")), tools=[get_weather], **options)
    with pytest.raises(InvalidRequestError, match="needs tools"):
        scripted.run(_turns(_answer("x")), tools=[])
    assert gateway.requests == []


def test_max_steps_ends_with_a_typed_error_carrying_the_partial_run(scripted: Any) -> None:
    again = _calls(("get_weather", {"city": "Rome"}))
    with pytest.raises(MaxStepsError, match="max_steps=2") as caught:
        scripted.run(_turns(again, again, again), tools=[get_weather], max_steps=2)
    run = caught.value.run
    assert len(run.steps) == 2 and run.usage.total_tokens == 24
    assert run.messages[-1]["role"] == "tool"  # ready to be continued
    assert len(scripted.seen) == 2
    copied = pickle.loads(pickle.dumps(caught.value))
    assert type(copied) is MaxStepsError and len(copied.run.steps) == 2


async def test_cancel_keeps_the_finished_steps(scripted: Any) -> None:
    started = asyncio.Event()

    async def slow(n: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return n

    messages = _turns(_calls(("get_weather", {"city": "Oslo"})), _calls(("slow", {"n": 1})), _answer("x"))
    task = asyncio.create_task(scripted.arun(messages, tools=[get_weather, slow]))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(ToolRunCancelled) as caught:
        await task
    run = caught.value.run
    assert len(run.steps) == 1 and run.steps[0].calls[0].result == "18 degrees in Oslo"
    assert run.messages[-1]["role"] == "tool"  # the unfinished turn was cut off, so it can be resent


def test_an_interrupted_run_keeps_the_finished_steps(scripted: Any) -> None:
    """Ctrl-C (a kernel interrupt) while the second turn's tool runs: the first step is kept."""
    import _thread

    async def stuck(n: int) -> int:
        _thread.interrupt_main()  # KeyboardInterrupt in the thread waiting in run()
        await asyncio.sleep(60)
        return n

    messages = _turns(_calls(("get_weather", {"city": "Oslo"})), _calls(("stuck", {"n": 1})), _answer("x"))
    with pytest.raises(ToolRunInterrupted) as caught:
        scripted.run(messages, tools=[get_weather, stuck])
    assert isinstance(caught.value, KeyboardInterrupt)
    assert [c.result for s in caught.value.run.steps for c in s.calls] == ["18 degrees in Oslo"]
