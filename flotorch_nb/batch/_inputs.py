"""What a batch is run over: prompts, message lists, a pandas Series or DataFrame, and a template.

``Inputs`` turns any of them into the messages of item ``i``, on demand: 100,000 rows never become
100,000 message lists at once. Templates use ``%%flotorch``'s brace rules (``flotorch_nb.notebook
.interpolate``: ``{review}``, ``{row.attr}``, ``{d['k']}``, ``{{literal}}``), but here a field that
is not a column (or ``item`` for a list) is a mistake: it is refused before any I/O, naming the field
and the fields there are. Each item is checked again as it is built, since a list of dicts has no
columns and a row can hold None or NaN: an item whose field is missing or empty is that item's
``InvalidRequestError`` (the others run), so a prompt never goes out with an unfilled ``{name}`` or
the words ``nan`` / ``None`` standing for a value that is not there. pandas is never imported here:
a Series, DataFrame, ``pd.NA`` or ``NaT`` is recognised by its shape, so a list of prompts costs
nothing extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from .._errors import InvalidRequestError
from .._interpolate import MISSING, interpolate, references, resolve

__all__ = ["Inputs", "is_missing", "template_fields"]

_HEAD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The field name of each item of a list or Series in a template (``%%flotorch --map`` uses it too).
ITEM = "item"


def template_fields(template: str) -> list[str]:
    """The names a template refers to (the head of each ``{ref}``), in order, without repeats."""
    names: list[str] = []
    for ref in references(template):
        match = _HEAD.match(ref)
        if match and match.group(0) not in names:
            names.append(match.group(0))
    return names


def _is_dataframe(value: object) -> bool:
    return hasattr(value, "columns") and hasattr(value, "itertuples") and hasattr(value, "iloc")


def _is_series(value: object) -> bool:
    return hasattr(value, "iloc") and hasattr(value, "index") and not hasattr(value, "columns")


def _is_messages(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(m, Mapping) for m in value) and bool(value)


def is_missing(value: object) -> bool:
    """Whether ``value`` stands for "no value": None, a float/NumPy NaN, ``pd.NA``, ``NaT``.

    Without importing pandas or NumPy: ``pd.NA`` and ``NaT`` by type name, NaN by being unequal to
    itself (only a plain truth value counts, so an array or a Series in a cell is a value).
    """
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    try:
        unequal = value != value
    except Exception:  # a user's __ne__ may raise anything; that is not a missing value
        return False
    return unequal is True or (type(unequal).__name__ == "bool_" and bool(unequal))


class Inputs:
    """The items of a batch: ``len()``, ``messages(i)``, and the index to label rows with.

    ``messages(i)`` raises ``InvalidRequestError`` for an item that cannot be a prompt (it becomes
    that item's error, not the batch's).
    """

    def __init__(self, inputs: Any, template: str | None = None, *, system: str | None = None) -> None:
        if template is not None and not isinstance(template, str):
            raise InvalidRequestError(f"template must be a string, got {type(template).__name__}")
        self.template = template
        #: A system prompt put before each prompt built here (not before given message lists).
        self.system = system
        #: The pandas index of a Series/DataFrame (rows of ``to_pandas`` keep it), else None.
        self.index: Any = None
        self._columns: list[str] | None = None
        self._refs = references(template) if template is not None else []
        #: "row" for a DataFrame, else "item": how an item is named in its error.
        self._noun = "item"
        if _is_dataframe(inputs):
            if template is None:
                raise InvalidRequestError(
                    "a DataFrame needs template=, e.g. template='Classify: {review}' "
                    f"(columns: {', '.join(map(str, inputs.columns))})"
                )
            self.index = inputs.index
            self._noun = "row"
            self._columns = [str(c) for c in inputs.columns]
            # Columns, not rows: values are read per item, so no 100,000 row dicts are built up front.
            self._items: Sequence[Any] = _Rows(inputs)
        elif _is_series(inputs):
            self.index = inputs.index
            self._items = _Values(inputs)
        elif isinstance(inputs, str | bytes | Mapping):
            raise InvalidRequestError(
                f"inputs must be a list of prompts or message lists, a Series or a DataFrame; got one "
                f"{type(inputs).__name__} (wrap a single prompt in a list)"
            )
        elif isinstance(inputs, Sequence):
            self._items = inputs
        elif isinstance(inputs, Iterable):
            self._items = list(inputs)
        else:
            raise InvalidRequestError(
                "inputs must be a list of prompts or message lists, a Series or a DataFrame; got "
                f"{type(inputs).__name__}"
            )
        if template is not None:
            self._check_template(template)

    def _check_template(self, template: str) -> None:
        fields = template_fields(template)
        if self._columns is not None:
            known, what = self._columns, "columns"
        else:
            known, what = [ITEM], "fields"
            first = self._items[0] if len(self._items) else None
            if isinstance(first, Mapping):  # a list of dicts: their keys are the fields
                known, what = [str(k) for k in first], "keys of the first item"
        # Dicts may differ in their keys: each one is checked as it is built (see ``_fill``), so one
        # dict without the field fails alone instead of going out with the field unfilled.
        per_item = self._columns is None and any(isinstance(item, Mapping) for item in self._items)
        unknown = [] if per_item else [f for f in fields if f not in known]
        if unknown:
            raise InvalidRequestError(
                f"the template refers to {', '.join('{' + f + '}' for f in unknown)}, which is not one of "
                f"the {what}: {', '.join(known) or '(none)'}; write {{{{name}}}} for literal braces"
            )
        if not fields:
            raise InvalidRequestError(
                f"the template has no field, so every item would send the same prompt; use one of the "
                f"{what}: {', '.join('{' + k + '}' for k in known)}"
            )

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        """The messages of each item, in order (an ``Inputs`` may be passed to ``llm.batch`` as is)."""
        return (self.messages(i) for i in range(len(self)))

    def label(self, i: int) -> Any:
        """The index label of item ``i`` (its position for a list)."""
        return self.index[i] if self.index is not None else i

    def _name(self, i: int) -> str:
        """How an error names item ``i``: ``row 20``, ``item 'b'``, ``item 3`` (NumPy labels as plain)."""
        label = self.label(i)
        plain = label.item() if callable(getattr(label, "item", None)) else label  # np.int64(20) -> 20
        return f"{self._noun} {plain!r}"

    def messages(self, i: int) -> list[dict[str, Any]]:
        """The messages to send for item ``i``."""
        item = self._items[i]
        if self.template is not None:
            if _is_messages(item):
                raise InvalidRequestError(f"{self._name(i)} is a message list; a template needs text")
            return self._prompt(self._fill(i, item))
        if isinstance(item, str):
            return self._prompt(item)
        if _is_messages(item):
            return item  # type: ignore[no-any-return]
        if is_missing(item):
            raise InvalidRequestError(f"{self._name(i)} has no value ({item}); nothing was sent")
        raise InvalidRequestError(
            f"{self._name(i)} is a {type(item).__name__}; each input must be a prompt (str) or a "
            "list of message dicts (or give template= to build prompts from it)"
        )

    def _fill(self, i: int, item: Any) -> str:
        """The template filled from item ``i``; its ``InvalidRequestError`` if a field has no value."""
        assert self.template is not None
        fields = item if isinstance(item, Mapping) else {ITEM: item}
        for ref in self._refs:
            value = resolve(ref, fields)
            if value is MISSING:
                if isinstance(item, Mapping):
                    has = f"its keys: {', '.join(map(str, item)) or '(none)'}"
                else:
                    has = f"a {type(item).__name__} fills only {{{ITEM}}}"
                problem = f"has no {{{ref}}} ({has})"
            elif is_missing(value):
                problem = f"has no value for {{{ref}}} (it is {value})"
            else:
                continue
            raise InvalidRequestError(
                f"{self._name(i)} {problem}; nothing was sent for it, since the prompt "
                "would have gone out without that value"
            )
        return interpolate(self.template, fields)

    def _prompt(self, text: str) -> list[dict[str, Any]]:
        user = {"role": "user", "content": text}
        return [{"role": "system", "content": self.system}, user] if self.system else [user]


class _Rows(Sequence[Any]):
    """A DataFrame's rows as column -> value mappings, built one at a time."""

    def __init__(self, frame: Any) -> None:
        self._names = [str(c) for c in frame.columns]
        self._columns = [frame.iloc[:, j].to_numpy(dtype=object) for j in range(frame.shape[1])]
        self._len = len(frame)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: Any) -> Any:
        return {name: column[i] for name, column in zip(self._names, self._columns, strict=True)}


class _Values(Sequence[Any]):
    """A Series' values by position (its labels may be anything)."""

    def __init__(self, series: Any) -> None:
        self._values = series.to_numpy(dtype=object)

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i: Any) -> Any:
        return self._values[i]
