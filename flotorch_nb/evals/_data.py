"""What an evaluation runs over: any dataset as a list of row dicts and its column names.

A DataFrame, a list of dicts, a CSV or JSONL path, or a Hugging Face ``datasets.Dataset`` all become
the same thing: rows (plain dicts, in order) and the union of their keys. Nothing here imports pandas
or ``datasets``: a DataFrame is recognised by ``to_dict``/``columns``, a Dataset by ``column_names``
and ``to_list``, so a list of dicts costs nothing extra. CSV cells are text (as the file has them);
JSONL values keep their JSON types. A field the template or the target names that no row has is an
``EvalError`` naming the columns there are, before anything is sent.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..batch import template_fields
from ._errors import EvalError

__all__ = ["FILES", "READERS", "Dataset", "is_data_file", "load_rows"]


@dataclass(frozen=True)
class Dataset:
    """Rows (dicts, in order) and their columns (the union of the rows' keys, first-seen order)."""

    rows: list[dict[str, Any]]
    columns: list[str]

    def check(self, template: str, target: str | None) -> None:
        """``EvalError`` unless the dataset has rows and every field the template or target names."""
        if not self.rows:
            raise EvalError("the dataset is empty: there is nothing to evaluate")
        known = ", ".join(self.columns) or "(none)"
        missing = [f for f in template_fields(template) if f not in self.columns]
        if missing:
            fields = ", ".join("{" + f + "}" for f in missing)
            raise EvalError(f"the template refers to {fields}, which is not a column of the data: {known}")
        if target is not None and target not in self.columns:
            raise EvalError(f"target={target!r} is not a column of the data: {known}")


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise EvalError(f"{path}, line {number}: each line must be a JSON object")
            rows.append(row)
    return rows


#: The data files ``load_rows`` reads, by suffix (any case): the one list ``%%flotorch --eval`` also
#: checks a name against to take it as a path.
READERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    ".csv": _read_csv,
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
}
#: How the messages name them.
FILES = "a .csv or .jsonl file"


def is_data_file(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` ends as a data file ``load_rows`` reads (it need not exist)."""
    return Path(name).suffix.lower() in READERS


def _read_path(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise EvalError(f"no such data file: {path}")
    read = READERS.get(path.suffix.lower())
    if read is None:
        raise EvalError(f"data file {path.name}: give {FILES} (or a DataFrame / list of dicts)")
    try:
        return read(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise EvalError(f"cannot read {path}: {exc}") from None


def _plain(value: Any) -> Any:
    """A NumPy scalar as its Python value (``np.int64(3)`` -> 3), so rows save as JSON and compare simply."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def load_rows(data: Any) -> Dataset:
    """Any supported dataset as a ``Dataset``; ``EvalError`` for anything else (before any I/O)."""
    rows: list[dict[str, Any]]
    if isinstance(data, str | os.PathLike):
        rows = _read_path(Path(data))
    elif hasattr(data, "columns") and callable(getattr(data, "to_dict", None)):  # a pandas DataFrame
        rows = [{str(k): _plain(v) for k, v in row.items()} for row in data.to_dict("records")]
    elif hasattr(data, "column_names") and callable(getattr(data, "to_list", None)):  # datasets.Dataset
        rows = [dict(row) for row in data.to_list()]
    elif isinstance(data, Iterable) and not isinstance(data, Mapping | bytes):  # (a str is a path)
        rows = []
        for i, row in enumerate(data):
            if not isinstance(row, Mapping):
                raise EvalError(
                    f"data item {i} is a {type(row).__name__}; each sample must be a dict of fields"
                )
            rows.append({str(k): v for k, v in row.items()})
    else:
        raise EvalError(
            f"data must be a list of dicts, a DataFrame, a Dataset or a file path; got {type(data).__name__}"
        )
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return Dataset(rows, list(columns))
