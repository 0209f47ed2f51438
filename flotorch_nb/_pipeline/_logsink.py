"""The call log's plug in the pipeline: the one process-wide sink every finished call is handed to.

``_call.end`` (an answer, a failure, a stop) and the client's answer-cache hits hand each finished
call here, when a sink is installed (``flotorch_nb.calllog``: ``FLOTORCH_LOG``, ``%flotorch log on``).
Process-wide rather than per client, so that a log turned on in a notebook also records the calls
of clients built before it, and of those built by code that never heard of it. With no sink the cost
is one attribute read per call. A pure leaf: the sink's type is a protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._response import LLMResponse, Source
    from .._transport import Call

__all__ = ["ENV_LOG", "Sink", "cached", "current", "env_seen"]

#: The call log's file, read when a client is built (``flotorch_nb.calllog.from_env``).
ENV_LOG = "FLOTORCH_LOG"


class Sink(Protocol):
    """What receives finished calls; ``record`` must be quick and must never raise."""

    def record(
        self,
        call: Call,
        outcome: LLMResponse | BaseException,
        latency_s: float,
        source: Source,
        partial_chars: int,
    ) -> None: ...


#: The installed sink, or None (set by ``flotorch_nb.calllog``).
current: Sink | None = None
#: The ``FLOTORCH_LOG`` value acted on last: a client built while it still holds this value need
#: not import the call log at all (``import flotorch_nb`` stays without it).
env_seen: str | None = None


def cached(call: Call, response: LLMResponse) -> None:
    """Hand over a call the answer cache answered (no hook sees one: nothing was sent)."""
    sink = current
    if sink is not None:
        sink.record(call, response, response.latency_s, "cache", 0)
