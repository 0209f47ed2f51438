"""Admission: what every attempt passes before it goes out, and settles after it.

A *gate* holds one limit that concurrent calls share: a token or money budget, a rate limit. Before
each attempt the send loop asks every gate to admit it with its worst case (``CallRequest``: the
prompt estimate with tools and schema, plus the output cap). A gate answers with

- a ``Ticket``: admitted, and its worst case is reserved until the ticket is settled;
- a number of seconds: not now, ask again then (a rate window that is full);
- ``UNTIL_SETTLED``: not while other calls hold reservations; ask again when one settles;
- or it raises a ``FlotorchError`` (``BudgetExceededError``): the call cannot fit even with nothing
  in flight, so it is refused before anything is sent.

After the attempt the loop settles every ticket with what the attempt really spent (``Spent``: the
response's usage, or the error; ``None`` when the attempt never left). Settling wakes every call
waiting for ``UNTIL_SETTLED``, in any thread or event loop. Gates are asked in order; when a later
one says "not now", the tickets already taken are handed back (settled with ``None``) before
waiting, so a waiting call never holds one limit while it waits for another.

A gate whose limit lives elsewhere (the Dask scheduler's rate limiter, reached over RPC) may also
define ``async def aadmit(request)`` with the same answers; the async shell then awaits it instead of
calling ``admit`` (``AsyncGate``).

Where gates come from: ``client.hooks.gates`` (the client's own, copied by ``copy()``), and
``gated(*gates)`` around a block of calls (a batch's rate limiter, for its items alone: a context
variable, so it follows the tasks created inside the block). Pure apart from the waiting, which the
two shells do their own way (``admit`` / ``aadmit``).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import itertools
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping

    from ._response import LLMResponse

__all__ = [
    "UNTIL_SETTLED",
    "Admitted",
    "Asked",
    "AsyncGate",
    "Gate",
    "Spent",
    "Ticket",
    "Waiters",
    "aadmit",
    "admit",
    "gated",
    "gates_of",
    "remote",
    "settle",
    "wake",
]

#: A gate's answer meaning "not while calls in flight hold the limit": wait for one to settle.
UNTIL_SETTLED = math.inf
#: The longest a waiting call sleeps before asking again anyway (a settle in a process we cannot
#: hear, a clock that moved): waiting is driven by settles, this is only a backstop.
RECHECK_S = 1.0


class Asked(Protocol):
    """What a gate is asked with: ``_pipeline._hooks.CallRequest`` is one (a protocol here, so that this
    module and ``_hooks``, whose ``Hooks.gates`` holds gates, do not import each other)."""

    @property
    def model(self) -> str: ...
    @property
    def body(self) -> Mapping[str, Any]: ...
    @property
    def stream(self) -> bool: ...
    @property
    def estimated_tokens(self) -> int: ...
    @property
    def label(self) -> str | None: ...


class Ticket:
    """What one gate reserved for one attempt; opaque to everyone but that gate."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Spent:
    """What an attempt really spent, for ``Gate.settle``: its answer, or why it has none."""

    request: Asked
    response: LLMResponse | None = None
    error: BaseException | None = None
    #: Tokens spent: the gateway's count, else an estimate (0: the attempt reached no model).
    tokens: int = 0
    #: Whether ``tokens`` is the gateway's count.
    known: bool = False
    #: The answer's rate-limit headers (``Retry-After``, ``x-ratelimit-*``; lower-case), if it had any.
    headers: Mapping[str, str] | None = None


class Gate(Protocol):
    """One shared limit (see the module docstring)."""

    def admit(self, request: Asked) -> Ticket | float:
        """A ticket (admitted and reserved), seconds to wait, or ``UNTIL_SETTLED``; raises to refuse."""
        ...

    def settle(self, ticket: Ticket, spent: Spent | None) -> None:
        """The attempt ended having spent ``spent`` (None: it was never sent). Must not raise."""
        ...


class AsyncGate(Gate, Protocol):
    """A gate that can also be asked without blocking the event loop (its limit is remote)."""

    async def aadmit(self, request: Asked) -> Ticket | float:
        """``admit`` for the async shell."""
        ...


