"""Pure fault injection: what can go wrong between a client and the gateway, queued for tests.

A :class:`Fault` describes one misbehaviour (an HTTP error, a slow answer, a broken stream...). The
:class:`FaultPlan` is a FIFO queue of faults that the app consults once per valid chat-completion
request: the first fault whose ``model`` filter matches is applied and its ``times`` counter goes
down; a fault with ``times`` left stays at the head of the line. Nothing here does I/O; the plan
holds a lock only because tests add faults from their own thread while the server thread takes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from ._wire import DONE_EVENT, MALFORMED_EVENT, inband_error_event, number_or

__all__ = ["Fault", "FaultPlan", "stream_script"]


_Chunks = Annotated[int, Field(ge=0)] | None


# Strict: ``True`` is not a status code nor a chunk count, ``"1"`` is not a number of seconds.
@dataclass(frozen=True, config=ConfigDict(strict=True))
class Fault:
    """One injected misbehaviour; fields combine (``delay`` then the first effect that applies).

    Effects, in the order they are considered:

    - ``delay``: seconds to wait before answering at all (ends early if the client goes away).
    - ``status``: answer with this HTTP status and an OpenAI-style JSON error carrying ``message``
      (or an HTML error page when ``html``; ``html`` alone means 502). ``retry_after`` sets the
      ``Retry-After`` header (seconds or an HTTP date), with or without a status.
    - ``garbage``: 200 with a body that is not JSON (declared as ``application/json``).
    - ``body``: 200 with exactly this JSON body (no choices, empty choices, ``usage: null``...).
    - ``omit_usage`` / ``null_usage``: a normal answer without ``usage`` / with ``usage: null``
      (streams: no usage chunk / a usage chunk whose ``usage`` is null).
    - streams only (a non-streaming request gets the normal answer, except as noted):
      ``cut_after=N`` sends N chunks then breaks the connection mid-body (the client sees an
      incomplete chunked body; a non-streaming answer is cut halfway through its JSON);
      ``end_without_done=N`` sends N chunks and ends cleanly without ``[DONE]``;
      ``malformed_after=N`` sends ``data: {not json`` after N chunks, then carries on;
      ``inband_error`` sends ``data: {"error": {...}}`` after the first chunk and ends (a
      non-streaming request gets a 200 whose body is that error object).

    ``times`` is how many matching requests the fault applies to; ``model`` restricts it to requests
    for that model. Chunk counts include the first (role) chunk. A field of the wrong type or out of
    range is a ``ValueError`` (pydantic's ``ValidationError``) naming the field.
    """

    status: Annotated[int, Field(ge=100, le=599)] | None = None
    message: str | None = None
    html: bool = False
    retry_after: str | None = None
    delay: Annotated[float, Field(ge=0, le=600)] = 0.0
    garbage: bool = False
    body: dict[str, Any] | None = None
    omit_usage: bool = False
    null_usage: bool = False
    cut_after: _Chunks = None
    end_without_done: _Chunks = None
    malformed_after: _Chunks = None
    inband_error: str | None = None
    times: Annotated[int, Field(ge=1)] = 1
    model: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form (field names as keys); raise ValueError on bad input."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a fault must be a JSON object, not {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        if number_or(values.get("retry_after")) is not None:
            values["retry_after"] = _number_text(values["retry_after"])
        try:
            return cls(**values)
        except ValidationError as exc:  # one line per field, without pydantic's links
            said = (f"fault field {e['loc'][0]!r}: {e['msg']}, not {e['input']!r}" for e in exc.errors())
            raise ValueError("; ".join(said)) from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this fault, without fields left at their defaults."""
        defaults = Fault()
        return {k: v for k, v in asdict(self).items() if v != getattr(defaults, k) or k == "times"}

    def matches(self, model: str) -> bool:
        """Whether this fault applies to a request for ``model``."""
        return self.model is None or self.model == model


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class FaultPlan:
    """The FIFO queue of pending faults shared by a test (adding) and the server thread (taking)."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        # Each entry is [fault, remaining uses]; a list so that taking one use is a cheap decrement.
        self._queue: list[list[Any]] = [[fault, fault.times] for fault in faults]

    def add(self, *faults: Fault) -> None:
        """Queue faults; each applies to the next ``fault.times`` matching requests, in order."""
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault, got {type(fault).__name__}")
        with self._lock:
            self._queue.extend([fault, fault.times] for fault in faults)

    def clear(self) -> int:
        """Drop every pending fault; return how many there were."""
        with self._lock:
            count = len(self._queue)
            self._queue.clear()
            return count

    def take(self, model: str) -> Fault | None:
        """Consume one use of the first pending fault matching ``model``, or return None."""
        if not self._queue:  # fast path for the common case; no lock needed to see emptiness
            return None
        with self._lock:
            for index, entry in enumerate(self._queue):
                fault: Fault = entry[0]
                if fault.matches(model):
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._queue[index]
                    return fault
        return None

    def pending(self) -> list[Fault]:
        """The faults still queued, first to apply first (each listed once)."""
        with self._lock:
            return [entry[0] for entry in self._queue]

    def __len__(self) -> int:
        return len(self._queue)

    def __repr__(self) -> str:
        return f"FaultPlan({self.pending()!r})"


def stream_script(events: list[str], fault: Fault | None) -> tuple[list[str], bool]:
    """The SSE events to send for a stream under ``fault``, and whether to break the connection after.

    ``events`` are a normal answer's events without ``[DONE]``; the result decides what a client
    observes: a cut, a clean end without ``[DONE]``, a malformed line or an in-band error.
    """
    if fault is None:
        return [*events, DONE_EVENT], False
    if fault.cut_after is not None:
        return events[: fault.cut_after], True
    if fault.end_without_done is not None:
        return events[: fault.end_without_done], False
    if fault.inband_error is not None:
        return [*events[:1], inband_error_event(fault.inband_error)], False
    if fault.malformed_after is not None:
        n = fault.malformed_after
        return [*events[:n], MALFORMED_EVENT, *events[n:], DONE_EVENT], False
    return [*events, DONE_EVENT], False
