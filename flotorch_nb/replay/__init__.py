"""Record gateway exchanges to plain JSON files, and answer from them later with no key and no network.

An instructor runs the notebooks once against a live gateway with ``FLOTORCH_RECORD=DIR``; students,
CI and Binder run them with ``FLOTORCH_REPLAY=DIR`` (replay wins when both are set:
``_config.cassette_from_env`` is the one place that decides). Modules, by responsibility:

- ``_match``: pure; what identifies a request (``canonical_request``: method, endpoint path without a
  base URL's prefix, the JSON body with canonical numbers; never host, headers or key) and its
  sha256 (``request_key``). The gateway's request counts use the same rule, and so can an answer
  cache.
- ``_cassette``: the files. One pretty-printed file per exchange,
  ``<slug-of-last-user-message>-<hash12>.json``, holding the canonical request and the response
  (status, an allow-list of headers, the body as parsed JSON or, for a stream, one SSE ``data``
  payload per line), so recordings diff well; secrets are scrubbed from contents and names; any
  text can be written (lone surrogates are escaped); a damaged file is a ``ReplayFileError``
  naming the file and the fault.
- ``_transports``: the httpx2 transports around (record) or in place of (replay) the client's own, so
  invoke, ainvoke, stream and astream are covered without the client knowing. Record mode behaves
  as live does: a cut stream is the same ``StreamError``, and an unwritable folder keeps the
  answer and says so with a ``RecordWarning``.
- ``_notebooks``: ``python -m flotorch_nb.replay record-notebooks`` regenerates the bundled recordings.

Decisions (see ``notebooks/recordings/README.md`` for the format): one response per request (recording
it again replaces the file, so a retried 429 -> 200 keeps the 200); in record mode the body is read in
full before the caller gets it, and a request cancelled or cut mid-answer is not recorded; request headers
are never stored and the bearer token is scrubbed from anything written, as a last guard, with the
client's own rule (``_config.redact``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._errors import ReplayFileError, ReplayMissError
from ._match import KNOWN_ENDPOINTS, canonical_request, endpoint_path, request_key

if TYPE_CHECKING:
    from ._cassette import FORMAT, Cassette, cassette_name
    from ._notebooks import main, record_notebooks
    from ._transports import (
        RECORDED_HEADERS,
        AsyncRecordTransport,
        RecordTransport,
        RecordWarning,
        ReplayTransport,
        wrap_transport,
    )

# The files and transports import httpx2; the request key (``_match``, from ``flotorch_nb._request_key``)
# does not, so the rest is imported on first use and ``import flotorch_nb.replay`` stays cheap.
_LAZY = {
    "FORMAT": "_cassette",
    "Cassette": "_cassette",
    "cassette_name": "_cassette",
    "main": "_notebooks",
    "record_notebooks": "_notebooks",
    "RECORDED_HEADERS": "_transports",
    "AsyncRecordTransport": "_transports",
    "RecordTransport": "_transports",
    "RecordWarning": "_transports",
    "ReplayTransport": "_transports",
    "wrap_transport": "_transports",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMAT",
    "KNOWN_ENDPOINTS",
    "RECORDED_HEADERS",
    "AsyncRecordTransport",
    "Cassette",
    "RecordTransport",
    "RecordWarning",
    "ReplayFileError",
    "ReplayMissError",
    "ReplayTransport",
    "canonical_request",
    "cassette_name",
    "endpoint_path",
    "main",
    "record_notebooks",
    "request_key",
    "wrap_transport",
]
