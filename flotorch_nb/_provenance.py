"""Provenance: where an answer came from, as plain data carried in the notebook's output metadata.

Every answer a notebook shows (a ``%%flotorch`` cell, a comparison, a batch summary, a chat
transcript) puts a list of records under its output's ``metadata["flotorch_nb"]["provenance"]``, so
the saved ``.ipynb`` says, for each answer, which model on which gateway produced it, when, at what
cost in tokens and time, from which source (``live``, ``offline``, ``replay``, ``cache``), with which
flotorch_nb, and the canonical request hash that replay and the answer cache use::

    {"model": "offline/assistant", "gateway": "http://127.0.0.1:8765", "request_id": "req-…",
     "timestamp": "2025-05-01T12:00:00.123Z", "input_tokens": 12, "output_tokens": 30,
     "total_tokens": 42, "latency_ms": 210.5, "source": "offline", "flotorch_nb_version": "0.1.0",
     "request_hash": "9f2c…"}

Token counts are ``null`` when the gateway did not send them. The gateway is shown display-safe
(``_config.display_url``: scheme, host, port and path only; no ``user:password@``, no query string,
no fragment), and a record never holds the key nor the messages.

The time and the request hash come from :class:`Stamp`, an ``after_call`` hook (only a hook sees the
body that was sent, whichever surface made the call) that sets ``LLMResponse.created_at`` and
``request_hash`` and can hand each record to a sink: the notebook session's list of answers.
:func:`provenance` reads a saved notebook back into a ``pandas.DataFrame`` (pandas is imported only
then). Pure apart from reading that file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._config import DEFAULT_ENDPOINT, display_url
from ._errors import ConfigurationError

if TYPE_CHECKING:
    import pandas

    from ._hooks import CallResult
    from ._response import LLMResponse
    from .llm import FlotorchLLM

__all__ = [
    "FIELDS",
    "METADATA_KEY",
    "Stamp",
    "output_metadata",
    "provenance",
    "provenance_frame",
    "provenance_of",
    "records_in",
    "request_hash",
    "safe_gateway_url",
]

#: The key of flotorch_nb's entry in an output's metadata: ``{"flotorch_nb": {"provenance": [...]}}``.
METADATA_KEY = "flotorch_nb"
#: The fields of one record, in the order a table shows them.
FIELDS = (
    "model",
    "gateway",
    "request_id",
    "timestamp",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "latency_ms",
    "source",
    "flotorch_nb_version",
    "request_hash",
)


def safe_gateway_url(url: str | None) -> str | None:
    """``url`` fit to be saved in a notebook (``_config.display_url``: no credentials, query string or
    fragment), without a trailing ``/``; ``None`` for what is not a URL with a scheme and a host."""
    if not url:
        return None
    try:
        parts = urlsplit(str(url))
        parts.port  # noqa: B018 -- parsing the port is what rejects ":99999"
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return display_url(str(url)).rstrip("/")


def request_hash(body: Mapping[str, Any], endpoint: str = DEFAULT_ENDPOINT) -> str:
    """The canonical request hash of a chat-completion body: the key replay files and the answer
    cache use, so a saved answer can be traced to its recording."""
    from .replay import canonical_request, request_key

    return request_key(canonical_request(body, endpoint))


def _utc(timestamp: datetime | None) -> str:
    moment = timestamp if timestamp is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware (UTC), not a naive datetime")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def provenance_of(
    response: LLMResponse,
    *,
    base_url: str | None,
    request_body: Mapping[str, Any] | None = None,
    endpoint: str = DEFAULT_ENDPOINT,
    timestamp: datetime | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """The provenance record of one answer (see the module docstring for its fields).

    The request hash is that of ``request_body`` (the JSON body that was sent) when given, else the
    one :class:`Stamp` put on the response (else ``None``); the timestamp is ``timestamp``, else the
    response's ``created_at``, else now. ``model`` is the one asked for, used when the gateway named
    none.
    """
    from . import __version__

    usage = response.usage
    if request_body is not None:
        digest: str | None = request_hash(request_body, endpoint)
    else:
        digest = response.request_hash
    return {
        "model": response.model or model,
        "gateway": safe_gateway_url(base_url),
        "request_id": response.request_id,
        "timestamp": _utc(timestamp or response.created_at),
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "total_tokens": usage.total_tokens if usage else None,
        "latency_ms": round(response.latency_s * 1000, 3),
        "source": response.source,
        "flotorch_nb_version": __version__,
        "request_hash": digest,
    }


Sink = Callable[[dict[str, Any]], None]


class Stamp:
    """An ``after_call`` hook: stamps every answer with ``created_at`` (UTC, when it arrived) and
    ``request_hash`` (of the body that was sent), and hands the provenance record of each completed
    answer to ``sink``, if given, with ``by`` (the ``call_label``: ``magic``, ``chat``, or ``code``).

    A hook because only a hook sees the body that was sent (``CallRequest.body``), whichever surface
    made the call; the notebook session attaches one to each of its clients (its sink is the session's
    list of answers, ``%flotorch provenance``), and a comparison to each model's client.
    """

    def __init__(self, base_url: str | None, endpoint: str = DEFAULT_ENDPOINT, sink: Sink | None = None):
        self.base_url = base_url
        self.endpoint = endpoint
        self.sink = sink

    @classmethod
    def attach(cls, llm: FlotorchLLM, sink: Sink | None = None) -> Stamp:
        """Add a stamp to ``llm``'s hooks, unless it has one already (with this sink, or any when
        ``sink`` is None); return the stamp in place."""
        for hook in llm.hooks.after_call:
            if isinstance(hook, Stamp) and (sink is None or hook.sink == sink):
                return hook
        stamp = cls(llm.base_url, llm.endpoint, sink)
        llm.hooks.after_call.append(stamp)
        return stamp

    def __call__(self, result: CallResult) -> None:
        response = result.response
        if response is None:
            return
        response.created_at = datetime.now(UTC)
        response.request_hash = request_hash(result.request.body, self.endpoint)
        if self.sink is not None and result.outcome == "ok":
            record = provenance_of(
                response, base_url=self.base_url, endpoint=self.endpoint, model=result.request.model
            )
            self.sink(record | {"by": result.request.label or "code"})

    def __repr__(self) -> str:
        return f"Stamp({safe_gateway_url(self.base_url)!r})"


def output_metadata(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The metadata of a display output carrying these records (what ``_repr_mimebundle_`` returns as
    its second item, and ``display(..., metadata=...)`` takes)."""
    return {METADATA_KEY: {"provenance": [_clean(r) for r in records]}}


