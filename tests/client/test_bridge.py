"""The one sync -> async bridge (``flotorch_nb._bridge``): callbacks on the caller's thread, one
interrupt behaviour that keeps what finished, a caller whose thread already runs a loop (a notebook
cell, nest-asyncio applied or not), a forked child, and an exit that closes the loop's pools quietly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from flotorch_nb import _bridge
from flotorch_nb._pipeline._hooks import _LABEL, call_label
from flotorch_nb.gateway import OfflineGateway


class _Cancelled(asyncio.CancelledError):
    def __init__(self, result: list[str]) -> None:
        super().__init__("cancelled")
        self.result = result


class _Stopped(KeyboardInterrupt):
    def __init__(self, result: list[str]) -> None:
        super().__init__("stopped")
        self.result = result


def test_callbacks_run_on_the_callers_thread_in_order_and_the_coroutine_on_the_loop() -> None:
    seen: list[tuple[str, int]] = []
    where: list[int] = []

    async def main(caller: _bridge.Caller) -> str:
        where.append(threading.get_ident())
        report = caller.wrap(lambda text: seen.append((text, threading.get_ident())))
        assert report is not None
        for text in ("a", "b", "c"):
            report(text)
            await asyncio.sleep(0)
        return "done"

    assert _bridge.run(main) == "done"
    me = threading.get_ident()
    assert seen == [("a", me), ("b", me), ("c", me)]  # every one delivered before run returned
    assert where and where[0] != me and where[0] == _bridge._thread.ident  # type: ignore[union-attr]


def test_the_caller_ticks_while_it_waits_and_its_context_goes_with_the_coroutine() -> None:
    ticks: list[int] = []

    async def main() -> str | None:
        await asyncio.sleep(0.25)
        return _LABEL.get()

    with call_label("magic"):
        label = _bridge.run(main(), tick=lambda: ticks.append(1), every=0.02)
    assert label == "magic" and len(ticks) >= 3


def test_an_interrupt_cancels_what_is_in_flight_waits_for_it_and_keeps_what_finished() -> None:
    finished: list[str] = []
    closed = threading.Event()

    async def main(caller: _bridge.Caller) -> list[str]:
        finished.append("first")
        caller.call(_ctrl_c)  # Ctrl-C reaches the caller's thread now
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # closing a connection takes a moment: run waits for it
            closed.set()
            raise _Cancelled(list(finished)) from None
        return finished

    outcomes: list[Any] = []

    def interrupted(outcome: Any) -> BaseException:
        outcomes.append(outcome)
        return _Stopped(outcome.result)

    with pytest.raises(_Stopped) as caught:
        _bridge.run(main, interrupted=interrupted)
    assert closed.is_set() and caught.value.result == ["first"]
    assert isinstance(outcomes[0], _Cancelled)
    assert isinstance(caught.value, KeyboardInterrupt)


def _ctrl_c() -> None:
    raise KeyboardInterrupt


def test_a_callback_that_raises_cancels_the_run_and_its_error_is_raised() -> None:
    cancelled = threading.Event()

    async def main(caller: _bridge.Caller) -> None:
        caller.call(_broken)
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    with pytest.raises(LookupError, match="the display broke"):
        _bridge.run(main)
    assert cancelled.is_set()


def _broken() -> None:
    raise LookupError("the display broke")


def test_the_coroutines_own_error_is_raised_as_it_is() -> None:
    async def main() -> None:
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        _bridge.run(main())


def test_a_blocking_run_from_the_loop_itself_is_refused_rather_than_deadlocked() -> None:
    async def nested() -> str:
        try:
            _bridge.run(asyncio.sleep(0))
        except RuntimeError as exc:
            return str(exc)
        return "ran"

    assert "await the async twin" in _bridge.run(nested())


def test_the_caller_may_run_an_event_loop_of_its_own() -> None:
    """A notebook cell: the kernel's loop is running in the caller's thread."""

    async def cell() -> int:
        return _bridge.run(asyncio.sleep(0.01, result=7))

    assert asyncio.run(cell()) == 7


SCRIPT = """
import asyncio, os, sys, threading
import nest_asyncio2
from flotorch_nb import FlotorchLLM, _bridge

url = sys.argv[1]
llm = FlotorchLLM("offline/echo", "bridge-test-key", url)

async def cell():  # a notebook cell with nest-asyncio applied, as %load_ext flotorch_nb does
    batch = llm.batch(["one", "two"], progress=False)
    comparison = llm.compare([{"role": "user", "content": "hi"}], ["offline/echo", "offline/assistant"])
    return [i.content for i in batch], sorted(comparison.responses)

nest_asyncio2.apply()
print("CELL", asyncio.run(cell()), flush=True)
parent_loop = _bridge.loop()

pid = os.fork()
if pid == 0:  # the child: the loop's thread did not survive the fork; a new one serves it
    try:
        result = llm.batch(["child"], progress=False)
        fresh = _bridge.loop() is not parent_loop and _bridge._thread.is_alive()
        print("CHILD", result[0].content, fresh, flush=True)
    finally:
        _bridge.shutdown()
        os._exit(0)
os.waitpid(pid, 0)
print("PARENT", llm.batch(["again"], progress=False)[0].content, flush=True)
# No close(): the exit ends the loop, cancelling its tasks, which closes the pools opened on it.
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_in_a_nested_loop_after_a_fork_and_at_exit(gateway: OfflineGateway, tmp_path: Path) -> None:
    script = tmp_path / "bridge_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    env["PYTHONWARNINGS"] = "error::ResourceWarning"  # an unclosed pool would say so at exit
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script), gateway.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "CELL (['one', 'two'], ['offline/assistant', 'offline/echo'])" in lines, done.stdout + done.stderr
    assert "CHILD child True" in lines and "PARENT again" in lines, done.stdout + done.stderr
    assert "Unclosed" not in done.stderr and "Task was destroyed" not in done.stderr, done.stderr
