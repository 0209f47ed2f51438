"""Provenance: where an answer came from, as plain data carried in the notebook's output metadata.

Every answer a notebook shows (a ``%%flotorch`` cell, a comparison, a batch summary, a chat
transcript) puts a list of records under its output's ``metadata["flotorch_nb"]["provenance"]``, so
the saved ``.ipynb`` says, for each answer, which model on which gateway produced it, when, at what
cost in tokens and time, from which source (``live``, ``offline``, ``replay``, ``cache``), with which
flotorch_nb, and the canonical request hash that replay and the answer cache use::

    {"model": "offline/assistant", "gateway": "http://127.0.0.1:8765", "request_id": "req-…",
     "timestamp": "2025-05-01T12:00:00.123Z", "input_tokens": 12, "output_tokens": 30,
     "total_tokens": 42, "latency_ms": 210.5, "source": "offline", "flotorch_nb_version": "0.1.0",
     "request_hash": "9f2c…", "attempts": 1, "fallbacks": []}

``attempts`` counts the calls the answer took (validation re-asks and models passed over included)
and ``fallbacks`` lists each model passed over as ``[model, reason]`` (``flotorch_nb._pipeline._recover``).

Token counts are ``null`` when the gateway did not send them. The gateway is shown display-safe
(``_config.display_url``: scheme, host, port and path only; no ``user:password@``, no query string,
no fragment), and a record never holds the key nor the messages.

The record is made in one place, where a call finishes (``_pipeline._provenance.stamp``), and travels
on the answer as ``LLMResponse.provenance``. This module is what the surfaces share about records
once made: their fields (a batch item's ``StoredAnswer`` keeps them in this order), the output
metadata every surface (a comparison, ``%%flotorch``, the chat panel, a ``--map`` cell, the session's
answer log) puts them in, and :func:`provenance`, which reads a saved notebook back into a
``pandas.DataFrame`` (pandas is imported only then). Pure apart from reading that file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._config import display_url
from ._errors import ConfigurationError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "FIELDS",
    "METADATA_KEY",
    "output_metadata",
    "provenance",
    "provenance_frame",
    "records_in",
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
    "attempts",
    "fallbacks",
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