def _clean(record: Mapping[str, Any]) -> dict[str, Any]:
    """Only the known fields, the gateway made display-safe: nothing else leaves or enters."""
    cleaned = {name: record.get(name) for name in FIELDS}
    cleaned["gateway"] = safe_gateway_url(cleaned["gateway"])
    return cleaned


# -- reading them back -------------------------------------------------------------------------------
def records_in(notebook: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every provenance record in a notebook's outputs (nbformat 4 JSON as a dict), in cell order,
    each with ``cell`` (index), ``cell_id`` (when the notebook has ids) and ``output`` (index)."""
    cells = notebook.get("cells")
    for cell_index, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, Mapping):
            continue
        outputs = cell.get("outputs")
        for output_index, output in enumerate(outputs if isinstance(outputs, list) else []):
            metadata = output.get("metadata") if isinstance(output, Mapping) else None
            ours = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
            found = ours.get("provenance") if isinstance(ours, Mapping) else None
            for record in found if isinstance(found, list) else []:
                if isinstance(record, Mapping):
                    where = {"cell": cell_index, "cell_id": cell.get("id"), "output": output_index}
                    yield where | _clean(record)


def provenance_frame(records: Sequence[Mapping[str, Any]]) -> pandas.DataFrame:
    """Records as a DataFrame, one row per answer, the known columns in order (UTC timestamps)."""
    pd = _pandas()
    leading = [c for c in ("cell", "cell_id", "output") if any(c in r for r in records)]
    frame = pd.DataFrame([dict(r) for r in records], columns=[*leading, *FIELDS])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    for column in ("input_tokens", "output_tokens", "total_tokens"):
        frame[column] = frame[column].astype("Int64")  # nullable: "unknown" stays <NA>, not 0
    return frame


def provenance(path: str | os.PathLike[str]) -> pandas.DataFrame:
    """The answers recorded in a saved notebook, one row per answer (``flotorch_nb.provenance``).

    Reads the ``.ipynb`` as JSON (no kernel, no nbformat validation needed); a file that cannot be
    read or is not a notebook is a ``ConfigurationError`` naming it.
    """
    path = Path(path)
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"notebook {path} cannot be read: {reason}") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{path} is not a notebook: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(notebook, Mapping) or not isinstance(notebook.get("cells"), list):
        raise ConfigurationError(f"{path} is not a notebook: it has no 'cells' list")
    records = list(records_in(notebook))
    for record in records:
        _check_numbers(record, path)
    return provenance_frame(records)


def _check_numbers(record: Mapping[str, Any], path: Path) -> None:
    """A record edited by hand (or by another tool) may hold ``"12"`` where a count belongs: name the
    cell and the field, rather than let pandas fail on the column with no idea where it came from."""
    for name in ("input_tokens", "output_tokens", "total_tokens", "latency_ms"):
        value = record.get(name)
        if value is None:
            continue
        whole = name != "latency_ms"
        number = isinstance(value, int) if whole else isinstance(value, int | float)
        if isinstance(value, bool) or not number or value < 0:
            what = "a whole number of tokens" if whole else "a number of milliseconds"
            raise ConfigurationError(
                f"notebook {path}, cell {record.get('cell')}, output {record.get('output')}: the "
                f"provenance field {name} must be {what} or null, got {value!r:.40}"
            )


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "provenance tables need pandas: pip install 'flotorch_nb[data]' (or pandas)"
        ) from None
    return pandas
