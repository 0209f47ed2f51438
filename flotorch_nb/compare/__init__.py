"""Send one prompt to several models at once and set the answers side by side.

``compare(llm, messages, ["a", "b", "c"])`` (also ``llm.compare`` / ``await llm.acompare``) runs one
request per model concurrently (``asyncio`` tasks over ``llm.with_model(m)``, so every model's call
passes the client's hooks: budget, ledger, rate limits) and returns a :class:`Comparison`: one
:class:`ModelResult` per model, in the order asked, holding the answer or the typed error of that
model alone — a model that fails never stops the others. A comparison displays itself as a static,
sanitized side-by-side table (one column per model, footers with tokens, latency and cost, errors in
their own column) with plain text beside it and the answers' provenance in the output metadata, so it
survives save, reopen and HTML export.

``on_delta(model, text)`` streams: each model's answer is then read as a stream and every piece of
text is handed over as it arrives (for a live view); ``on_result(result)`` is called as each model
finishes. Each column is the client's own ``ainvoke``/``astream`` on ``llm.with_model(m)``. The sync
``compare`` runs the same coroutine on the process's one background loop (``flotorch_nb._bridge``) and
calls both callbacks on the caller's thread, so a notebook cell can update its display from them.

Interrupting cancels the requests in flight and keeps the columns that finished: Ctrl-C during
``compare`` raises ``ComparisonInterrupted``, a cancelled ``acompare`` task ``ComparisonCancelled``,
each with ``.result``. A mistake in the request itself (``InvalidRequestError``: the same for every
model) is raised once rather than shown in every column.
"""

from __future__ import annotations

from ._agreement import Agreement, agreement, looks_like_labels, normalize_label
from ._compare import (
    Comparison,
    ComparisonCancelled,
    ComparisonInterrupted,
    ModelResult,
    acompare,
    compare,
    parse_models,
)
from ._view import comparison_html, comparison_text, preview_bundle

__all__ = [
    "Agreement",
    "Comparison",
    "ComparisonCancelled",
    "ComparisonInterrupted",
    "ModelResult",
    "acompare",
    "agreement",
    "compare",
    "comparison_html",
    "comparison_text",
    "looks_like_labels",
    "normalize_label",
    "parse_models",
    "preview_bundle",
]
