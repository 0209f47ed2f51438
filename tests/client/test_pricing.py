"""Prices, costs and the money budget: price files (good and broken at known lines), exact Decimal
money, "cost unknown" instead of guesses, and the budget refusing calls on a real client before
anything reaches the offline gateway."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from flotorch_nb import BudgetExceededError, ConfigurationError, FlotorchLLM, RetryPolicy
from flotorch_nb._admission import Ticket
from flotorch_nb._pipeline._hooks import CallRequest, CallResult, estimate_tokens
from flotorch_nb._response import Usage
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.pricing import (
    ENV_PRICES,
    Price,
    PriceTable,
    default_prices,
    format_cost,
    format_price,
    parse_money,
)
from flotorch_nb.spending import MoneyBudget, SpendTracker

pytestmark = pytest.mark.anyio

KEY = "offline-test-key"
USER = [{"role": "user", "content": "Name three colours of the sea."}]

GOOD_TOML = """\
# dollars per million tokens
["offline/assistant"]
input_per_million = 0.15
output_per_million = 0.60

['offline/echo']
input_per_million = 1
output_per_million = 2.5
"""


@pytest.fixture(autouse=True)
def _fresh_default_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty process-wide table, as a new kernel does."""
    import flotorch_nb.pricing as pricing

    monkeypatch.setattr(pricing, "_DEFAULT", PriceTable())
    monkeypatch.setattr(pricing, "_DEFAULT_PATH", [None])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- files -------------------------------------------------------------------------------------------
def test_a_toml_price_file_gives_exact_decimal_prices_and_costs(tmp_path: Path) -> None:
    table = PriceTable.load(write(tmp_path, "prices.toml", GOOD_TOML))
    assert table.get("offline/assistant") == Price(Decimal("0.15"), Decimal("0.60"))
    assert table.get("offline/echo") == Price(Decimal(1), Decimal("2.5"))
    # 1000 x $0.15/M + 2000 x $0.60/M, exactly: no binary-float residue.
    assert table.cost("offline/assistant", Usage(1000, 2000, 3000)) == Decimal("0.00135")
    assert [model for model, _ in table.items()] == ["offline/assistant", "offline/echo"]
    assert "offline/echo" in table and len(table) == 2


def test_a_json_price_file_reads_the_same(tmp_path: Path) -> None:
    data = {"offline/assistant": {"input_per_million": 0.15, "output_per_million": 0.6}}
    table = PriceTable.load(write(tmp_path, "prices.json", json.dumps(data)))
    assert table.cost("offline/assistant", Usage(1_000_000, 1_000_000, 2_000_000)) == Decimal("0.75")


def test_a_model_without_a_price_or_without_counts_has_an_unknown_cost_never_a_guess() -> None:
    table = PriceTable({"a": Price(Decimal(1), Decimal(2))})
    assert table.cost("b", Usage(10, 10, 20)) is None
    assert table.cost("a", None) is None
    assert format_cost(None) == "cost unknown"
    # The gateway's own name for the model is tried after the one asked for.
    assert table.cost("alias", Usage(1_000_000, 0, 1_000_000), "a") == Decimal(1)


ECHO = r"model 'offline/echo': "
BROKEN_FILES = [
    # TOML syntax: tomllib's own position.
    ("bad.toml", '["a"]\ninput_per_million = 1\noutput_per_million = = 2\n', r"not valid TOML: .*line 3"),
    # A wrong value: the line of that field in that model's entry.
    (
        "neg.toml",
        GOOD_TOML.replace("2.5", "-2"),
        rf"line 8: {ECHO}output_per_million must be a number of dollars >= 0, got -2",
    ),
    (
        "word.toml",
        GOOD_TOML.replace("0.15", '"cheap"'),
        r"line 3: model 'offline/assistant': input_per_million must be",
    ),
    ("bool.toml", GOOD_TOML.replace("= 1\n", "= true\n"), rf"line 7: {ECHO}input_per_million"),
    (
        "typo.toml",
        GOOD_TOML.replace("output_per_million = 2.5", "outptu_per_million = 2.5"),
        rf"line 8: {ECHO}unknown key 'outptu_per_million'",
    ),
    ("missing.toml", '["a"]\ninput_per_million = 1\n', r"line 1: model 'a': output_per_million is missing"),
    ("flat.toml", "x = 1\n", r"line 1: model 'x': expected a table"),
    # JSON syntax: JSONDecodeError's line and column.
    ("bad.json", '{\n "a": {"input_per_million": 1,\n}\n', r"not valid JSON: .*at line 3, column 1"),
    (
        "value.json",
        '{\n  "a": {\n    "input_per_million": 1,\n    "output_per_million": null\n  }\n}\n',
        r"line 4: model 'a': output_per_million",
    ),
    ("list.json", "[1, 2]", r"expected an object of models"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BROKEN_FILES)
def test_a_malformed_price_file_is_a_configuration_error_naming_file_and_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigurationError, match=expected) as caught:
        PriceTable.load(path)
    assert str(path) in str(caught.value)


