"""One background event loop per process, for the blocking ``llm.batch()`` and for Dask tasks.

The sync path must never call ``asyncio.run()`` in the caller's thread (Jupyter's kernel already runs
a loop there), so a batch runs on this loop in a daemon thread while the caller waits, draws the
progress bar and can be interrupted. The loop lives as long as the process, so a client's async
connection pool on it is reused by every batch and every Dask partition of the process. At exit (or
after a fork, where the thread does not exist) it is shut down like ``asyncio.run`` ends a loop: its
tasks are cancelled, which closes the pools opened on it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..llm import FlotorchLLM

__all__ = ["background_loop", "close_sender", "shutdown"]

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use (and again in a forked child)."""
    global _loop, _thread, _pid
    with _lock:
        if _loop is not None and _pid == os.getpid() and _thread is not None and _thread.is_alive():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name="flotorch-batch-loop", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread, _pid = loop, thread, os.getpid()
        return loop


def close_sender(sender: FlotorchLLM, timeout: float = 5.0) -> None:
    """Close a batch sender's pools, the one on the background loop included (from any other thread)."""
    sender.close()
    loop, thread = _loop, _thread
    if loop is None or thread is None or not thread.is_alive() or _pid != os.getpid():
        return
    future = asyncio.run_coroutine_threadsafe(sender.aclose(), loop)
    if threading.current_thread() is not thread:  # waiting from the loop's own thread would deadlock
        with contextlib.suppress(Exception):
            future.result(timeout)


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def shutdown(timeout: float = 5.0) -> None:
    """Cancel the loop's tasks (closing its pools), stop it and join its thread."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop = _thread = None
    if loop is None or thread is None or _pid != os.getpid() or not thread.is_alive():
        return
    with contextlib.suppress(Exception):  # a pool that will not close must not hang interpreter exit
        asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
    if not thread.is_alive():
        loop.close()


atexit.register(shutdown)
