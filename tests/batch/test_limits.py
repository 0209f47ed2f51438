"""The shared rate limiter: rpm and tpm over any window, reconciliation, and the shared pause.

Windows are shortened (``window=0.5`` s) so the guarantees are checked on real clocks in seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flotorch_nb import ConfigurationError, InvalidRequestError
from flotorch_nb.batch import BatchCancelled, BatchOptions, Grant, RateLimiter, run_async
from flotorch_nb.batch._limits import MARGIN_S
from tests.support.batch import (
    make_llm,
    most_in_any_window,
    shaped_gateway,
)

WINDOW = 0.5


@pytest.mark.anyio
async def test_rpm_holds_over_any_window_and_is_sustained() -> None:
    limiter = RateLimiter(rpm=10, window=WINDOW)
    granted: list[float] = []

    async def client() -> None:
        for _ in range(5):
            await limiter.acquire(1)
            granted.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(6)))
    elapsed = time.monotonic() - started
    assert len(granted) == 30
    assert most_in_any_window(granted, WINDOW) <= 10
    # Paced, not bursty: 30 grants at 10 per 0.5 s take about 1.5 s, and not much longer.
    assert 1.2 < elapsed < 1.5 + 3 * MARGIN_S + 0.3


@pytest.mark.anyio
async def test_tpm_counts_estimates_then_the_tokens_really_used() -> None:
    limiter = RateLimiter(tpm=100, window=WINDOW)
    first = await limiter.acquire(60)
    started = time.monotonic()
    second = asyncio.create_task(limiter.acquire(60))
    await asyncio.sleep(0.05)
    assert not second.done()  # 60 + 60 > 100 within the window
    limiter.settle(first, 20)  # the answer used far less than estimated
    await asyncio.sleep(0.01)
    granted = await second  # let through when the first grant leaves the window, or sooner
    assert isinstance(granted, Grant) and granted.tokens == 60
    assert time.monotonic() - started < WINDOW + MARGIN_S + 0.1
    with pytest.raises(InvalidRequestError, match="more than tpm=100"):
        await limiter.acquire(101)


@pytest.mark.anyio
async def test_a_pause_holds_every_grant_back() -> None:
    limiter = RateLimiter()
    await limiter.acquire(1)
    limiter.pause(0.3)
    started = time.monotonic()
    await asyncio.gather(limiter.acquire(1), limiter.acquire(1))
    assert time.monotonic() - started >= 0.29


def test_limits_are_checked() -> None:
    for bad in (0, -1, "10", True, float("inf")):
        with pytest.raises(ConfigurationError, match="rpm"):
            RateLimiter(rpm=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="concurrency"):
        BatchOptions.of(concurrency=0)
    with pytest.raises(ConfigurationError, match="on_error"):
        BatchOptions.of(on_error="ignore")


class Recording(RateLimiter):
    """A limiter that notes each estimate and each settlement."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.estimates: list[int] = []
        self.settled: list[int] = []

    def try_acquire(self, tokens: int) -> Grant | float:
        grant = super().try_acquire(tokens)
        if isinstance(grant, Grant):  # asked again after a wait: one estimate per request let through
            self.estimates.append(tokens)
        return grant

    def settle(self, grant: Grant, tokens: int) -> None:
        self.settled.append(tokens)
        super().settle(grant, tokens)


@pytest.mark.anyio
async def test_a_batch_estimates_prompt_plus_max_tokens_and_reconciles_with_usage() -> None:
    limiter = Recording(rpm=600, tpm=100_000, window=WINDOW)
    with shaped_gateway() as (gw, shaping):
        async with make_llm(gw) as llm:
            options = BatchOptions.of(progress=False, limiter=limiter, params={"max_tokens": 50})
            result = await run_async(llm, ["x" * 40, "y" * 400], options)
    assert not result.errors
    assert limiter.estimates == [10 + 4 + 50, 100 + 4 + 50]
    assert sorted(limiter.settled) == sorted(i.answer.usage[2] for i in result)  # type: ignore[union-attr,index]
    assert most_in_any_window(shaping.arrivals, WINDOW) <= 600


@pytest.mark.anyio
async def test_grants_stay_first_come_first_served() -> None:
    # A request that may go at once is granted without the lock, but never ahead of one already
    # waiting: here a small request that would fit the window waits behind a large one that does not.
    limiter = RateLimiter(tpm=100, window=WINDOW)
    await limiter.acquire(60)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        await limiter.acquire(tokens)
        order.append(name)

    large = asyncio.create_task(take("large", 60))
    await asyncio.sleep(0.01)
    small = asyncio.create_task(take("small", 10))
    await asyncio.gather(large, small)
    assert order == ["large", "small"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_try_acquire_never_blocks_it_grants_or_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=0.5, clock=clock)  # one request every two minutes
    assert isinstance(limiter.try_acquire(1), Grant)
    wait = limiter.try_acquire(1)
    assert isinstance(wait, float) and 120 <= wait <= 120 + MARGIN_S
    clock.now += 60
    assert isinstance(limiter.try_acquire(1), float)  # a minute later: still inside the two minutes
    clock.now += wait - 60
    assert isinstance(limiter.try_acquire(1), Grant)
    with pytest.raises(InvalidRequestError):
        RateLimiter(tpm=10).try_acquire(11)


@pytest.mark.anyio
async def test_an_rpm_below_one_a_minute_spaces_requests_instead_of_failing() -> None:
    limiter = RateLimiter(rpm=0.5, window=0.2)  # one per 0.4 s on this short clock
    first = await limiter.acquire(1)
    second = await asyncio.wait_for(limiter.acquire(1), 5)  # was an IndexError
    assert second.at - first.at >= 0.4


@pytest.mark.anyio
async def test_a_fractional_rpm_is_never_exceeded_in_any_window() -> None:
    limiter = RateLimiter(rpm=2.5, window=0.4)
    granted = []
    for _ in range(5):
        granted.append((await limiter.acquire(1)).at)
    # 2.5 a window is at most 2 in any window (3 went through in one window before).
    assert most_in_any_window(granted, 0.4) <= 2


@pytest.mark.anyio
async def test_a_batch_with_rpm_below_one_keeps_its_partial_result() -> None:
    with shaped_gateway() as (gw, shaping):
        async with make_llm(gw) as llm:
            task = asyncio.create_task(llm.abatch(["a", "b"], rpm=0.5, progress=False))
            deadline = time.monotonic() + 5
            while not shaping.arrivals and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # "a" is answered; "b" waits its two minutes
            task.cancel()
            with pytest.raises(BatchCancelled) as caught:  # was a bare IndexError, result lost
                await task
    result = caught.value.result
    assert [i.answer.content if i.answer else None for i in result] == ["a", None]
    assert len(shaping.arrivals) == 1
