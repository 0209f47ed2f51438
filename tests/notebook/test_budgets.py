"""The session's budgets hold under any concurrency, and its ledger costs the same after 20,000 calls.

Issue 13, findings 2-4, through real clients, batches and ``--map`` on the offline gateway: a token
budget of 300 is never passed by a 40-prompt batch with a cap (it spent 1,071); a money budget that
can afford every item answers every item at any concurrency (9 of 40 were answered); and what the
README promises, measured at concurrency 1, 16 and 64 for tokens and for money: with a cap the limit
is never passed, without one it is passed by at most what was in flight when it ran out (the excess
over their reservations of the calls in flight at the last admission; nothing is admitted after it).
"""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal
from typing import Any, cast

import pytest

from flotorch_nb import BudgetExceededError, FlotorchLLM
from flotorch_nb._admission import Spent, Ticket
from flotorch_nb._pipeline._hooks import CallRequest, CallResult, estimate_tokens
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook.ledger import Ledger, LedgerEntry, Totals
from flotorch_nb.notebook.session import Session, get_session
from flotorch_nb.pricing import PriceTable, default_prices
from flotorch_nb.spending import MoneyBudget
from tests.support.client import KEY
from tests.support.shell import Shell

CONCURRENCY = [1, 16, 64]
PROMPTS = [f"Tell me one fact about the number {i}." for i in range(40)]


def _session_client(gateway: OfflineGateway, model: str = "offline/assistant") -> tuple[Session, FlotorchLLM]:
    session = get_session()
    session.configure(model_id=model, base_url=gateway.url, api_key=KEY)
    return session, session.client()


def _fits_no_more(spent: Any, limit: Any, worst: Any) -> bool:
    """Every refusal was right: not even the smallest refused item could fit what was left."""
    return spent + worst > limit


# -- finding 2: a token budget and a batch -----------------------------------------------------------
@pytest.mark.parametrize("concurrency", [None, *CONCURRENCY])
def test_a_token_budget_of_300_is_never_passed_by_a_batch_with_a_cap(
    gateway: OfflineGateway, concurrency: int | None
) -> None:
    session, llm = _session_client(gateway)
    session.set_budget(300)
    options: dict[str, Any] = (
        {} if concurrency is None else {"concurrency": concurrency}
    )  # None: the default (16)
    result = llm.batch(PROMPTS, max_tokens=20, progress=False, **options)
    assert session.spent_tokens <= 300
    assert sum(cast(Any, i.answer).usage[2] for i in result.ok) == session.spent_tokens
    assert 0 < len(result.ok) < 40
    assert all(isinstance(i.error, BudgetExceededError) for i in result.errors)
    worst = min(
        estimate_tokens({"messages": [{"role": "user", "content": p}], "max_tokens": 20}) for p in PROMPTS
    )
    assert _fits_no_more(session.spent_tokens, 300, worst)


