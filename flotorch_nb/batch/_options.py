"""``BatchOptions``: a batch's options, checked before any I/O.

Its own module because both sides of a run read it: the runner (``_runner``) runs with it and the
``BatchResult`` (``_result``) keeps it (``to_pandas`` asks for ``parsed``, a re-run reuses it), and
neither of those should import the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._errors import ConfigurationError
from ..schema import normalize_response_format
from ._limits import Limiter, check_limit

if TYPE_CHECKING:
    from .._admission import Gate

__all__ = ["AUTO", "AutoWindow", "BatchOptions", "check_concurrency"]

#: ``concurrency="auto"``: find the gateway key's limit (``_auto``).
AUTO: Literal["auto"] = "auto"


class AutoWindow(Protocol):
    """Where ``concurrency="auto"`` keeps its window: this process's (``_auto.controller_for``) or a
    Dask cluster's (on the scheduler, ``flotorch_nb.dask``)."""

    def gate(self, rate: float | None = None) -> Gate:
        """One batch's gate on the window (``rate``: its ``rpm`` per second, capping its places)."""
        ...

    @property
    def ceiling(self) -> int:
        """The most requests the window ever lets be in flight (the batch starts that many workers)."""
        ...

    @property
    def settled_at(self) -> int:
        """The window's size now."""
        ...


def check_concurrency(value: object) -> int | Literal["auto"]:
    """``concurrency``: ``"auto"`` or a whole number >= 1 (``ConfigurationError`` otherwise)."""
    if value == AUTO and isinstance(value, str):
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"concurrency must be a whole number >= 1 or 'auto', got {value!r}")
    return value


@dataclass(frozen=True)
class BatchOptions:
    """A batch's options, checked before any I/O (``llm.batch`` documents them)."""

    template: str | None = None
    concurrency: int | Literal["auto"] = 16
    rpm: float | None = None
    tpm: float | None = None
    on_error: str = "keep"
    progress: bool = True
    cache: Any = None
    response_format: Any = None
    tools: list[Any] | None = None
    #: An in-flight limit shared with other runs on the same event loop (an ``asyncio.Semaphore``):
    #: each item holds one of its places while it is sent, so runs going at once (an evaluation's
    #: answer and judge batches) keep at most that many items in flight between them. ``concurrency``
    #: still bounds this run's own workers.
    slots: AbstractAsyncContextManager[Any] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    model_class: type[Any] | None = None
    #: A limiter shared beyond this run (``flotorch_nb.dask`` passes the cluster's); else one per run.
    limiter: Limiter | None = None
    #: Where ``concurrency="auto"`` keeps its window (``flotorch_nb.dask`` passes the cluster's); else
    #: this process's window for the client's gateway key.
    window: AutoWindow | None = None

    @classmethod
    def of(cls, **values: Any) -> BatchOptions:
        """Validated options (``ConfigurationError`` / ``InvalidRequestError`` before any I/O)."""
        values["concurrency"] = check_concurrency(values.get("concurrency", 16))
        if values.get("on_error", "keep") not in ("keep", "raise"):
            raise ConfigurationError(f"on_error must be 'keep' or 'raise', got {values['on_error']!r}")
        values["rpm"] = check_limit(values.get("rpm"), "rpm")
        values["tpm"] = check_limit(values.get("tpm"), "tpm")
        values["progress"] = bool(values.get("progress", True))
        values["params"] = dict(values.get("params") or {})
        values["model_class"] = normalize_response_format(values.get("response_format"))[1]
        return cls(**values)

    def detached(self) -> BatchOptions:
        """These options without what is shared with the run that used them (the limiter, the
        ``"auto"`` window, the ``slots``: live objects that may hold locks, an event loop or a Dask
        worker), so that a result keeping them can be pickled; ``self`` when there is none."""
        if self.limiter is None and self.window is None and self.slots is None:
            return self
        return dataclasses.replace(self, limiter=None, window=None, slots=None)
