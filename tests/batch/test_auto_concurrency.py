"""``concurrency="auto"``: the pure AIMD window, its gate, and batches against a gateway that limits.

The window's rules are checked on ``AimdWindow`` alone, with the time passed in (no clock, no I/O);
the end-to-end tests run real batches over loopback against ``bench/server.py`` with a hidden limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, ClassVar

import pytest

from flotorch_nb import ConfigurationError, FlotorchLLM, RateLimitError, RetryPolicy
from flotorch_nb._admission import RECHECK_S, Spent, Ticket
from flotorch_nb.batch import BatchOptions, Grant, RateLimiter, run_async
from flotorch_nb.batch._aimd import AimdWindow, RateHeaders, parse_duration, read_rate_headers
from flotorch_nb.batch._auto import AutoConcurrency, AutoTicket, controller_for, outcome_of
from flotorch_nb.gateway import OfflineGateway
from tests.support.batch import Shaped, make_llm, most_in_any_window, run_batch
from tests.support.client import KEY
from tests.support.limited import limited_server, server_stats

LATENCY = 0.1


def fill(window: AimdWindow) -> list[int]:
    """Let through as many requests as the window allows now; their numbers."""
    seqs = []
    while window.wait(0.0) == 0:
        seqs.append(window.sent())
    return seqs


# -- the pure window ---------------------------------------------------------------------------------
def test_the_window_starts_low_and_doubles_each_round_trip_while_answers_are_healthy() -> None:
    window = AimdWindow(initial=4)
    now = 0.0
    sizes = []
    for _ in range(3):
        seqs = fill(window)
        assert window.wait(now) == math.inf  # full: the next request waits for a place
        sizes.append(len(seqs))
        now += LATENCY
        for seq in seqs:
            window.answered(seq, now, LATENCY)
    assert sizes == [4, 8, 16]


def test_a_429_halves_the_window_once_per_round_trip_and_growth_is_then_slower() -> None:
    window = AimdWindow(initial=16)
    seqs = fill(window)
    window.congested(seqs[0], 0.05)
    assert window.window == 8  # no answer yet to measure what the gateway sustains: a halving
    for seq in seqs[1:4]:  # sent before the cut: the same congestion, not a new one
        window.congested(seq, 0.06)
    assert window.window == 8 and window.cuts == 1
    for _ in seqs[4:]:
        window.released()
    later = fill(window)
    window.congested(later[0], 0.2)  # sent after the cut: the limit is still too high
    assert window.window == 4
    # Past the first cut it grows back along a cubic, not by one per answer.
    seqs = fill(window)
    for seq in seqs:
        window.answered(seq, 0.3, LATENCY)
    assert 4 <= window.limit < 5


def test_a_cut_keeps_most_of_what_the_gateway_was_seen_to_sustain() -> None:
    # 20 in flight answered every 100 ms for a second: the gateway carries 20; a 429 then cuts to
    # 0.9 of that, not to half of the window (which would leave a quarter of the limit unused).
    window = AimdWindow(initial=20, ceiling=20)
    now = 0.0
    for _ in range(10):
        seqs = fill(window)
        now += LATENCY
        for seq in seqs:
            window.answered(seq, now, LATENCY)
    seq = fill(window)[0]
    window.congested(seq, now + 0.01)
    assert window.window == 18


def test_retry_after_pauses_every_request_of_the_key_and_ms_is_preferred() -> None:
    window = AimdWindow(initial=4)
    seqs = fill(window)
    headers = read_rate_headers({"retry-after": "1", "retry-after-ms": "250"})
    window.congested(seqs[0], 10.0, headers)
    for _ in seqs[1:]:
        window.released()
    assert window.wait(10.0) == pytest.approx(0.25)
    assert window.wait(10.3) == 0  # the pause is over and the window has room


def test_remaining_zero_pauses_until_one_request_refills_and_low_remaining_stops_growth() -> None:
    window = AimdWindow(initial=4)
    seqs = fill(window)
    # 200 a window, none left, full again in 1 s: one more after 1/200 s.
    spent = read_rate_headers(
        {
            "x-ratelimit-limit-requests": "200",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        }
    )
    window.answered(seqs[0], 5.0, LATENCY, spent)
    assert window.wait(5.0) == pytest.approx(0.005)
    assert window.limit == 4  # not grown
    low = RateHeaders(remaining_requests=1)  # no more left than the requests still in flight
    window.answered(seqs[1], 6.0, LATENCY, low)
    draining = RateHeaders(limit_requests=200, remaining_requests=90)  # under half left
    window.answered(seqs[2], 6.0, LATENCY, draining)
    assert window.limit == 4
    window.answered(seqs[3], 6.0, LATENCY, RateHeaders(limit_requests=200, remaining_requests=150))
    assert window.limit == 5


def test_a_tokens_budget_runs_low_when_the_requests_in_flight_would_spend_what_is_left() -> None:
    # 6,000 of 10,000 tokens left (more than half: not draining), 900 of 1,000 requests left; 39
    # requests in flight at about 200 tokens an answer would take 7,800 tokens. The tokens budget
    # runs low as surely as a requests budget would: the window stops growing.
    headers = RateHeaders(
        limit_requests=1000, remaining_requests=900, limit_tokens=10_000, remaining_tokens=6_000
    )
    window = AimdWindow(initial=41, ceiling=64)
    seqs = fill(window)
    window.answered(seqs[0], 1.0, LATENCY, tokens=200)  # grows the window: it was in use
    window.answered(seqs[1], 1.0, LATENCY, headers, tokens=200)
    assert window.limit == 42  # not grown again
    assert headers.low(40, tokens_per_request=200.0)
    assert not headers.low(20, tokens_per_request=200.0)  # 4,000 tokens: room for them all
    assert RateHeaders(limit_tokens=100, remaining_tokens=60).low(60)  # at least a token a request


def test_the_refill_rate_in_the_headers_bounds_the_window_and_paces_a_low_budget() -> None:
    # 200 a bucket, 20 left, full again in 0.9 s: it refills 180 / 0.9 = 200 a second.
    draining = RateHeaders(limit_requests=200, remaining_requests=20, reset_requests=0.9)
    assert draining.refill_rate(None) == pytest.approx(200.0)
    tokens = RateHeaders(limit_tokens=9000, remaining_tokens=0, reset_tokens=1.0)
    assert tokens.refill_rate(45.0) == pytest.approx(200.0)  # 9,000 tokens a second at 45 an answer
    window = AimdWindow(initial=40, ceiling=40)
    seqs = fill(window)
    window.answered(seqs[0], 1.0, LATENCY, draining)
    # 200 a second at 100 ms is 20 in flight; 10 % more for jitter, no further.
    assert window.window == 22
    for seq in seqs[1:30]:
        window.answered(seq, 1.0, LATENCY, draining)
    window.sent(1.0)
    window.sent(1.0)
    assert window.wait(1.0) == pytest.approx(1 / 200)  # spaced at the refill rate, not a burst


def test_after_a_pause_one_request_goes_and_the_next_waits_its_interval() -> None:
    # A budget running low (200 a second, 20 left) paces requests 5 ms apart; then a 429 pauses
    # the key for half a second. When the pause ends one request goes, not two back to back (the
    # gateway refilled one at most), however long the pause left the pacing idle.
    window = AimdWindow(initial=8, ceiling=8)
    seqs = fill(window)
    window.answered(
        seqs[0], 1.0, LATENCY, RateHeaders(limit_requests=200, remaining_requests=20, reset_requests=0.9)
    )
    window.congested(seqs[1], 1.0, RateHeaders(retry_after=0.5))
    for _ in seqs[2:]:
        window.released()
    assert window.wait(1.2) == pytest.approx(0.3)
    assert window.wait(1.5) == 0
    window.sent(1.5)
    assert window.wait(1.5) == pytest.approx(1 / 200)


def test_a_sharp_rise_in_latency_cuts_the_window() -> None:
    window = AimdWindow(initial=8, ceiling=8)
    now = 0.0
    for _ in range(5):  # a baseline of 100 ms
        seqs = fill(window)
        now += LATENCY
        for seq in seqs:
            window.answered(seq, now, LATENCY)
    assert window.cuts == 0
    for _ in range(5):  # then answers take a second
        seqs = fill(window)
        now += 1.0
        for seq in seqs:
            window.answered(seq, now, 1.0)
    assert window.cuts >= 1 and window.window < 8


def test_the_window_never_exceeds_what_rpm_needs_and_only_grows_when_used() -> None:
    window = AimdWindow(initial=4)
    assert window.ceiling_for(10.0) == window.ceiling  # no baseline yet
    seq = window.sent()
    window.answered(seq, 0.1, LATENCY)  # one request of four places: the window was not in use
    assert window.limit == 4
    assert window.ceiling_for(10.0) == 2  # 10/s x 0.1 s, doubled for jitter
    assert window.ceiling_for(1000.0) == 200


def test_a_place_handed_back_unsent_neither_grows_the_window_nor_spends_its_pacing() -> None:
    window = AimdWindow(initial=2)
    first = window.sent(0.0)
    second = window.sent(0.0)  # fills the window...
    window.returned(second)  # ...but a later gate (the rate limiter) said "not now": never sent
    window.answered(first, LATENCY, LATENCY)
    assert window.limit == 2  # one request in flight of two places: the window was not in use
    window = AimdWindow(initial=4)
    window.rate, window._pacing = 10.0, True  # a budget running low: spaced 100 ms apart
    window.sent(1.0)
    seq = window.sent(1.0)
    assert window.wait(1.0) == pytest.approx(0.1)
    window.returned(seq)
    assert window.wait(1.0) == 0  # its turn is free again for the request that really goes
    assert window.sent(1.0) == seq


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("20ms", 0.02), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("soon", None)],
)
def test_reset_durations_are_read_as_openai_writes_them(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("value", ["Auto", "fast", 0, -1, 2.5, True, None])
def test_concurrency_is_auto_or_a_positive_whole_number(value: object) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        BatchOptions.of(concurrency=value)
    assert BatchOptions.of(concurrency="auto").concurrency == "auto"


# -- the shared controller -----------------------------------------------------------------------------
def test_one_controller_per_gateway_key_named_without_the_key() -> None:
    a = FlotorchLLM("m", KEY, "http://127.0.0.1:9")
    b = FlotorchLLM("other-model", KEY, "http://127.0.0.1:9")
    c = FlotorchLLM("m", KEY + "-other", "http://127.0.0.1:9")
    d = FlotorchLLM("m", KEY, "http://127.0.0.1:8")
    assert KEY not in a.gateway_key and KEY[3:] not in a.gateway_key
    assert controller_for(a.gateway_key) is controller_for(b.gateway_key)
    assert controller_for(a.gateway_key) is not controller_for(c.gateway_key)
    assert controller_for(a.gateway_key) is not controller_for(d.gateway_key)


def test_a_429_is_congestion_and_other_errors_say_nothing_about_the_limit() -> None:
    class Asked:
        model, stream, estimated_tokens, label = "m", False, 0, None
        body: ClassVar[dict[str, object]] = {}

    limited = RateLimitError("429", status_code=429, gateway_message="slow down")
    assert outcome_of(Spent(Asked(), error=limited, headers={"retry-after": "1"}))[0] == "congested"
    assert outcome_of(Spent(Asked(), error=ValueError("x")))[0] == "other"
    assert outcome_of(None)[0] == "unsent"  # a later gate said "not now": handed back, not settled


@pytest.mark.anyio
async def test_waiting_requests_are_woken_one_per_freed_place() -> None:
    controller = AutoConcurrency()
    controller.window.limit = 2
    first, second = controller.try_take(), controller.try_take()
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    waiting = [asyncio.create_task(controller.take()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in waiting)
    controller.settle(first, ("other", None, 0))  # one place freed: one waiter goes
    await asyncio.sleep(0.01)
    assert sum(task.done() for task in waiting) == 1
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


@pytest.mark.anyio
async def test_a_place_freed_between_a_look_and_getting_in_line_is_not_missed() -> None:
    # Another thread's batch frees the place just after this request found the window full, before
    # it got in line: nobody was in line to wake, so the request must see the free place itself
    # rather than sleep out RECHECK_S (a second) with a place free.
    class Racing(AutoConcurrency):
        freeing: AutoTicket | None = None

        def try_take(self) -> AutoTicket | float:
            answer = super().try_take()
            held, self.freeing = self.freeing, None
            if held is not None:
                self.settle(held, ("other", None, 0))
            return answer

    controller = Racing()
    controller.window.limit = 1
    held = controller.try_take()
    assert isinstance(held, AutoTicket)
    controller.freeing = held
    taken = await asyncio.wait_for(controller.take(), RECHECK_S / 2)
    assert isinstance(taken, AutoTicket) and controller.window.in_flight == 1


# -- against a gateway that limits ------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("sync", [True, False])
async def test_an_auto_batch_finds_a_hidden_limit_and_ends_fully_answered_with_few_429s(sync: bool) -> None:
    # 100 requests a second, 20 ms each: about 2 in flight carry it. A fixed concurrency of 32 would
    # meet 429 after 429; "auto" starts at 4, grows, and settles near the limit.
    with limited_server(0.02, "--rps", "100", "--burst", "0.2") as url:
        async with FlotorchLLM("bench/model", KEY, url, cache=False, max_retries=8) as llm:
            result = await run_batch(llm, sync, [f"p{i}" for i in range(200)], concurrency="auto")
        stats = server_stats(url)
    assert len(result.ok) == 200, result.summary_text()
    assert stats["limited"] == result.stats.rate_limited
    assert result.stats.rate_limited <= 0.1 * result.stats.requests, result.summary_text()
    summary = result.summary()
    assert summary["concurrency"] == "auto" and 1 <= summary["settled_concurrency"] <= 16
    assert "concurrency='auto', settled at" in result.summary_text()


@pytest.mark.anyio
async def test_gates_are_told_the_rate_limit_headers_of_answers_and_429s() -> None:
    seen: list[Spent | None] = []

    class Recorder:
        def admit(self, request: object) -> Ticket:
            return Ticket()

        def settle(self, ticket: Ticket, spent: Spent | None) -> None:
            seen.append(spent)

    with limited_server(0.0, "--rps", "2", "--burst", "1") as url:
        llm = FlotorchLLM("bench/model", KEY, url, cache=False, retry=RetryPolicy(max_retries=0))
        llm.hooks.gates.append(Recorder())
        async with llm:
            await llm.ainvoke([{"role": "user", "content": "a"}])
            await llm.ainvoke([{"role": "user", "content": "b"}])
            with pytest.raises(RateLimitError) as refused:
                await llm.ainvoke([{"role": "user", "content": "c"}])
    ok, limited = seen[0], seen[-1]
    assert ok is not None and ok.headers is not None
    assert ok.headers["x-ratelimit-limit-requests"] == "2"
    assert ok.headers["x-ratelimit-remaining-requests"] == "1"
    assert limited is not None and limited.headers is not None and "retry-after-ms" in limited.headers
    # Retry-After says 1 (whole seconds); retry-after-ms is the precise wait, and wins.
    assert refused.value.retry_after is not None and refused.value.retry_after < 1.0


@pytest.mark.anyio
async def test_batches_on_one_key_share_one_window() -> None:
    with limited_server(0.01, "--rps", "200", "--burst", "0.2") as url:
        async with (
            FlotorchLLM("bench/model", KEY, url, cache=False, max_retries=8) as a,
            FlotorchLLM("bench/other", KEY, url, cache=False, max_retries=8) as b,
        ):
            controller = controller_for(a.gateway_key)
            first, second = await asyncio.gather(
                a.abatch([f"a{i}" for i in range(60)], concurrency="auto", progress=False),
                b.abatch([f"b{i}" for i in range(60)], concurrency="auto", progress=False),
            )
    assert len(first.ok) == len(second.ok) == 60
    # Every attempt of both batches took its place in the one window, and gave it back.
    assert controller.window._seq == first.stats.requests + second.stats.requests
    assert controller.window.in_flight == 0


class Granted(RateLimiter):
    """A rate limiter that notes when it let each request go."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.granted: list[float] = []

    def try_acquire(self, tokens: int) -> Grant | float:
        grant = super().try_acquire(tokens)
        if isinstance(grant, Grant):
            self.granted.append(time.monotonic())
        return grant


@pytest.mark.anyio
async def test_rpm_stays_a_hard_ceiling_under_auto(gw: OfflineGateway, shaping: Shaped) -> None:
    # The window may grow well past what 10 requests per half second need (answers are healthy and
    # quick); the rate limiter still lets no more than that go, and every attempt took its place.
    shaping.latency = 0.02
    limiter, controller = Granted(rpm=10, window=0.5), AutoConcurrency()
    started = time.monotonic()
    async with make_llm(gw) as llm:
        options = BatchOptions.of(
            concurrency="auto", rpm=1200, limiter=limiter, window=controller, progress=False
        )
        result = await run_async(llm, [f"p{i}" for i in range(30)], options)
    assert len(result.ok) == 30
    assert time.monotonic() - started > 1.2  # 30 at 10 per 0.5 s, paced from the first
    assert len(limiter.granted) == 30 and most_in_any_window(limiter.granted, 0.5) <= 10
    # Every attempt went through the window too, and gave its place back; the places handed back
    # while the limiter said "not now" were not counted as sent.
    assert controller.window._seq == result.stats.requests and controller.window.in_flight == 0
