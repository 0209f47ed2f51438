"""Pure: the little ``offline/assistant`` knows, so the questions newcomers ask first get real answers.

"Summarize FloTorch in one line", "why is the sea salty", "list three steps to make tea", "the three
primary colours" are what a newcomer asks first (the SDK documentation and our notebooks use them).
Answering them with a template about "the key words of your question" makes the offline gateway look
broken, so three small tables answer them properly; everything else still gets the honest template.

- ``FACTS``: glossary entries, each with an example for a follow-up "can you give me an example?";
- ``LISTS``: named lists (colours, planets, facts about the ocean...), for bullet lists, JSON-mode
  arrays and list-valued schema fields;
- ``PROCEDURES``: steps for a few everyday tasks.

Each entry names what it needs to match: all words of one of its word sets must appear in the prompt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["FACTS", "LISTS", "PROCEDURES", "Fact", "fact_for", "find_fact", "list_for", "procedure_for"]

_Needs = tuple[frozenset[str], ...]


def _needs(*sets: str) -> _Needs:
    return tuple(frozenset(s.split()) for s in sets)


@dataclass(frozen=True, slots=True)
class Fact:
    """A glossary entry: when it applies, what it says, and an example for a follow-up question."""

    needs: _Needs
    text: str
    example: str


FACTS: tuple[Fact, ...] = (
    Fact(
        _needs("flotorch"),
        "FloTorch is an LLM gateway: one OpenAI-compatible API and one key in front of many model "
        "providers, with routing, guardrails and usage tracking.",
        "For example, the same `llm.invoke(...)` call can reach an OpenAI model or an open-source one "
        "just by changing `model_id`, and every call shows up in FloTorch's usage tracking.",
    ),
    Fact(
        _needs("sea salty", "sea salt", "ocean salty"),
        "The sea is salty because rivers carry minerals dissolved from rocks into it, and when sea water "
        "evaporates the salt stays behind, so it has built up over millions of years.",
        "For example, a litre of sea water holds about 35 grams of salt, roughly seven teaspoons.",
    ),
    Fact(
        _needs("sky blue"),
        "The sky is blue because air scatters blue sunlight far more than red (Rayleigh scattering), "
        "so blue light reaches us from all directions.",
        "For example, at sunset the light crosses far more air, the blue is scattered away before it "
        "reaches you, and the sky near the sun turns orange and red.",
    ),
    Fact(
        _needs("token", "tokens"),
        "Tokens are the small pieces of text (words or parts of words) a language model reads and "
        "writes; usage and cost are counted in them.",
        'For example, "Hello, world!" is about 4 tokens: "Hello", ",", " world" and "!"; a long, rare '
        'word such as "tokenization" is split into two or more.',
    ),
    Fact(
        _needs(
            "temperature answer",
            "temperature answers",
            "temperature model",
            "temperature models",
            "temperature sampling",
            "temperature llm",
            "temperature parameter",
        ),
        "A low temperature makes a model choose its most likely words, so answers are focused and "
        "repeatable; a high temperature lets it sample more freely, for more varied answers.",
        "For example, asked three times for a name for a cat, a model at temperature 0 may say "
        '"Whiskers" every time, while at temperature 1.2 it may say "Whiskers", "Pixel" and "Captain Fluff".',
    ),
    Fact(
        _needs("jupyter magic", "magic command", "magic commands", "cell magic", "line magic"),
        "A Jupyter magic command is an instruction for the notebook itself rather than Python code: "
        "%name applies to one line and %%name to a whole cell. Examples are %timeit, which times a "
        "line of code, and %%flotorch, which sends the cell to a language model.",
        "For example, `%timeit sorted(range(1000))` runs the sort many times and prints how long one "
        "run takes.",
    ),
    Fact(
        _needs("vector database", "vector databases", "vector store", "embeddings"),
        "A vector database stores pieces of text together with lists of numbers (vectors) that capture "
        "their meaning, so it can find the pieces most similar to a question, not only exact matches. "
        "That is how a chatbot looks up the right paragraphs in your documents before it answers.",
        'For example, one record could be {"id": 1, "text": "Cats sleep up to 16 hours a day.", '
        '"vector": [0.12, -0.4, 0.07]}.',
    ),
    Fact(
        _needs(
            "streaming users",
            "streaming user",
            "streaming answer",
            "streaming answers",
            "streaming model",
            "streaming llm",
            "streaming response",
            "streaming helps",
        ),
        "Streaming shows an answer word by word while the model writes it, so people start reading "
        "after a fraction of a second instead of waiting for the whole reply. It makes slow answers "
        "feel fast, and it lets users stop an answer that is going the wrong way. It also keeps long "
        "answers from timing out, because data keeps arriving.",
        "For example, a 300-word answer that takes 10 seconds to write shows its first words within "
        "half a second when streamed.",
    ),
    Fact(
        _needs("decorator", "decorators"),
        "A Python decorator is a function that takes a function and returns a new one; written as "
        "@name above a def, it adds behaviour such as logging or caching without changing the code.",
        "For example, `@functools.cache` above `def fib(n): ...` makes each result computed only once.",
    ),
    Fact(
        _needs("json schema"),
        "A JSON Schema describes the shape JSON data must have (types, required fields, allowed values), "
        "so a program can validate an answer before using it.",
        'For example, {"type": "object", "properties": {"age": {"type": "integer"}}, "required": '
        '["age"]} accepts {"age": 36} and refuses {"age": "old"}.',
    ),
)

#: (what it needs, how to name it in a sentence, the items). A list whose name starts with "the" is
#: complete ("the planets of the solar system"); any other is a sample ("facts about the ocean").
LISTS: tuple[tuple[_Needs, str, tuple[str, ...]], ...] = (
    (
        _needs("primary colours", "primary colors", "primary colour", "primary color"),
        "the primary colours",
        ("red", "yellow", "blue"),
    ),
    (
        _needs("rainbow"),
        "the colours of the rainbow",
        ("red", "orange", "yellow", "green", "blue", "indigo", "violet"),
    ),
    (
        _needs("colours", "colors"),
        "colours",
        ("red", "green", "blue", "yellow", "purple", "orange", "black", "white"),
    ),
    (
        _needs("planets", "planet"),
        "the planets of the solar system",
        ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"),
    ),
    (
        _needs("continents", "continent"),
        "the continents",
        ("Africa", "Antarctica", "Asia", "Australia", "Europe", "North America", "South America"),
    ),
    (
        _needs("days week", "weekdays"),
        "the days of the week",
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    ),
    (_needs("seasons"), "the seasons", ("spring", "summer", "autumn", "winter")),
    (
        _needs("ocean facts", "ocean fact", "sea facts", "oceans facts"),
        "facts about the ocean",
        (
            "The ocean covers about 71% of Earth's surface.",
            "It holds about 97% of all the water on Earth.",
            "Its average depth is about 3,700 metres.",
            "Its deepest point, the Challenger Deep in the Mariana Trench, is nearly 11,000 metres down.",
            "Tiny drifting plants called phytoplankton make about half of the oxygen we breathe.",
            "It has absorbed about a quarter of the carbon dioxide people have released.",
            "Most of the ocean floor has never been mapped in detail.",
            "The longest mountain range on Earth, the mid-ocean ridge, runs about 65,000 km, mostly "
            "under water.",
            "Sea water is about 3.5% salt by weight.",
            "The Pacific is the largest ocean: it is bigger than all the land on Earth put together.",
        ),
    ),
)

#: (what it needs, the task as a verb phrase, the steps)
PROCEDURES: tuple[tuple[_Needs, str, tuple[str, ...]], ...] = (
    (
        _needs("tea"),
        "make tea",
        (
            "Boil fresh water.",
            "Put a tea bag, or a teaspoon of loose tea, in a cup or teapot.",
            "Pour the hot water over it and let it steep for 3 to 5 minutes.",
            "Remove the tea bag or leaves.",
            "Add milk, lemon or honey if you like, and enjoy.",
        ),
    ),
    (
        _needs("coffee"),
        "make coffee",
        (
            "Heat water until it is just off the boil.",
            "Put about two tablespoons of ground coffee per cup in a filter or press.",
            "Pour the water over the grounds and wait about 4 minutes.",
            "Press or let it drip through, then pour.",
            "Add milk or sugar if you like.",
        ),
    ),
    (
        _needs("pasta", "spaghetti"),
        "cook pasta",
        (
            "Bring a large pot of salted water to the boil.",
            "Add the pasta and stir so it does not stick.",
            "Cook it for the time on the packet, tasting a minute before the end.",
            "Drain it, keeping a cup of the cooking water for the sauce.",
            "Toss it with the sauce and serve at once.",
        ),
    ),
)


def _matches(needs: _Needs, said: set[str]) -> bool:
    return any(need <= said for need in needs)


def find_fact(words: Iterable[str]) -> Fact | None:
    """The glossary entry the (lower-cased) words ask about, or None."""
    said = set(words)
    return next((fact for fact in FACTS if _matches(fact.needs, said)), None)


def fact_for(words: Iterable[str]) -> str | None:
    """The text of the glossary entry the (lower-cased) words ask about, or None."""
    fact = find_fact(words)
    return fact.text if fact else None


def list_for(words: Iterable[str]) -> tuple[str, tuple[str, ...]] | None:
    """(name, items) of the named list the (lower-cased) words ask for, or None."""
    said = set(words)
    return next(((name, items) for needs, name, items in LISTS if _matches(needs, said)), None)


def procedure_for(words: Iterable[str]) -> tuple[str, tuple[str, ...]] | None:
    """(task, steps) of the everyday task the (lower-cased) words ask about, or None."""
    said = set(words)
    return next(((task, steps) for needs, task, steps in PROCEDURES if _matches(needs, said)), None)
