"""The offline models' data files (``data/*.toml``), each read once, on first use, and the lookups in them.

What ``offline/assistant`` knows and how it words things is data, not code: ``knowledge.toml``
(glossary facts, named lists, everyday procedures, code snippets, example records for structured
answers), ``phrases.toml`` (reply templates, the phrasebook, the pirate voice, list and step
templates) and ``words.toml`` (the word lists that recognise what a prompt asks and what a schema
property wants). Editing a file changes answers without touching the logic that chooses them.
Nothing is read at import: ``import flotorch_nb.gateway`` stays cheap, and a gateway that only
serves ``offline/echo`` or ``offline/scripted`` never reads them.

The knowledge answers what a newcomer asks first ("why is the sea salty", "list three steps to make
tea", "the three primary colours"; the SDK documentation and our notebooks use them): a template
about "the key words of your question" would make the offline gateway look broken. Each entry of
``facts`` (with an example for a follow-up "can you give me an example?"), ``lists`` (a name starting
with "the" is complete, any other a sample), ``procedures`` and ``entities`` names what it needs to
match: all words of one of its ``needs`` must be in the prompt.

``entities`` are example records for structured answers: asked for a ``Recipe`` from "A quick pasta
dish for a weeknight", a fill made only from the prompt's words gives ``dish: "a weeknight"``; with the
record, ``dish: "Spaghetti aglio e olio", minutes: 20``. Facts stated in the prompt still win, and
``_schema_fill`` checks every value against its schema. A record's field is found by the property's
name, one of its words (``release_year`` -> ``year``) or an alias (``film`` -> ``title``).
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

__all__ = [
    "MISSING",
    "entity_for",
    "fact_for",
    "field",
    "knowledge",
    "list_for",
    "load",
    "lookup",
    "phrase",
    "phrases",
    "procedure_for",
    "split_words",
    "word_list",
]

MISSING: Any = object()  # "the record has no such field"


@functools.cache
def load(name: str) -> dict[str, Any]:
    """The parsed ``data/<name>.toml`` shipped with the package."""
    text = resources.files(__package__).joinpath("data", f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def knowledge() -> dict[str, Any]:
    """``knowledge.toml``: facts, lists, procedures, snippets, aliases, entities."""
    return load("knowledge")


def phrases() -> dict[str, Any]:
    """``phrases.toml``: templates and phrasebooks by section."""
    return load("phrases")


def phrase(key: str, /, **fields: Any) -> str:
    """The reply template ``[replies] key``, filled with ``fields``."""
    template: str = load("phrases")["replies"][key]
    return template.format(**fields) if fields else template


def split_words(identifier: str) -> list[str]:
    """Split ``get_currentWeather`` / ``get-weather`` into ``["get", "current", "weather"]``.

    Here, in the lower layer, because names are matched against the data by their words (a record's
    field, a word list) and ``_text``, which builds on these word lists, must not be imported back.
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", identifier)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


@functools.cache
def word_list(name: str) -> frozenset[str]:
    """The word list ``name`` of ``words.toml`` as a set (its words are space-separated)."""
    return frozenset(load("words")[name].split())


def lookup(table: str, words: Iterable[str]) -> Mapping[str, Any] | None:
    """The first entry of ``knowledge.toml``'s ``table`` whose ``needs`` the (lower-cased) words meet."""
    said = set(words)
    return next((e for e in knowledge()[table] if any(set(n.split()) <= said for n in e["needs"])), None)


def fact_for(words: Iterable[str]) -> str | None:
    """The text of the glossary entry the words ask about, or None."""
    entry = lookup("facts", words)
    return entry["text"] if entry else None


def list_for(words: Iterable[str]) -> tuple[str, tuple[str, ...]] | None:
    """(name, items) of the named list the words ask for, or None."""
    entry = lookup("lists", words)
    return (entry["name"], tuple(entry["items"])) if entry else None


def procedure_for(words: Iterable[str]) -> tuple[str, tuple[str, ...]] | None:
    """(task, steps) of the everyday task the words ask about, or None."""
    entry = lookup("procedures", words)
    return (entry["task"], tuple(entry["steps"])) if entry else None


def entity_for(words: Iterable[str]) -> Mapping[str, Any] | None:
    """The example record the words name, or None."""
    entry = lookup("entities", words)
    return entry["record"] if entry else None


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