def test_a_missing_price_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"price file .*nowhere.toml cannot be read: No such file"):
        PriceTable.load(tmp_path / "nowhere.toml")


# -- run-time prices and the process-wide table -------------------------------------------------------
def test_prices_set_at_run_time_win_over_the_file_and_survive_reloading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path, "a.toml", GOOD_TOML)
    monkeypatch.setenv(ENV_PRICES, str(first))
    table = default_prices()
    assert table.get("offline/assistant") == Price(Decimal("0.15"), Decimal("0.60"))
    table.set("offline/assistant", "0.5", "$1")  # %flotorch price offline/assistant 0.5 $1
    assert default_prices() is table and table.get("offline/assistant") == Price(Decimal("0.5"), Decimal(1))

    second = write(
        tmp_path, "b.json", json.dumps({"other": {"input_per_million": 3, "output_per_million": 4}})
    )
    monkeypatch.setenv(ENV_PRICES, str(second))
    assert default_prices().get("other") == Price(Decimal(3), Decimal(4))  # reread: another file
    assert default_prices().get("offline/echo") is None  # the old file's prices are gone...
    assert default_prices().get("offline/assistant") == Price(Decimal("0.5"), Decimal(1))  # ...not ours
    table.remove("offline/assistant")
    assert "offline/assistant" not in table


def test_a_bad_run_time_price_is_a_configuration_error() -> None:
    table = PriceTable()
    for bad in ("-1", "free", float("nan"), True):
        with pytest.raises(ConfigurationError, match="price of 'm'"):
            table.set("m", bad, 1)
    with pytest.raises(ConfigurationError, match="model name"):
        table.set(" ", 1, 1)
    with pytest.raises(ConfigurationError):
        Price(Decimal(-1), Decimal(1))
    assert table.set("m", 0.1, 0.2) == Price(Decimal("0.1"), Decimal("0.2"))  # a float as written


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0", "$0.00"),
        ("0.15", "$0.15"),
        ("0.5", "$0.50"),
        ("0.1234", "$0.12"),
        ("0.00123", "$0.0012"),
        ("0.000045", "$0.000045"),
        ("1", "$1.00"),
        ("1234.567", "$1,234.57"),
    ],
)
def test_costs_show_cents_from_a_dollar_and_two_significant_digits_below(amount: str, shown: str) -> None:
    assert format_cost(Decimal(amount)) == shown


def test_money_and_prices_parse_and_print() -> None:
    assert parse_money("$5") == Decimal(5) and parse_money(" 0.25 ") == Decimal("0.25")
    with pytest.raises(ConfigurationError):
        parse_money("five dollars")
    assert format_price(Price(Decimal("0.15"), Decimal("0.60"))) == "$0.15 in / $0.60 out per 1M tokens"
    assert format_price(None) == "no price"


# -- spending ----------------------------------------------------------------------------------------
def _request(model: str = "m", max_tokens: int | None = None) -> CallRequest:
    body: dict[str, object] = {"model": model, "messages": USER}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return CallRequest(model, body, False, estimate_tokens(body))


