"""The connection pools of one ``FlotorchLLM``, the calls in flight on them, and when they are closed.

- One sync httpx2 client, made on first use (or the ``http_client`` the caller injected).
- One async pool per event loop, because a connection belongs to the loop that opened it: aiohttp
  (``_aio``) for live calls; httpx2 in record/replay modes, whose cassette transports are httpx2's;
  or the ``async_http_client`` the caller injected, for every loop.
- The count of calls in flight, so that ``close_when_idle`` closes the pools only once they are done.
- Closing each async pool on its own loop, at the latest when ``asyncio.run`` (or ``anyio.run``) ends
  that loop, so the seed's ``asyncio.run(main())`` leaves no socket open on a dead loop.

A pool closed under a call in flight makes that call fail (the send loops say so and do not retry);
the next call simply makes a new pool.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from .._config import Settings

if TYPE_CHECKING:
    import asyncio

    import httpx2

    from ._boundary import AsyncPool

__all__ = ["Pools", "close_when_loop_ends", "forget_closed_loops"]


class Pools:
    """The pools and in-flight count behind one ``FlotorchLLM`` (its ``close``/``aclose``/...)."""

    def __init__(
        self,
        settings: Settings,
        http_client: httpx2.Client | None,
        async_http_client: httpx2.AsyncClient | None,
    ) -> None:
        self._settings = settings
        #: The sync client (None until the first sync call, and again after ``close()``).
        self.client = http_client
        self._owns_client = http_client is None
        self._injected: AsyncPool | None = None
        #: The async client the caller injected, if any (a batch's sending twin shares it).
        self.injected_async_client = async_http_client
        if async_http_client is not None:
            from ._httpx import HttpxPool

            self._injected = HttpxPool(async_http_client, owned=False)
        #: The async pools we made, by the loop they belong to.
        self.by_loop: dict[asyncio.AbstractEventLoop, AsyncPool] = {}
        self._lock = threading.Lock()
        self._calls_lock = threading.Lock()
        self.in_flight = 0
        self._close_on_idle = False

    def sync(self) -> httpx2.Client:
        """The sync client, made now if there is none."""
        with self._lock:
            if self.client is None:
                from ._httpx import make_client

                self.client = make_client(self._settings)
            return self.client

    def for_loop(self) -> AsyncPool:
        """The running loop's async pool, made now if there is none."""
        if self._injected is not None:
            return self._injected
        import asyncio  # imported by the first async call, as everything async is

        loop = asyncio.get_running_loop()
        pool = self.by_loop.get(loop)
        if pool is None:
            with self._lock:  # threads that each run a loop may share this client
                # Pools of loops that are gone cannot be awaited any more; forget them.
                for stale in [lp for lp in self.by_loop if lp.is_closed()]:
                    del self.by_loop[stale]
                pool = self.by_loop[loop] = self._make_async()
            close_when_loop_ends(loop, pool)
        return pool

    def _make_async(self) -> AsyncPool:
        if self._settings.cassette_mode:
            from ._httpx import HttpxPool, make_async_client

            return HttpxPool(make_async_client(self._settings), owned=True)
        from ._aio import AioPool

        return AioPool(self._settings)

    # -- calls in flight ------------------------------------------------------------------------
    def tracked(self) -> Pools:
        """``with pools.tracked():`` counts a call as in flight for the duration of the block (a plain
        context manager rather than a generator one: it wraps every call)."""
        return self

    def __enter__(self) -> None:
        with self._calls_lock:
            self.in_flight += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._calls_lock:
            self.in_flight -= 1
        if self._close_on_idle:
            self._close_if_idle()

    def close_when_idle(self) -> None:
        """Close the pools now if no call is in flight, else as soon as the last one ends (each time
        the client falls idle again); see ``FlotorchLLM.close_when_idle``."""
        with self._calls_lock:
            self._close_on_idle = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        with self._calls_lock:  # no call can begin between the check and the close
            if self.in_flight or not self._close_on_idle:
                return
            self.close()
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # async pools are closed by the end of their own loops
        task = loop.create_task(self._aclose_if_idle())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def _aclose_if_idle(self) -> None:
        # Checked again on the loop: a call begun since is using the pool. From here until aclose()
        # has let go of its pools nothing awaits, so no call on this loop can slip in.
        if not self.in_flight:
            await self.aclose()

    # -- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the sync pool (an injected client is left to its owner)."""
        with self._lock:
            if self.client is not None and self._owns_client:
                self.client.close()
                self.client = None

    async def aclose(self) -> None:
        """Close every pool we made (the sync one too), each async one on its own loop."""
        import asyncio

        self.close()
        pools, self.by_loop = self.by_loop, {}
        current = asyncio.get_running_loop()
        for loop, pool in pools.items():
            if loop is current:
                await pool.aclose()
            elif loop.is_running():  # a pool belongs to its loop: close it there, not from here
                asyncio.run_coroutine_threadsafe(pool.aclose(), loop)
            # a closed loop's pool was closed by _close_at_loop_end; a stopped one cannot be reached


#: close_when_idle()'s scheduled closes, kept referenced until done (asyncio holds tasks weakly).
_CLOSING: set[asyncio.Task[None]] = set()

#: Per event loop: the idle task that closes that loop's pools at its end, and the pools to close.
_LOOP_POOLS: dict[asyncio.AbstractEventLoop, tuple[asyncio.Task[None], weakref.WeakSet[Any]]] = {}
_LOOP_POOLS_LOCK = threading.Lock()


def forget_closed_loops() -> None:
    """Forget loops that were closed without cancelling their tasks (not ``asyncio.run``'s way): their
    pools were already closed or are closed as they are dropped. Also done lazily by every new pool."""
    with _LOOP_POOLS_LOCK:
        for gone in [lp for lp in _LOOP_POOLS if lp.is_closed()]:
            del _LOOP_POOLS[gone]


def close_when_loop_ends(loop: asyncio.AbstractEventLoop, pool: Any) -> None:
    """Close ``pool`` (anything with ``aclose()``) when ``asyncio.run()`` or ``anyio.run`` ends ``loop``.

    Those runners cancel leftover tasks before closing the loop; one idle task per loop uses that
    moment to close the pools opened on it. Without it the seed's ``asyncio.run(main())`` leaves its
    keep-alive sockets open on a dead loop, where they can no longer be closed.
    """
    # A loop closed by hand (without cancelling its tasks) never ran our task's cleanup: forget it.
    forget_closed_loops()
    with _LOOP_POOLS_LOCK:  # each loop runs in its own thread, and they share this registry
        entry = _LOOP_POOLS.get(loop)
        if entry is None:
            pools: weakref.WeakSet[Any] = weakref.WeakSet()
            task = loop.create_task(_close_at_loop_end(loop, pools))
            # Such a hand-closed loop would also print "Task was destroyed but it is pending!" for
            # this idle helper; asyncio's own internal helpers silence it the same way.
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            entry = _LOOP_POOLS[loop] = (task, pools)
        entry[1].add(pool)


async def _close_at_loop_end(loop: asyncio.AbstractEventLoop, pools: weakref.WeakSet[Any]) -> None:
    try:
        await loop.create_future()  # never set: only the runner's final cancellation ends this wait
    finally:
        with _LOOP_POOLS_LOCK:
            _LOOP_POOLS.pop(loop, None)
        for pool in list(pools):
            await pool.aclose()
