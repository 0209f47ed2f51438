"""Pure: example records for structured answers, so a schema fill reads like a real answer.

Asked for a ``Recipe`` from "A quick pasta dish for a weeknight", a fill made only from the prompt's
words gives ``dish: "a weeknight", minutes: 1``. When the prompt names a kind of thing the gateway
has an example of (a film, a dish, a book, a city: ``entities`` in ``data/knowledge.toml``, most
specific first), the fill takes each field it can from that record instead: ``dish: "Spaghetti
aglio e olio", minutes: 20``. Facts stated in the prompt still win (an email, a date, a quoted title,
a number), and every value is checked against the field's schema before it is used
(``_schema_fill``), so answers stay valid.

Fields are found by name: the property itself (``title``), one of its words (``release_year`` ->
``year``, ``budget_musd`` -> ``budget``), or an alias (``film`` -> ``title``; ``aliases`` in the
same file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._data import knowledge
from ._facts import matches
from ._text import split_words

__all__ = ["MISSING", "entity_for", "field"]

MISSING: Any = object()  # "the record has no such field"


def entity_for(words: Iterable[str]) -> Mapping[str, Any] | None:
    """The example record the (lower-cased) prompt words name, or None."""
    said = set(words)
    return next((e["record"] for e in knowledge()["entities"] if matches(e, said)), None)


def field(record: Mapping[str, Any], prop: str) -> Any:
    """The record's value for property ``prop`` (see the module docstring), or ``MISSING``."""
    if prop in record:
        return record[prop]
    lowered = prop.lower()
    if lowered in record:
        return record[lowered]
    aliases: Mapping[str, str] = knowledge()["aliases"]
    for word in [lowered, *reversed(split_words(prop))]:
        key = word if word in record else aliases.get(word)
        if key is not None and key in record:
            return record[key]
    return MISSING