_SCOPED: contextvars.ContextVar[tuple[Gate, ...]] = contextvars.ContextVar("flotorch_gates", default=())


@contextlib.contextmanager
def gated(*gates: Gate) -> Iterator[None]:
    """Every attempt made inside this block (and in tasks it starts) also passes ``gates``."""
    token = _SCOPED.set(_SCOPED.get() + gates)
    try:
        yield
    finally:
        _SCOPED.reset(token)


def gates_of(client_gates: Sequence[Gate]) -> tuple[Gate, ...]:
    """The gates an attempt passes now: the client's, then those of the enclosing ``gated`` blocks."""
    scoped = _SCOPED.get()
    if not scoped:
        return tuple(client_gates)
    if not client_gates:  # a batch's item on a client without gates: the block's own tuple, no copy
        return scoped
    return (*client_gates, *scoped)


#: What ``admit``/``aadmit`` hand back: the tickets taken, gate by gate, for ``settle``.
Admitted = tuple[tuple[Gate, Ticket], ...]


#: A task waiting on its event loop: the loop, and the future that wakes it.
Waiter = tuple["asyncio.AbstractEventLoop", "asyncio.Future[None]"]


class Waiters(collections.deque[Waiter]):
    """Tasks on any threads' event loops waiting their turn, first come first served.

    Guarded by its owner's lock (``lock``): ``take`` is called holding it, ``wake`` after letting it go.
    A deque itself, so that an owner asks "is anyone waiting?" (``if waiters``) without a call: it
    asks at every settle. Serves ``_Settles`` (every waiter woken at a settle) and the ``"auto"``
    window (``flotorch_nb.batch._auto``: one woken per freed place).
    """

    __slots__ = ("lock",)

    def __init__(self, lock: contextlib.AbstractContextManager[Any]) -> None:
        super().__init__()
        self.lock = lock

    def take(self, n: int | None = None) -> list[Waiter]:
        """The first ``n`` waiters (None: all), out of the line; call it holding ``lock``."""
        if n is None or n >= len(self):
            taken = list(self)
            self.clear()
            return taken
        return [self.popleft() for _ in range(n)]

    async def wait(self, timeout: float, ready: Callable[[], bool]) -> None:
        """Wait in line until woken, or ``timeout`` seconds. ``ready`` is asked (holding ``lock``)
        once in line: when it is true the turn has come already and nothing is awaited. In line
        before asking, so that a wake-up between the caller's last look and now is not missed."""
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self.lock:
            self.append(waiter)
            if ready():
                self.pop()  # the last in line, as nobody could join while the lock was held
                return
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self.lock, contextlib.suppress(ValueError):  # woken: already out of the line
                self.remove(waiter)


