"""Budgets as gates: the worst-case estimate, and the reserve / wait / refuse / settle rule under load.

The rule lives in ``_budget.Budget`` and is checked here through ``_admission.admit`` / ``aadmit`` /
``settle`` from many threads and tasks at once, with no network: with an output cap the limit is never
passed; a call that does not fit only because of calls in flight waits and is answered; only a call
that cannot fit even with nothing in flight is refused. The estimate is checked against the offline
gateway's own count over varied prompts, tools and schemas (finding 1 of issue 13: tools and
``response_format`` are billed as prompt tokens).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from decimal import Decimal
from typing import Any

import pytest

from flotorch_nb import BudgetExceededError, FlotorchLLM
from flotorch_nb._admission import UNTIL_SETTLED, Spent, Ticket, aadmit, admit, settle
from flotorch_nb._pipeline._hooks import UNCAPPED_OUTPUT_TOKENS, CallRequest, CallResult, estimate_tokens
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.pricing import PriceTable
from flotorch_nb.spending import MoneyBudget, TokenBudget
from tests.support.client import KEY

pytestmark = pytest.mark.anyio
PROFILE = [{"role": "user", "content": "Fill in the profile."}]


def _request(text: object = "Say hello.", model: str = "m", **params: Any) -> CallRequest:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **params}
    return CallRequest(model, body, False, estimate_tokens(body))


def _spent(request: CallRequest, tokens: int) -> Spent:
    return Spent(request, tokens=tokens, known=True)


def _finish(budget: TokenBudget | MoneyBudget, request: CallRequest, tokens: int) -> None:
    """What the client's ``after_call`` hook tells the budget once the call has ended (``tokens``: at
    least the prompt estimate, the rest estimated from the characters of answer received)."""
    answer = 4 * (tokens - request.prompt_tokens)
    result = CallResult(request, "stopped", None, None, 0.0, "live", partial_chars=answer)
    assert result.total_tokens == tokens
    budget.after_call(result)


# -- the estimate -------------------------------------------------------------------------------------
def test_the_worst_case_is_the_prompt_plus_the_cap_or_the_uncapped_estimate() -> None:
    capped = _request(max_tokens=40)
    assert (capped.prompt_tokens, capped.output_tokens, capped.capped) == (8, 40, True)
    assert capped.estimated_tokens == 48
    uncapped = _request()
    assert (uncapped.output_tokens, uncapped.capped) == (UNCAPPED_OUTPUT_TOKENS, False)
    assert _request(max_completion_tokens=30, max_tokens=10).output_tokens == 30  # the larger cap
    assert _request(max_tokens=10, n=3).output_tokens == 30  # n answers, each up to the cap
    assert _request(n=2).output_tokens == 2 * UNCAPPED_OUTPUT_TOKENS
    parts = [{"type": "text", "text": "Say hello."}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert _request(parts).prompt_tokens == uncapped.prompt_tokens  # only text parts are text
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert _request(tools=[tool]).prompt_tokens > uncapped.prompt_tokens
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert _request(response_format=schema).prompt_tokens > uncapped.prompt_tokens
    assert _request(response_format={"type": "text"}).prompt_tokens == uncapped.prompt_tokens


_WORDS = ["a", "tide", "tokenization", "x" * 37, "naïve", "東京", "🙂", "3.14", "--", '{"k": [1]}', "_id"]


def _prompt(rng: random.Random) -> str:
    return rng.choice([" ", "", "\n", "  "]).join(rng.choice(_WORDS) for _ in range(rng.randint(1, 60)))


def _schema(rng: random.Random, fields: int) -> dict[str, Any]:
    kinds = ["string", "integer", "number", "boolean"]
    properties = {
        f"field_{i}_{rng.choice(_WORDS[:4])}": {"type": rng.choice(kinds), "description": _prompt(rng)[:80]}
        for i in range(fields)
    }
    return {"type": "object", "properties": properties, "required": sorted(properties)[: fields // 2]}


def _body(rng: random.Random) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": _prompt(rng)}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "system", "content": _prompt(rng)})
    if rng.random() < 0.3:
        parts = [{"type": "text", "text": _prompt(rng)} for _ in range(rng.randint(1, 3))]
        messages.append({"role": "user", "content": parts})
    if rng.random() < 0.2:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "look_up", "arguments": '{"q": "x"}'},
        }
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": _prompt(rng)},
            {"role": "user", "content": _prompt(rng)},
        ]
    body: dict[str, Any] = {"messages": messages, "max_tokens": rng.randint(5, 60)}
    if rng.random() < 0.4:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": f"tool_{i}",
                    "description": _prompt(rng)[:60],
                    "parameters": _schema(rng, 5),
                },
            }
            for i in range(rng.randint(1, 3))
        ]
    if rng.random() < 0.4:
        schema = {"name": "answer", "schema": _schema(rng, rng.randint(1, 8))}
        body["response_format"] = rng.choice(
            [{"type": "json_object"}, {"type": "json_schema", "json_schema": schema}]
        )
    return body


@pytest.mark.parametrize("model", ["offline/echo", "offline/assistant"])
async def test_the_prompt_estimate_is_never_below_the_offline_gateways_count(
    gateway: OfflineGateway, model: str
) -> None:
    rng = random.Random(13)
    seen: list[CallRequest] = []
    async with FlotorchLLM(model, KEY, gateway.url) as llm:
        llm.hooks.before_request.append(seen.append)
        for _ in range(60):
            body = _body(rng)
            if model == "offline/assistant" and "tools" in body and "response_format" in body:
                del body["response_format"]  # the assistant answers one or the other
            params = {k: v for k, v in body.items() if k not in ("messages", "tools", "response_format")}
            response = await llm.ainvoke(
                body["messages"],
                tools=body.get("tools"),
                response_format=body.get("response_format"),
                **params,
            )
            request = seen[-1]
            assert response.usage is not None
            assert request.prompt_tokens >= response.usage.input_tokens, json.dumps(body)[:300]
            if not response.tool_calls:  # a tool call's name is not capped by the offline gateway
                assert response.usage.output_tokens <= request.output_tokens


# -- finding 1: a money budget counts tools ------------------------------------------------------------
async def test_a_money_budget_reserves_what_a_call_with_a_60_field_tool_spends(
    gateway: OfflineGateway,
) -> None:
    tool = {
        "type": "function",
        "function": {"name": "record_profile", "parameters": _schema(random.Random(1), 60)},
    }
    table = PriceTable()
    table.set("offline/echo", 100, 100)
    async with FlotorchLLM("offline/echo", KEY, gateway.url) as llm:
        small = MoneyBudget("$0.05", table).attach(llm.hooks)
        with pytest.raises(
            BudgetExceededError, match=r"could cost up to \$0\.\d+ \(\d{1,3}(,\d{3})* tokens for its prompt"
        ):
            await llm.ainvoke(PROFILE, tools=[tool], max_tokens=20)
        assert len(gateway.requests) == 0  # the prompt alone is past $0.05: refused before sending
        small.detach(llm.hooks)
        budget = MoneyBudget("$1", table).attach(llm.hooks)
        reserved: list[Decimal] = []
        llm.hooks.before_request.append(lambda r: reserved.append(budget.most_a_call_costs(r) or Decimal(0)))
        response = await llm.ainvoke(PROFILE, tools=[tool], max_tokens=20)
        assert response.usage is not None and response.usage.input_tokens > 1_000  # the tool is billed
        assert 0 < budget.spent <= reserved[0]


# -- the rule, without a network -----------------------------------------------------------------------
def test_a_call_that_fits_only_without_calls_in_flight_waits_and_one_that_never_fits_is_refused() -> None:
    budget = TokenBudget(100)
    first = _request(max_tokens=50)  # 58
    ticket = budget.admit(first)
    assert budget.reserved == 58 and budget.in_flight == 1
    assert budget.admit(_request(max_tokens=50)) == UNTIL_SETTLED  # 58 + 58 > 100, but 58 alone fits
    with pytest.raises(
        BudgetExceededError, match=r"may use up to 108 \(8 tokens for its prompt, 100 for its answer"
    ):
        budget.admit(_request(max_tokens=100))  # 108 > 100 even with nothing in flight
    settle(((budget, ticket),), _spent(first, 20))  # type: ignore[arg-type]
    assert (budget.spent, budget.reserved) == (20, 0)
    second = budget.admit(_request(max_tokens=50))  # 20 + 58 <= 100
    assert not isinstance(second, float)
    _finish(budget, first, 20)  # recorded: counted once, not twice
    assert budget.spent == 20
    budget.settle(second, None)  # never sent: its reservation is simply handed back
    assert (budget.spent, budget.reserved, budget.in_flight) == (20, 0, 0)
    budget.set_limit(20)
    with pytest.raises(BudgetExceededError, match=r"token budget spent: 20 of 20 tokens"):
        budget.admit(_request(max_tokens=1))
    budget.set_limit(None)
    ticket = budget.admit(_request())
    assert isinstance(ticket, Ticket)
    budget.settle(ticket, _spent(first, 5))  # no limit: nothing reserved nor counted


@pytest.mark.parametrize("workers", [1, 16, 64])
def test_threads_never_take_a_capped_token_budget_past_its_limit(
    workers: int,
) -> None:
    """Many threads admit, 'spend' up to their cap, and settle: the books never pass the limit."""
    limit = 2_000
    budget = TokenBudget(limit)
    rng = random.Random(workers)
    jobs = [
        (_request("word " * rng.randint(1, 30), max_tokens=rng.randint(10, 80)), rng.random())
        for _ in range(200)
    ]
    lock = threading.Lock()
    answered: list[int] = []
    refused: list[BudgetExceededError] = []
    peaks: list[int] = []

    def run(request: CallRequest, share: float) -> None:
        try:
            admitted = admit([budget], request)
        except BudgetExceededError as error:
            with lock:
                refused.append(error)
            return
        with lock:
            peaks.append(budget.spent + budget.reserved)
        tokens = request.prompt_tokens + int(request.output_tokens * share)  # never past its cap
        settle(admitted, _spent(request, tokens))
        _finish(budget, request, tokens)
        with lock:
            answered.append(tokens)

    def worker(first: int) -> None:
        for j in range(first, len(jobs), workers):
            run(*jobs[j])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answered) + len(refused) == len(jobs)
    assert budget.spent == sum(answered) <= limit
    assert max(peaks) <= limit  # what is spent plus what is held never passes the limit
    assert (budget.reserved, budget.in_flight) == (0, 0)
    # Refused only when it could not fit even with nothing in flight.
    assert all("may use up to" in str(e) or "spent:" in str(e) for e in refused)
    assert answered and refused


@pytest.mark.parametrize("tasks", [1, 16, 64])
async def test_tasks_wait_for_each_other_under_a_money_budget_that_affords_them_all(tasks: int) -> None:
    """Finding 3 of issue 13 at the gate: a budget that can afford every call answers every call,
    at any concurrency; calls in flight only make the others wait."""
    table = PriceTable()
    table.set("m", 1000, 1000)
    budget = MoneyBudget("$1", table)
    requests = [_request(f"item {i}", max_tokens=100) for i in range(40)]
    queue = list(requests)
    spent = Decimal(0)

    async def worker() -> None:
        nonlocal spent
        while queue:
            request = queue.pop()
            admitted = await aadmit([budget], request)
            assert budget.spent + budget.reserved <= budget.limit  # type: ignore[operator]
            await asyncio.sleep(0)
            tokens = request.prompt_tokens + 4  # a short answer, well under the cap
            settle(admitted, _spent(request, tokens))
            _finish(budget, request, tokens)
            spent += Decimal(tokens) / 1000

    await asyncio.gather(*(worker() for _ in range(tasks)))
    assert budget.spent == spent <= Decimal(1)
    assert budget.in_flight == 0


def test_a_waiting_call_in_another_thread_wakes_when_the_call_in_flight_settles() -> None:
    budget = TokenBudget(100)
    first = _request(max_tokens=50)
    held = admit([budget], first)
    done = threading.Event()

    def second() -> None:
        settle(admit([budget], _request(max_tokens=50)), None)
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.2)  # waiting, not refused
    settle(held, _spent(first, 10))
    assert done.wait(5)
    thread.join()


def test_an_unpriced_model_is_refused_and_a_settle_that_cannot_be_priced_counts_the_reservation() -> None:
    table = PriceTable()
    budget = MoneyBudget("$1", table)
    with pytest.raises(BudgetExceededError, match="'m' has no price"):
        budget.admit(_request())
    table.set("m", 1000, 1000)
    request = _request(max_tokens=10)
    ticket = budget.admit(request)
    table.remove("m")  # the price went away while the call was in flight
    budget.settle(ticket, _spent(request, 3))  # type: ignore[arg-type]
    assert budget.spent == Decimal(request.estimated_tokens) / 1000
