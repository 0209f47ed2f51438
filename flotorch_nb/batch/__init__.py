"""Map a prompt over a dataset: ``llm.batch`` / ``await llm.abatch`` and what they return.

``flotorch_nb.batch`` owns running many calls at once on one ``FlotorchLLM``: the inputs and their
template (``_inputs``), the shared rate limiter (``_limits``), the engine of bounded workers
(``_runner``, run from sync code on the process's one background loop, ``flotorch_nb._bridge``), the
progress bar (``_progress``) and the ``BatchResult`` (``_result``). The answer cache it resumes from is
``flotorch_nb.cache``; Dask runs it per partition (``flotorch_nb.dask``). Importing this package imports
neither pandas nor tqdm.
"""

from __future__ import annotations

from ._inputs import Inputs, template_fields
from ._limits import Grant, Limiter, RateLimiter
from ._options import BatchOptions
from ._result import COLUMNS, BatchError, BatchItem, BatchResult, BatchStats, ItemCancelledError
from ._runner import BatchCancelled, BatchInterrupted, run_async, run_sync

__all__ = [
    "COLUMNS",
    "BatchCancelled",
    "BatchError",
    "BatchInterrupted",
    "BatchItem",
    "BatchOptions",
    "BatchResult",
    "BatchStats",
    "Grant",
    "Inputs",
    "ItemCancelledError",
    "Limiter",
    "RateLimiter",
    "run_async",
    "run_sync",
    "template_fields",
]
