"""The offline models' data files (``data/*.toml``), each read once, on first use.

What ``offline/assistant`` knows and how it words things is data, not code: ``knowledge.toml``
(glossary facts, named lists, everyday procedures, code snippets, example records for structured
answers), ``phrases.toml`` (reply templates, the phrasebook, the pirate voice, list and step
templates) and ``words.toml`` (the word lists that recognise what a prompt asks and what a schema
property wants). Editing a file changes answers without touching the logic that chooses them.
Nothing is read at import: ``import flotorch_nb.gateway`` stays cheap, and a gateway that only
serves ``offline/echo`` or ``offline/scripted`` never reads them.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Any

__all__ = ["knowledge", "load", "phrase", "phrases", "word_list"]


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


@functools.cache
def word_list(name: str) -> frozenset[str]:
    """The word list ``name`` of ``words.toml`` as a set (its words are space-separated)."""
    return frozenset(load("words")[name].split())