def test_a_stopped_stream_is_priced_from_the_estimate_and_flagged() -> None:
    table = PriceTable({"m": Price(Decimal(1_000_000), Decimal(1_000_000))})  # $1 a token: easy sums
    tracker = SpendTracker(table)
    request = _request()
    stopped = CallResult(request, "stopped", None, None, 0.1, "offline", partial_chars=40)
    cost, estimated = tracker.cost_of(stopped)
    assert estimated and cost == Decimal(stopped.total_tokens)
    tracker.after_call(stopped)
    refused = CallResult(_request("unpriced"), "error", None, RuntimeError("x"), 0.1, "offline")
    tracker.after_call(refused)  # never reached a model: free, even without a price
    answered = CallResult(_request("unpriced"), "stopped", None, None, 0.1, "offline", partial_chars=8)
    tracker.after_call(answered)  # spent tokens, but on a model without a price
    assert tracker.spent == cost and tracker.estimated and tracker.unknown_calls == 1
    tracker.reset()
    assert tracker.spent == 0 and tracker.unknown_calls == 0 and not tracker.estimated


@pytest.mark.parametrize("sync", [True, False])
async def test_the_money_budget_counts_real_calls_and_refuses_before_sending(
    gateway: OfflineGateway, sync: bool
) -> None:
    table = PriceTable()
    table.set("offline/assistant", 10_000, 20_000)  # dear enough that a few calls exhaust $5
    llm = FlotorchLLM("offline/assistant", KEY, gateway.url)
    async with llm:
        await _exhaust_the_budget(llm, table, gateway, sync)


async def _exhaust_the_budget(
    llm: FlotorchLLM, table: PriceTable, gateway: OfflineGateway, sync: bool
) -> None:
    budget = MoneyBudget("$5", table).attach(llm.hooks)

    async def call() -> object:
        if sync:
            return llm.invoke(USER, max_tokens=60)
        return await llm.ainvoke(USER, max_tokens=60)

    spent = Decimal(0)
    refused = r"money budget \$5.00: .* spent, and this call to offline/assistant could cost up to \$"
    with pytest.raises(BudgetExceededError, match=refused):
        for _ in range(20):
            response = await call()
            spent += table.cost("offline/assistant", response.usage)  # type: ignore[attr-defined,operator]
    assert budget.spent == spent > 0
    sent = len(gateway.requests)
    with pytest.raises(BudgetExceededError):
        await call()
    assert len(gateway.requests) == sent  # refused before any I/O
    assert budget.spent + budget.most_a_call_costs(_request("offline/assistant", 60)) > budget.limit  # type: ignore[operator]
    budget.detach(llm.hooks)
    await call()  # budget off: calls go through again
    assert llm.hooks.before_request == [] and llm.hooks.after_call == []


async def test_a_money_budget_refuses_a_model_it_cannot_price(gateway: OfflineGateway) -> None:
    async with FlotorchLLM("offline/echo", KEY, gateway.url) as llm:
        MoneyBudget(5, PriceTable()).attach(llm.hooks)
        with pytest.raises(BudgetExceededError, match=r"'offline/echo' has no price.*nothing was sent"):
            await llm.ainvoke(USER)
    assert len(gateway.requests) == 0


async def test_calls_in_flight_hold_their_estimate_so_a_call_that_would_overshoot_waits_for_them(
    gateway: OfflineGateway,
) -> None:
    table = PriceTable()
    table.set("offline/assistant", 0, 1_000_000)  # $1 per output token: the cap decides
    async with FlotorchLLM("offline/assistant", KEY, gateway.url, retry=RetryPolicy(max_retries=0)) as llm:
        budget = MoneyBudget("$150", table).attach(llm.hooks)
        in_flight: list[int] = []

        class Probe:  # asked right after the budget admitted the attempt
            def admit(self, request: object) -> Ticket:
                in_flight.append(budget.in_flight)
                return Ticket()

            def settle(self, ticket: object, spent: object) -> None:
                pass

        llm.hooks.gates.append(Probe())
        # Each call may cost up to $100 (its max_tokens); together they could reach $200 > $150, so
        # the second waits for the first to settle instead of being refused: both are answered.
        first, second = await asyncio.gather(
            llm.ainvoke(USER, max_tokens=100), llm.ainvoke(USER, max_tokens=100)
        )
        assert in_flight == [1, 1]
        outputs = first.usage.output_tokens + second.usage.output_tokens  # type: ignore[union-attr]
        assert budget.spent == Decimal(outputs) <= 150
        assert budget.reserved == 0 and budget.in_flight == 0


def test_a_money_budget_must_be_an_amount() -> None:
    with pytest.raises(ConfigurationError, match="a money budget must be a number of dollars"):
        MoneyBudget("lots", PriceTable())
