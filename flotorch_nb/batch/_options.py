"""``BatchOptions``: a batch's options, checked before any I/O.

Its own module because both sides of a run read it: the runner (``_runner``) runs with it and the
``BatchResult`` (``_result``) keeps it (``to_pandas`` asks for ``parsed``, a re-run reuses it), and
neither of those should import the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigurationError
from ..schema import normalize_response_format
from ._limits import Limiter, check_limit

__all__ = ["BatchOptions"]


@dataclass(frozen=True)
class BatchOptions:
    """A batch's options, checked before any I/O (``llm.batch`` documents them)."""

    template: str | None = None
    concurrency: int = 16
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

    @classmethod
    def of(cls, **values: Any) -> BatchOptions:
        """Validated options (``ConfigurationError`` / ``InvalidRequestError`` before any I/O)."""
        concurrency = values.get("concurrency", 16)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        if values.get("on_error", "keep") not in ("keep", "raise"):
            raise ConfigurationError(f"on_error must be 'keep' or 'raise', got {values['on_error']!r}")
        values["rpm"] = check_limit(values.get("rpm"), "rpm")
        values["tpm"] = check_limit(values.get("tpm"), "tpm")
        values["progress"] = bool(values.get("progress", True))
        values["params"] = dict(values.get("params") or {})
        values["model_class"] = normalize_response_format(values.get("response_format"))[1]
        return cls(**values)
