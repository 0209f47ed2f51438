"""Approval: the pure policy of ``approve=`` (True, a set of names, a function, a reason), the terminal
asker, and the loop's promise that a denied call never runs, against ``offline/scripted``."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM, ToolCall, tool
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.pricing import default_prices, reset_default_prices
from flotorch_nb.tools import _approval
from flotorch_nb.tools._approval import ASK, ask_stdin_now, decision, verdict_of

pytestmark = pytest.mark.anyio


def _turns(*turns: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": json.dumps({"script": {"turns": list(turns)}})}]


def _calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    listed = [{"name": n, "arguments": a, "id": f"call_{i}"} for i, (n, a) in enumerate(calls)]
    return {"tool_calls": listed, "usage": {"prompt_tokens": 10, "completion_tokens": 2}}


def _answer(text: str) -> dict[str, Any]:
    return {"content": text, "usage": {"prompt_tokens": 20, "completion_tokens": 3}}


@pytest.fixture
def scripted(gateway: OfflineGateway) -> Iterator[FlotorchLLM]:
    with FlotorchLLM("offline/scripted", "test-key-approval", gateway.url) as client:
        yield client


@pytest.mark.parametrize(
    ("approve", "name", "requires", "expected"),
    [
        (None, "a", False, None),
        (False, "a", False, None),
        (True, "a", False, ASK),
        ({"a"}, "a", False, ASK),
        (frozenset({"a"}), "b", False, None),
        (["a"], "b", True, ASK),  # a tool that requires approval is asked for too
        (None, "b", True, "b requires approval and no approve= was given"),
        (lambda call: True, "a", False, "call"),
    ],
)
def test_the_policy(approve: Any, name: str, requires: bool, expected: Any) -> None:
    assert decision(approve, name, requires) == expected


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [(True, True), (False, False), (None, False), ("", False), ("  ", False), ("too costly", "too costly")],
)
def test_an_answer_becomes_a_verdict(answer: Any, verdict: Any) -> None:
    assert verdict_of(answer) == verdict


@pytest.mark.parametrize(
    ("typed", "verdict"),
    [("y", True), ("YES", True), ("n", False), ("", False), ("no", False), ("not now", "not now")],
)
def test_the_terminal_prompt_reads_y_n_or_a_reason(typed: str, verdict: Any) -> None:
    asked: list[str] = []

    def read(prompt: str) -> str:
        asked.append(prompt)
        return typed

    assert ask_stdin_now(ToolCall("c1", "send_mail", '{"to": "a@b.c"}'), read) == verdict
    assert asked == ['Run send_mail {"to": "a@b.c"}? [y/n, or a reason to deny] ']


def test_the_terminal_prompt_shows_control_characters_of_the_call_as_symbols() -> None:
    """The model writes the call: its escapes must not hide or rewrite what the person approves."""
    asked: list[str] = []

    def read(prompt: str) -> str:
        asked.append(prompt)
        return "n"

    call = ToolCall("c1", "rm\x1b[8m", '{"path": "/\x1b[2K\rsafe.txt"}')  # \r: whitespace, one space
    assert ask_stdin_now(call, read) is False
    assert asked == ['Run rm␛[8m {"path": "/␛[2K safe.txt"}? [y/n, or a reason to deny] ']


def test_no_stdin_denies_and_says_why() -> None:
    def read(prompt: str) -> str:
        raise EOFError

    verdict = ask_stdin_now(ToolCall("c1", "f", "{}"), read)
    assert isinstance(verdict, str) and "nobody could be asked" in verdict


def test_approve_true_asks_on_stdin_in_a_terminal(
    scripted: FlotorchLLM, gateway: OfflineGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def send_mail(to: str) -> str:
        ran.append(to)
        return "sent"

    answers = iter(["y", "the address looks wrong"])
    prompts: list[str] = []

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(builtins, "input", fake_input)
    messages = _turns(
        _calls(("send_mail", {"to": "a@b.c"})), _calls(("send_mail", {"to": "x@y"})), _answer("one sent")
    )
    run = scripted.run(messages, tools=[send_mail], approve=True)
    first, second = (step.calls[0] for step in run.steps[:2])
    assert ran == ["a@b.c"]  # the denied call never ran
    assert (first.approved, first.result) == (True, "sent")
    assert (second.approved, second.error) == (False, "denied: the address looks wrong")
    sent = [m for m in gateway.requests[2].body["messages"] if m["role"] == "tool"]
    assert sent[-1]["content"] == "Error: denied: the address looks wrong"  # the model hears the reason
    assert len(prompts) == 2 and prompts[0].startswith("Run send_mail")


async def test_a_set_asks_only_for_those_tools(scripted: FlotorchLLM) -> None:
    asked: list[str] = []

    async def asker(call: ToolCall) -> bool | str:
        asked.append(call.name)
        return False

    ran: list[str] = []

    def lookup(q: str) -> str:
        ran.append(q)
        return "found"

    @tool(requires_approval=True)
    def delete(path: str) -> str:
        ran.append(path)
        return "deleted"

    messages = _turns(
        _calls(("lookup", {"q": "x"}), ("delete", {"path": "/tmp/a"}), ("pay", {"amount": 3})), _answer("ok")
    )

    def pay(amount: int) -> str:
        ran.append(str(amount))
        return "paid"

    run = await _approval_run(scripted, messages, [lookup, delete, pay], {"pay"}, asker)
    assert sorted(asked) == ["delete", "pay"] and ran == ["x"]
    look, rm, paid = run.steps[0].calls
    assert look.approved is None and look.result == "found"
    assert rm.denied and paid.denied and paid.error == "denied: the user denied this call"


async def _approval_run(client: FlotorchLLM, messages: Any, tools: Any, approve: Any, asker: Any) -> Any:
    from flotorch_nb.tools import arun

    return await arun(client, messages, tools, approve=approve, ask=asker)


async def test_an_async_approve_function_and_its_reason(scripted: FlotorchLLM) -> None:
    ran: list[int] = []

    def charge(amount: int) -> str:
        ran.append(amount)
        return "charged"

    async def approve(call: ToolCall) -> bool | str:
        return json.loads(call.arguments)["amount"] < 100 or "over the limit"

    messages = _turns(_calls(("charge", {"amount": 5}), ("charge", {"amount": 500})), _answer("ok"))
    run = await scripted.arun(messages, tools=[charge], approve=approve)
    small, big = run.steps[0].calls
    assert ran == [5] and small.approved is True and big.error == "denied: over the limit"


def test_the_run_carries_its_cost_summed_over_steps(scripted: FlotorchLLM) -> None:
    def f(x: int) -> int:
        return x

    reset_default_prices()
    try:
        messages = _turns(_calls(("f", {"x": 1})), _answer("1"))
        assert scripted.run(messages, tools=[f]).cost is None  # no price table in use
        default_prices().set("offline/scripted", 1, 2)  # dollars per million tokens
        run = scripted.run(messages, tools=[f])
        # step 1: 10 in, 2 out; step 2: 20 in, 3 out -> 30 * $1/M + 5 * $2/M
        assert run.cost == Decimal(30) / 1_000_000 + Decimal(10) / 1_000_000
        assert [s.cost for s in run.steps] == [Decimal(14) / 1_000_000, Decimal(26) / 1_000_000]
    finally:
        reset_default_prices()


def test_approve_needs_a_person_uses_stdin_outside_a_kernel() -> None:
    assert _approval.default_asker() is _approval.ask_stdin
