"""``BatchOptions(slots=...)``: runs going at once share one in-flight limit (an evaluation's batches)."""

from __future__ import annotations

import asyncio
import pickle
from typing import Literal

import pytest

from flotorch_nb.batch import BatchOptions, run_async
from flotorch_nb.gateway import OfflineGateway
from tests.support.batch import Shaped, make_llm


class Counted(asyncio.Semaphore):
    """A semaphore that notes, at each place taken, how many calls the client already had in flight."""

    def __init__(self, places: int, llm: object) -> None:
        super().__init__(places)
        self.llm, self.taken, self.busy = llm, 0, [0]

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.taken += 1
        self.busy.append(self.llm.in_flight)  # type: ignore[attr-defined]
        return True


@pytest.mark.anyio
async def test_two_runs_share_one_in_flight_limit(gw: OfflineGateway, shaping: Shaped) -> None:
    shaping.latency = 0.02  # calls overlap, so an unshared limit would show
    async with make_llm(gw) as llm:
        slots = Counted(2, llm)
        options = BatchOptions.of(concurrency=3, progress=False, slots=slots)
        first, second = await asyncio.gather(
            run_async(llm, [f"a{i}" for i in range(5)], options),
            run_async(llm, [f"b{i}" for i in range(5)], options),
        )
    assert not first.errors and not second.errors
    assert slots.taken == 10  # every item took a place before it was sent
    assert max(slots.busy) <= 1  # ...and with two places, at most one other call was in flight then


@pytest.mark.anyio
async def test_a_result_made_under_shared_slots_still_pickles(gw: OfflineGateway, shaping: Shaped) -> None:
    # A semaphore that made a run wait holds its event loop (and its waiters): it belongs to the run,
    # as a shared limiter does, and must not stop the result from crossing a process boundary.
    shaping.latency = 0.02
    async with make_llm(gw) as llm:
        slots = asyncio.Semaphore(1)
        result = await run_async(
            llm, [f"a{i}" for i in range(3)], BatchOptions.of(concurrency=3, progress=False, slots=slots)
        )
    assert not result.errors
    copied = pickle.loads(pickle.dumps(result))
    assert [i.answer.content for i in copied if i.answer] == [i.answer.content for i in result if i.answer]
    assert len(copied.ok) == 3
    assert copied._options is not None and copied._options.slots is None
    assert result._options is not None and result._options.slots is slots  # the original is untouched
