"""Pure: the little ``offline/assistant`` knows, so the questions newcomers ask first get real answers.

"Summarize FloTorch in one line", "why is the sea salty", "list three steps to make tea", "the three
primary colours" are what a newcomer asks first (the SDK documentation and our notebooks use them).
Answering them with a template about "the key words of your question" makes the offline gateway look
broken, so three small tables of ``data/knowledge.toml`` answer them properly; everything else still
gets the honest template.

- ``facts``: glossary entries, each with an example for a follow-up "can you give me an example?";
- ``lists``: named lists (colours, planets, facts about the ocean...), for bullet lists, JSON-mode
  arrays and list-valued schema fields;
- ``procedures``: steps for a few everyday tasks.

Each entry names what it needs to match: all words of one of its word sets must appear in the prompt.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._data import knowledge

__all__ = ["Fact", "fact_for", "find_fact", "list_for", "matches", "procedure_for"]


@dataclass(frozen=True, slots=True)
class Fact:
    """A glossary entry: what it says, and an example for a follow-up question."""

    text: str
    example: str


def matches(entry: Mapping[str, Any], said: set[str]) -> bool:
    """Whether every word of one of the entry's ``needs`` is in ``said``."""
    return any(set(need.split()) <= said for need in entry["needs"])


@functools.cache
def _table(name: str) -> tuple[Mapping[str, Any], ...]:
    return tuple(knowledge()[name])


def _first(name: str, words: Iterable[str]) -> Mapping[str, Any] | None:
    said = set(words)
    return next((entry for entry in _table(name) if matches(entry, said)), None)


def find_fact(words: Iterable[str]) -> Fact | None:
    """The glossary entry the (lower-cased) words ask about, or None."""
    entry = _first("facts", words)
    return Fact(entry["text"], entry["example"]) if entry else None


def fact_for(words: Iterable[str]) -> str | None:
    """The text of the glossary entry the (lower-cased) words ask about, or None."""
    fact = find_fact(words)
    return fact.text if fact else None


def list_for(words: Iterable[str]) -> tuple[str, tuple[str, ...]] | None:
    """(name, items) of the named list the (lower-cased) words ask for, or None.

    A name starting with "the" is complete ("the planets of the solar system"); any other is a sample.
    """
    entry = _first("lists", words)
    return (entry["name"], tuple(entry["items"])) if entry else None


def procedure_for(words: Iterable[str]) -> tuple[str, tuple[str, ...]] | None:
    """(task, steps) of the everyday task the (lower-cased) words ask about, or None."""
    entry = _first("procedures", words)
    return (entry["task"], tuple(entry["steps"])) if entry else None