def test_a_token_budget_of_300_is_never_passed_by_a_map_cell(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["nums"] = list(range(40))
    shell.line("budget 300")
    result = shell.cell("--map nums --max-tokens 20", "Tell me one fact about the number {item}.")
    assert get_session().spent_tokens <= 300
    assert 0 < len(result.ok) < 40


# -- finding 3: a money budget that can afford every item --------------------------------------------
@pytest.mark.parametrize("concurrency", [None, *CONCURRENCY])
def test_a_money_budget_that_affords_every_item_answers_every_item(
    gateway: OfflineGateway, concurrency: int | None
) -> None:
    table = PriceTable()
    table.set("offline/echo", 1000, 1000)
    options: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
    with FlotorchLLM("offline/echo", KEY, gateway.url) as llm:
        budget = MoneyBudget("$1", table).attach(llm.hooks)
        # Each item may cost up to $0.11 (its prompt and 100 tokens at $0.001): 9 fit at once.
        result = llm.batch([f"item {i}" for i in range(40)], max_tokens=100, progress=False, **options)
    assert len(result.ok) == 40, result.errors[:1]
    assert budget.spent <= Decimal(1)
    assert budget.reserved == 0 and budget.in_flight == 0


def test_the_session_money_budget_answers_every_item_it_can_afford(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["items"] = [f"item {i}" for i in range(40)]
    shell.line("price offline/echo 1000 1000")
    shell.line("budget $1")
    result = shell.cell("--map items -m offline/echo --max-tokens 100", "{item}")
    assert len(result.ok) == 40
    assert get_session().spent_money <= Decimal(1)


# -- the guarantee, measured ------------------------------------------------------------------------
class _Held(Ticket):
    __slots__ = ("inner", "request", "spent")

    def __init__(self, inner: Ticket, request: CallRequest) -> None:
        self.inner, self.request = inner, request
        self.spent: Spent | None = None


class Watched:
    """The session's ledger as the client's gate, watched: which attempts were in flight at each
    admission (the last one's are those in flight when the budget ran out), and what each spent."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        self._in_flight: set[_Held] = set()
        self.at_last_admission: set[_Held] = set()

    def admit(self, request: CallRequest) -> Ticket | float:
        with self._lock:
            answer = self.ledger.admit(request)
            if not isinstance(answer, Ticket):
                return answer
            held = _Held(answer, request)
            self._in_flight.add(held)
            self.at_last_admission = set(self._in_flight)
            return held

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        assert isinstance(ticket, _Held)
        with self._lock:
            self.ledger.settle(ticket.inner, spent)
            ticket.spent = spent
            self._in_flight.discard(ticket)


def _long_prompts(seed: int) -> list[str]:
    """Prompts the echo model repeats: without a cap, every answer passes the 256 tokens reserved."""
    rng = random.Random(seed)
    return [" ".join(f"w{j}" for j in range(rng.randint(280, 400))) for _ in range(60)]


@pytest.mark.parametrize("capped", [True, False], ids=["cap", "no-cap"])
@pytest.mark.parametrize("unit", ["tokens", "money"])
@pytest.mark.parametrize("concurrency", CONCURRENCY)
def test_the_budget_guarantee_at_any_concurrency(
    gateway: OfflineGateway, concurrency: int, unit: str, capped: bool
) -> None:
    """With a cap: never passed. Without: passed by at most what the calls in flight when it ran out
    spent beyond what they reserved (and so by at most what they spent)."""
    session, llm = _session_client(gateway, "offline/echo")
    price = default_prices().set("offline/echo", 1000, 1000)  # $0.001 a token
    limit: Any = 6_000
    if unit == "money":
        limit = Decimal(6)
        session.set_money_budget(limit)
    else:
        session.set_budget(limit)
    watched = Watched(session.ledger)
    llm.hooks.gates[:] = [cast(Any, watched)]
    params: dict[str, Any] = {"max_tokens": 300} if capped else {}
    result = llm.batch(_long_prompts(concurrency), concurrency=concurrency, progress=False, **params)
    spent = session.spent_money if unit == "money" else session.spent_tokens

    def worst(held: _Held) -> Any:
        request = held.request
        return (
            price.cost(request.prompt_tokens, request.output_tokens)
            if unit == "money"
            else request.estimated_tokens
        )

    def actual(held: _Held) -> Any:
        usage = held.spent.response.usage if held.spent and held.spent.response else None
        assert usage is not None
        return price.cost(usage.input_tokens, usage.output_tokens) if unit == "money" else usage.total_tokens

    assert result.ok and result.errors  # the budget ran out part way
    assert all(isinstance(i.error, BudgetExceededError) for i in result.errors)
    last = watched.at_last_admission
    excess = sum((max(actual(h) - worst(h), 0 * limit) for h in last), 0 * limit)
    if capped:
        assert excess == 0
        assert spent <= limit
    else:
        assert excess > 0  # the calls in flight at the end did spend beyond what they reserved
        assert spent - limit <= excess <= sum((actual(h) for h in last), 0 * limit)
    assert len(last) <= concurrency


# -- finding 4: the ledger's cost per call ------------------------------------------------------------
def _filled(entries: int) -> Ledger:
    ledger = Ledger(PriceTable())
    ledger.prices.set("m", 1, 1)
    for i in range(entries):
        ledger.record(LedgerEntry("code", f"model-{i % 7}", 3, 5, 8, True, 0.01, False, cost=Decimal("0.01")))
    ledger.set_budget(10**12)
    ledger.set_money_budget(10**9)
    return ledger


def _calls(ledger: Ledger, count: int) -> None:
    """What a session client does per call — admit, settle, record — and what a notebook reads."""
    for _ in range(count):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
        request = CallRequest("m", body, False, estimate_tokens(body))
        ticket = ledger.admit(request)
        assert isinstance(ticket, Ticket)
        ledger.settle(ticket, Spent(request, tokens=request.prompt_tokens, known=False))
        ledger.after_call(CallResult(request, "stopped", None, None, 0.01, "live"))
        ledger.check_budget()
        assert ledger.totals.calls and ledger.spent_tokens and ledger.rows()


def test_a_call_never_walks_the_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = _filled(20_000)
    sums = [0]
    add = Totals.add

    def counting(self: Totals, entry: Any) -> Totals:
        sums[0] += 1
        return add(self, entry)

    monkeypatch.setattr(Totals, "add", counting)
    _calls(ledger, 300)
    assert sums[0] <= 300 * 2  # the overall and the per-model running sums, once per call
    assert ledger.totals.calls == 20_300


def test_a_ledger_of_20000_calls_is_as_quick_as_a_new_one() -> None:
    def best(ledger: Ledger) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            _calls(ledger, 300)
            times.append(time.perf_counter() - start)
        return min(times)

    fresh, full = best(_filled(0)), best(_filled(20_000))
    # A walk per call is 20,000 sums per call: hundreds of times slower. Constant cost: about equal.
    assert full < 5 * fresh + 0.05, (fresh, full)
