"""Pure: the few facts ``offline/assistant`` knows, so the seed's own examples get real answers.

"Summarize FloTorch in one line" and "why is the sea salty" are what a newcomer asks first (the SDK
documentation and our notebooks use them). Answering them with a template about "the key words of
your question" makes the offline gateway look broken, so a small glossary answers them properly;
everything else still gets the honest template answer. Each fact names what it needs to match: all
words of one of its word sets must appear in the prompt.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["fact_for"]

_FACTS: tuple[tuple[tuple[frozenset[str], ...], str], ...] = (
    (
        (frozenset({"flotorch"}),),
        "FloTorch is an LLM gateway: one OpenAI-compatible API and one key in front of many model "
        "providers, with routing, guardrails and usage tracking.",
    ),
    (
        (frozenset({"sea", "salty"}), frozenset({"sea", "salt"}), frozenset({"ocean", "salty"})),
        "The sea is salty because rivers carry minerals dissolved from rocks into it, and when sea water "
        "evaporates the salt stays behind, so it has built up over millions of years.",
    ),
    (
        (frozenset({"token"}), frozenset({"tokens"})),
        "Tokens are the small pieces of text (words or parts of words) a language model reads and "
        "writes; usage and cost are counted in them.",
    ),
    (
        (frozenset({"decorator"}), frozenset({"decorators"})),
        "A Python decorator is a function that takes a function and returns a new one; written as "
        "@name above a def, it adds behaviour such as logging or caching without changing the code.",
    ),
    (
        (frozenset({"json", "schema"}),),
        "A JSON Schema describes the shape JSON data must have (types, required fields, allowed values), "
        "so a program can validate an answer before using it.",
    ),
)


def fact_for(words: Iterable[str]) -> str | None:
    """The glossary fact the (lower-cased) words ask about, or None."""
    said = set(words)
    for needs, fact in _FACTS:
        if any(need <= said for need in needs):
            return fact
    return None
