"""Pure: example records for structured answers, so a schema fill reads like a real answer.

Asked for a ``Recipe`` from "A quick pasta dish for a weeknight", a fill made only from the prompt's
words gives ``dish: "a weeknight", minutes: 1``. When the prompt names a kind of thing the gateway
has an example of (a film, a dish, a book, a city), the fill takes each field it can from that
record instead: ``dish: "Spaghetti aglio e olio", minutes: 20``. Facts stated in the prompt still
win (an email, a date, a quoted title, a number), and every value is checked against the field's
schema before it is used (``_schema_fill``), so answers stay valid.

Fields are found by name: the property itself (``title``), one of its words (``release_year`` ->
``year``, ``budget_musd`` -> ``budget``), or an alias (``film`` -> ``title``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._text import split_words

__all__ = ["MISSING", "entity_for", "field"]

MISSING: Any = object()  # "the record has no such field"

_ALIASES = {
    "film": "title",
    "movie": "title",
    "book": "title",
    "name": "title",
    "headline": "title",
    "recipe": "dish",
    "meal": "dish",
    "runtime": "minutes",
    "duration": "minutes",
    "mins": "minutes",
    "time": "minutes",
    "genre": "genres",
    "categories": "genres",
    "category": "genres",
    "tags": "genres",
    "actors": "cast",
    "stars": "rating",
    "score": "rating",
    "crew": "people",
    "released": "year",
    "published": "year",
    "writer": "author",
    "serves": "servings",
    "portions": "servings",
    "method": "steps",
    "instructions": "steps",
}

_CASABLANCA = {
    "title": "Casablanca",
    "year": 1942,
    "genres": ["drama", "romance"],
    "director": "Michael Curtiz",
    "cast": ["Humphrey Bogart", "Ingrid Bergman", "Paul Henreid"],
    "rating": 9,
    "minutes": 102,
    "budget": 0.95,
    "country": "United States",
    "language": "English",
    "people": [
        {"name": "Michael Curtiz", "role": "director"},
        {"name": "Humphrey Bogart", "role": "Rick Blaine (lead actor)"},
        {"name": "Ingrid Bergman", "role": "Ilsa Lund (lead actress)"},
    ],
    "summary": "In wartime Morocco, a cynical nightclub owner must choose between his old love and "
    "helping her husband escape the Nazis.",
}
_SPACE_ODYSSEY = {
    "title": "2001: A Space Odyssey",
    "year": 1968,
    "genres": ["science fiction", "adventure"],
    "director": "Stanley Kubrick",
    "cast": ["Keir Dullea", "Gary Lockwood"],
    "rating": 9,
    "minutes": 149,
    "budget": 10.5,
    "country": "United Kingdom",
    "language": "English",
    "people": [
        {"name": "Stanley Kubrick", "role": "director"},
        {"name": "Keir Dullea", "role": "Dr. David Bowman (lead actor)"},
        {"name": "Gary Lockwood", "role": "Dr. Frank Poole"},
    ],
    "summary": "A mysterious black monolith guides human evolution, and a mission to Jupiter goes wrong "
    "when the ship's computer, HAL 9000, turns against its crew.",
}
_PASTA = {
    "title": "Spaghetti aglio e olio",
    "dish": "Spaghetti aglio e olio",
    "minutes": 20,
    "servings": 2,
    "cuisine": "Italian",
    "difficulty": "easy",
    "ingredients": ["spaghetti", "garlic", "olive oil", "chili flakes", "parsley", "salt"],
    "steps": [
        "Cook the spaghetti in salted water.",
        "Gently fry sliced garlic and chili flakes in olive oil.",
        "Toss the drained pasta in the oil with parsley and a splash of pasta water.",
    ],
    "summary": "Spaghetti tossed with garlic, chili and olive oil: ready in 20 minutes.",
}
_STIR_FRY = {
    "title": "Vegetable stir-fry",
    "dish": "Vegetable stir-fry",
    "minutes": 25,
    "servings": 2,
    "cuisine": "Chinese",
    "difficulty": "easy",
    "ingredients": ["mixed vegetables", "garlic", "ginger", "soy sauce", "rice", "vegetable oil"],
    "steps": [
        "Cook the rice.",
        "Stir-fry garlic and ginger in hot oil, then add the vegetables.",
        "Season with soy sauce and serve over the rice.",
    ],
    "summary": "Crisp vegetables stir-fried with garlic, ginger and soy sauce, served over rice.",
}
_BOOK = {
    "title": "Pride and Prejudice",
    "author": "Jane Austen",
    "year": 1813,
    "genres": ["romance", "satire"],
    "pages": 432,
    "rating": 9,
    "language": "English",
    "summary": "Elizabeth Bennet and the proud Mr Darcy misjudge each other before finding love.",
}
_CITY = {
    "title": "Tokyo",
    "city": "Tokyo",
    "country": "Japan",
    "population": 37_400_000,
    "continent": "Asia",
    "language": "Japanese",
    "summary": "Tokyo is the capital of Japan and the largest metropolitan area in the world.",
}

#: (word sets, any of which must all appear in the prompt; the record), most specific first.
_ENTITIES: tuple[tuple[tuple[frozenset[str], ...], Mapping[str, Any]], ...] = tuple(
    (tuple(frozenset(need.split()) for need in needs), record)
    for needs, record in (
        (
            (
                "science-fiction film",
                "science-fiction movie",
                "sci-fi film",
                "sci-fi movie",
                "science fiction film",
                "science fiction movie",
                "space film",
                "space movie",
            ),
            _SPACE_ODYSSEY,
        ),
        (("film", "movie", "films", "movies"), _CASABLANCA),
        (("pasta", "spaghetti", "noodles"), _PASTA),
        (("dish", "recipe", "meal", "dinner", "lunch", "cook", "cooking"), _STIR_FRY),
        (("book", "novel", "books", "novels"), _BOOK),
        (("city", "cities"), _CITY),
    )
)


def entity_for(words: Iterable[str]) -> Mapping[str, Any] | None:
    """The example record the (lower-cased) prompt words name, or None."""
    said = set(words)
    return next((record for needs, record in _ENTITIES if any(need <= said for need in needs)), None)


def field(record: Mapping[str, Any], prop: str) -> Any:
    """The record's value for property ``prop`` (see the module docstring), or ``MISSING``."""
    if prop in record:
        return record[prop]
    lowered = prop.lower()
    if lowered in record:
        return record[lowered]
    for word in [lowered, *reversed(split_words(prop))]:
        key = word if word in record else _ALIASES.get(word)
        if key is not None and key in record:
            return record[key]
    return MISSING
