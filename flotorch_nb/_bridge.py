"""The one bridge from sync code to async code: a background event loop per process, and ``run``.

Blocking entry points (``llm.batch``, ``compare``, a Dask partition, what comes next) are async code
run from a caller that waits. The caller's thread may already run an event loop (a Jupyter kernel's,
with or without nest_asyncio), so ``asyncio.run()`` there is out. Instead every such run goes to one
event loop in a daemon thread of this process, the way anyio's ``BlockingPortal`` runs a coroutine
for a worker thread:

- ``run(main)`` submits the coroutine there, in a copy of the caller's context (``call_label``, a
  ledger's ``capture``), and blocks. While it waits, the caller's thread calls ``tick`` every
  ``every`` seconds (draw a progress bar) and runs the callbacks the coroutine handed over with
  ``Caller.wrap`` (a live notebook view must be drawn from the cell's thread).
- One interrupt behaviour: ``KeyboardInterrupt`` in the caller's thread (Ctrl-C, a kernel interrupt),
  or an exception from a handed-over callback, cancels the task on the loop, waits until that
  cancellation has run (requests in flight closed their connections) and raises; ``interrupted``
  turns the cancelled task's outcome (say ``BatchCancelled`` with the partial result) into what the
  caller sees (``BatchInterrupted`` with that result).
- The loop lives as long as the process, so a client's async pool on it is reused by every run. It
  is started on first use, again in a forked child (the thread does not survive ``fork``), and at
  exit it is ended the way ``asyncio.run`` ends a loop: its tasks cancelled, which is when the pools
  opened on it close (``_transport._pools``), quietly.

A leaf: asyncio and the standard library only.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import inspect
import os
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = ["TICK_S", "Caller", "loop", "run", "shutdown", "submit"]

T = TypeVar("T")
P = ParamSpec("P")

#: How often a waiting caller wakes up by default: to tick, and to notice a simulated interrupt
#: (``_thread.interrupt_main`` only sets a flag; it does not wake a blocked wait).
TICK_S = 0.1

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use (and again in a forked child)."""
    global _loop, _thread, _pid
    with _lock:
        if _loop is not None and _pid == os.getpid() and _thread is not None and _thread.is_alive():
            return _loop
        new = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(new)
            new.call_soon(ready.set)
            new.run_forever()

        thread = threading.Thread(target=serve, name="flotorch-loop", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread, _pid = new, thread, os.getpid()
        return new


def _on_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread and _pid == os.getpid()


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on the background loop in a copy of this context; its future, without waiting."""
    return _Job(coro, None).future


class Caller:
    """The waiting caller's side of one ``run``: callbacks handed over to run on its thread."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()

    def call(self, callback: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Have ``callback(*args, **kwargs)`` called on the caller's thread, in order (from any thread)."""
        self._calls.put(lambda: callback(*args, **kwargs))

    def wrap(self, callback: Callable[P, object] | None) -> Callable[P, None] | None:
        """``callback`` as a function that hands each call over to the caller's thread (None stays None)."""
        if callback is None:
            return None

        def handed_over(*args: P.args, **kwargs: P.kwargs) -> None:
            self.call(callback, *args, **kwargs)

        return handed_over

    def _done(self) -> None:
        self._calls.put(None)


class _Job:
    """One coroutine on the loop, its task reachable for cancelling, its outcome in ``future``."""

    def __init__(self, coro: Coroutine[Any, Any, T], caller: Caller | None) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._task: asyncio.Task[Any] | None = None
        self._caller = caller
        context = contextvars.copy_context()
        self._loop = background = loop()

        def start() -> None:
            if not self.future.set_running_or_notify_cancel():
                coro.close()
                return
            self._task = background.create_task(coro, context=context)
            self._task.add_done_callback(self._copy_outcome)

        background.call_soon_threadsafe(start)

    def _copy_outcome(self, task: asyncio.Task[Any]) -> None:
        try:
            self.future.set_result(task.result())
        except BaseException as exc:  # a cancelled task gives the CancelledError it ended with
            self.future.set_exception(exc)
        if self._caller is not None:
            self._caller._done()

    def stop(self, every: float) -> Any:
        """Cancel the task and wait until it has ended; its outcome (a value or an exception)."""

        def cancel() -> None:  # scheduled after start(): call_soon_threadsafe keeps the order
            if self._task is not None:
                self._task.cancel()

        self._loop.call_soon_threadsafe(cancel)
        while True:  # in steps, so that a second Ctrl-C stops the waiting too
            try:
                return self.future.result(timeout=every)
            except concurrent.futures.TimeoutError:
                continue
            except BaseException as exc:
                if not self.future.done():
                    raise  # a second Ctrl-C while waiting: the caller insists, stop waiting
                return exc  # what the cancelled task ended with (say BatchCancelled and its result)


def run(
    main: Coroutine[Any, Any, T] | Callable[[Caller], Coroutine[Any, Any, T]],
    *,
    tick: Callable[[], object] | None = None,
    every: float = TICK_S,
    interrupted: Callable[[Any], BaseException] | None = None,
) -> T:
    """Run a coroutine on the background loop and wait for its result, from sync code.

    ``main`` is the coroutine, or a function of the ``Caller`` returning it (to hand callbacks over
    with ``caller.wrap``). While waiting, this thread runs those callbacks and calls ``tick`` at least
    every ``every`` seconds. On ``KeyboardInterrupt`` here, or an exception from a callback, the task is
    cancelled and waited for, then the exception is raised, or for an interrupt what
    ``interrupted(outcome)`` makes of the cancelled task's outcome (its value or exception).
    """
    if _on_loop_thread():
        if inspect.iscoroutine(main):
            main.close()
        raise RuntimeError(
            "a blocking flotorch_nb call was made from its own background loop; await the async "
            "twin instead (abatch, acompare, ainvoke)"
        )
    caller = Caller()
    coro = main if inspect.iscoroutine(main) else main(caller)  # type: ignore[operator]
    job = _Job(coro, caller)
    try:
        while (handed := _next(caller, tick, every)) is not None:
            handed()
    except BaseException as stop:
        outcome = job.stop(every)
        if isinstance(stop, KeyboardInterrupt) and interrupted is not None:
            raise interrupted(outcome) from None
        raise
    result: T = job.future.result()
    return result


def _next(caller: Caller, tick: Callable[[], object] | None, every: float) -> Callable[[], object] | None:
    """The next handed-over callback, or None once the task has ended; ticks while waiting."""
    while True:
        try:
            return caller._calls.get(timeout=every)
        except queue.Empty:
            if tick is not None:
                tick()


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def shutdown(timeout: float = 5.0) -> None:
    """End the loop as ``asyncio.run`` would: cancel its tasks (closing its pools), stop it, join it.
    Registered at exit; the next ``run`` starts a new loop."""
    global _loop, _thread
    with _lock:
        background, thread = _loop, _thread
        _loop = _thread = None
    if background is None or thread is None or _pid != os.getpid() or not thread.is_alive():
        return
    with contextlib.suppress(Exception):  # a pool that will not close must not hang interpreter exit
        asyncio.run_coroutine_threadsafe(_cancel_all(), background).result(timeout)
    background.call_soon_threadsafe(background.stop)
    thread.join(timeout)
    if not thread.is_alive():
        background.close()


def _forget_after_fork() -> None:
    """In a forked child the loop's thread is gone and the lock may be held by a thread that is gone
    too: start afresh (the parent's loop is left alone; its pools are the parent's)."""
    global _lock, _loop, _thread
    _lock = threading.Lock()
    _loop = _thread = None


atexit.register(shutdown)
os.register_at_fork(after_in_child=_forget_after_fork)