def wake(waiters: list[Waiter]) -> None:
    """Wake ``waiters`` (taken out of a line by ``Waiters.take``), from any thread."""
    for loop, future in waiters:
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile has nobody to wake
            loop.call_soon_threadsafe(_wake, future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Settles:
    """A counter that goes up at every settle, with a way to wait for it from threads and loops."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._versions = itertools.count(1)
        self.version = 0
        #: Threads in ``wait`` and loops' tasks in ``await_``: a settle with none of them (nearly
        #: every settle) takes no lock. A waiter registers before it reads the version and a bump
        #: writes the version before it looks for waiters, so no wake-up is missed.
        self._sleeping = 0
        self._waiters = Waiters(self._cond)

    def bump(self) -> None:
        self.version = next(self._versions)  # atomic; waiters only ask "has it changed?"
        if not self._sleeping and not self._waiters:
            return
        with self._cond:
            self._cond.notify_all()
            waiters = self._waiters.take()
        wake(waiters)

    def wait(self, seen: int, timeout: float) -> None:
        with self._cond:
            self._sleeping += 1
            try:
                if self.version == seen:
                    self._cond.wait(timeout)
            finally:
                self._sleeping -= 1

    async def await_(self, seen: int, timeout: float) -> None:
        await self._waiters.wait(timeout, lambda: self.version != seen)


_SETTLES = _Settles()


def _try(gates: Sequence[Gate], request: Asked) -> tuple[Admitted, float]:
    """Ask every gate; all tickets and no wait, or no tickets and how long to wait."""
    if len(gates) == 1:  # the common case (a batch's one gate): nothing taken to hand back
        gate = gates[0]
        answer = gate.admit(request)
        if isinstance(answer, Ticket):
            return ((gate, answer),), 0.0
        return (), max(0.001, float(answer))
    taken: list[tuple[Gate, Ticket]] = []
    try:
        for gate in gates:
            answer = gate.admit(request)
            if isinstance(answer, Ticket):
                taken.append((gate, answer))
                continue
            settle(tuple(taken), None)
            return (), max(0.001, float(answer))  # 0 would read as admitted
    except BaseException:
        settle(tuple(taken), None)
        raise
    return tuple(taken), 0.0


def remote(gate: Gate) -> bool:
    """Whether ``gate`` is asked by awaiting (it has ``aadmit``: the Dask scheduler's limit)."""
    return getattr(type(gate), "aadmit", None) is not None


async def _atry(gates: Sequence[Gate], request: Asked) -> tuple[Admitted, float]:
    """``_try`` awaiting the gates that answer asynchronously."""
    taken: list[tuple[Gate, Ticket]] = []
    try:
        for gate in gates:
            if remote(gate):
                answer = await cast("AsyncGate", gate).aadmit(request)
            else:
                answer = gate.admit(request)
            if isinstance(answer, Ticket):
                taken.append((gate, answer))
                continue
            settle(tuple(taken), None)
            return (), max(0.001, float(answer))
    except BaseException:
        settle(tuple(taken), None)
        raise
    return tuple(taken), 0.0


def admit(gates: Sequence[Gate], request: Asked) -> Admitted:
    """Block until every gate admits ``request``; the tickets, for ``settle``.

    A blocking call made on a thread that runs an event loop (a ``%%flotorch`` cell on the kernel's
    loop) cannot wait for calls in flight on that same loop (a chat panel's reply): they can only
    settle once this thread returns to its loop. There it waits ``LOOP_THREAD_WAIT_S`` at most for
    other threads to settle, then refuses with ``BudgetExceededError`` instead of hanging the kernel.
    """
    if not gates:
        return ()
    deadline: float | None = None
    while True:
        seen = _SETTLES.version
        taken, wait = _try(gates, request)
        if wait == 0.0:
            return taken
        if wait == UNTIL_SETTLED:
            if _runs_a_loop():
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + LOOP_THREAD_WAIT_S
                if now >= deadline:
                    raise _held_on_this_loop()
                _SETTLES.wait(seen, min(RECHECK_S, deadline - now))
            else:
                _SETTLES.wait(seen, RECHECK_S)
        else:
            time.sleep(min(wait, RECHECK_S))


#: How long a blocking call on an event loop's own thread waits for a limit held by calls in flight.
LOOP_THREAD_WAIT_S = 5.0


def _runs_a_loop() -> bool:
    """Whether this thread is running an event loop (asyncio is only asked if it was ever imported)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _held_on_this_loop() -> BaseException:
    from ._errors import BudgetExceededError

    return BudgetExceededError(
        "not sent: the budget is held by calls in flight on this thread's event loop (a chat panel's "
        "reply, or a task of this notebook), which can only finish once this blocking call returns. "
        "Wait for them and run it again, or use the async call (await llm.ainvoke(...))."
    )


async def aadmit(gates: Sequence[Gate], request: Asked) -> Admitted:
    """``admit`` on the running event loop (waiting never blocks the loop)."""
    if not gates:
        return ()
    import asyncio

    awaited = any(map(remote, gates))
    while True:
        seen = _SETTLES.version
        taken, wait = await _atry(gates, request) if awaited else _try(gates, request)
        if wait == 0.0:
            return taken
        if wait == UNTIL_SETTLED:
            await _SETTLES.await_(seen, RECHECK_S)
        else:
            await asyncio.sleep(min(wait, RECHECK_S))


def settle(admitted: Admitted, spent: Spent | None) -> None:
    """Settle every ticket of one attempt (``None``: it was never sent) and wake the waiting calls."""
    if not admitted:
        return
    for gate, ticket in admitted:
        gate.settle(ticket, spent)
    _SETTLES.bump()
