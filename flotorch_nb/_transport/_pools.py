"""The connection pools of one ``FlotorchLLM``, the calls in flight on them, and when they are closed.

- One sync httpx2 client, made on first use (or the ``http_client`` the caller injected).
- One async pool per event loop, because a connection belongs to the loop that opened it: aiohttp
  (``_aio``) for live calls; httpx2 in record/replay modes, whose cassette transports are httpx2's;
  or the ``async_http_client`` the caller injected, for every loop.
- The count of calls in flight, so that ``close_when_idle`` closes the pools only once they are done.
- Closing each async pool on its own loop, at the latest when that loop ends (``asyncio.run`` or
  ``anyio.run`` returning, ``loop.close()`` by its owner, the interpreter exiting) and as soon as its
  client is dropped, so the seed's ``asyncio.run(main())`` leaves no socket open on a dead loop and
  aiohttp has nothing to warn about.

A pool closed under a call in flight makes that call fail (the send loops say so and do not retry);
the next call simply makes a new pool.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .._config import Settings

if TYPE_CHECKING:
    import asyncio

    import httpx2

    from ._boundary import AsyncPool

__all__ = ["Pools", "close_when_loop_ends", "forget_closed_loops", "release", "release_soon"]


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
        # A client dropped with pools open: each is closed on its own loop (or at that loop's end).
        # Not at exit: the loops' own ends, or _close_at_exit, see to that with the interpreter whole.
        weakref.finalize(self, _release_all, self.by_loop).atexit = False

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
        pools = dict(self.by_loop)
        self.by_loop.clear()  # in place: the finalizer holds this very dict
        current = asyncio.get_running_loop()
        for loop, pool in pools.items():
            if loop is current:
                await release(loop, pool)
            elif loop.is_running():  # a pool belongs to its loop: close it there, not from here
                asyncio.run_coroutine_threadsafe(release(loop, pool), loop)
            # a closed loop's pool was closed at its end; a stopped one will be, when it ends


#: Closes begun outside the caller's await (close_when_idle, dropped clients), referenced until done
#: (asyncio holds tasks weakly) and awaited by their loop's end so none is cut off half-way.
_CLOSING: set[asyncio.Task[None]] = set()

#: Per event loop: the idle task that closes that loop's pools at its end, and the pools still open on
#: it. Held strongly: a pool whose client was dropped is still closed when its loop ends.
_LOOP_POOLS: dict[asyncio.AbstractEventLoop, tuple[asyncio.Task[None], set[Any]]] = {}
_LOOP_POOLS_LOCK = threading.Lock()
#: Loops whose ``close`` we wrapped (once each).
_HOOKED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _release_all(by_loop: dict[asyncio.AbstractEventLoop, Any]) -> None:
    pools = list(by_loop.items())
    by_loop.clear()
    for loop, pool in pools:
        release_soon(loop, pool)


def forget_closed_loops() -> None:
    """Forget loops that were closed without us noticing (a loop whose ``close`` could not be wrapped):
    nothing can be awaited on them any more. Also done lazily by every new pool."""
    with _LOOP_POOLS_LOCK:
        for gone in [lp for lp in _LOOP_POOLS if lp.is_closed()]:
            del _LOOP_POOLS[gone]


def close_when_loop_ends(loop: asyncio.AbstractEventLoop, pool: Any) -> None:
    """Close ``pool`` (anything with ``aclose()``) on ``loop`` before that loop ends, however it ends.

    - ``asyncio.run()`` / ``anyio.run`` cancel leftover tasks before closing the loop: one idle task
      per loop uses that moment to close the pools opened on it.
    - A loop closed by its owner (``loop.close()`` without cancelling anything): its ``close`` is
      wrapped so that the same task is cancelled and run to its end first.
    - A loop left open at interpreter exit (a kernel shut down without closing its loop): ``atexit``.

    Without this the sockets of a pool stay open on a dead loop, where nothing can close them any
    more, and aiohttp prints "Unclosed client session" / "Unclosed connector" at exit.
    """
    forget_closed_loops()
    with _LOOP_POOLS_LOCK:  # each loop runs in its own thread, and they share this registry
        entry = _LOOP_POOLS.get(loop)
        if entry is None:
            task = loop.create_task(_close_at_loop_end(loop))
            # A loop that is only dropped, never closed, would print "Task was destroyed but it is
            # pending!" for this idle helper; asyncio's own internal helpers silence it the same way.
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            entry = _LOOP_POOLS[loop] = (task, set())
            _hook_close(loop)
        entry[1].add(pool)


async def release(loop: asyncio.AbstractEventLoop, pool: Any) -> None:
    """Close ``pool`` (on ``loop``, the running one) and stop tracking it for the loop's end."""
    try:
        await pool.aclose()
    finally:
        with _LOOP_POOLS_LOCK:
            entry = _LOOP_POOLS.get(loop)
            if entry is not None:
                entry[1].discard(pool)


def release_soon(loop: asyncio.AbstractEventLoop, pool: Any) -> None:
    """Close ``pool`` on its own ``loop`` from anywhere (a finalizer, another thread): a task on that
    loop, awaited by the loop's end if it has not finished by then. On a closed loop there is nothing
    to do: its end closed the pool."""

    def start() -> None:
        task = loop.create_task(release(loop, pool))
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    if not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed meanwhile, by another thread
            loop.call_soon_threadsafe(start)


async def _close_at_loop_end(loop: asyncio.AbstractEventLoop) -> None:
    import asyncio

    try:
        await loop.create_future()  # never set: only the loop's end (a cancellation) ends this wait
    except BaseException as end:
        with _LOOP_POOLS_LOCK:
            _, pools = _LOOP_POOLS.pop(loop, (None, set()))
        if isinstance(end, GeneratorExit):  # dropped pending, its loop closed behind our back:
            raise  # nothing can be awaited any more
        for pool in list(pools):
            with contextlib.suppress(Exception):  # one pool failing to close must not keep the others
                await pool.aclose()
        me = asyncio.current_task()
        closing = [task for task in _CLOSING if task.get_loop() is loop and task is not me]
        if closing:
            await asyncio.wait(closing)
        raise


def _end(loop: asyncio.AbstractEventLoop) -> None:
    """Run the loop-end task of a loop that is neither running nor closed (its owner is closing it)."""
    with _LOOP_POOLS_LOCK:
        entry = _LOOP_POOLS.get(loop)
    if entry is None or loop.is_running() or loop.is_closed():
        return
    import asyncio

    task = entry[0]
    task.cancel()
    with contextlib.suppress(BaseException):  # closing must go on whatever a pool did
        loop.run_until_complete(asyncio.wait([task]))


def _hook_close(loop: asyncio.AbstractEventLoop) -> None:
    """Wrap ``loop.close`` (on this loop object only) so that our pools are closed just before."""
    if loop in _HOOKED:
        return
    original = loop.close

    @functools.wraps(original)
    def close() -> None:
        _end(loop)
        original()

    try:
        loop.close = close  # type: ignore[method-assign]
    except AttributeError:  # a loop type without an instance __dict__ (uvloop): atexit still closes
        return
    _HOOKED.add(loop)


@atexit.register
def _close_at_exit() -> None:
    # Loops still open at exit (a kernel that stopped its loop without closing it): close our pools on
    # them now, while the interpreter is whole, rather than leave the sockets to garbage collection.
    with _LOOP_POOLS_LOCK:
        loops = list(_LOOP_POOLS)
    for loop in loops:
        _end(loop)
