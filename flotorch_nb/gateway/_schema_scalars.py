"""Pure: scalar values for schema filling — strings and numbers chosen from the prompt.

A property's name says what it wants: ``city`` gets a place named in the prompt, ``query`` the quoted
phrase or the prompt itself, ``summary`` the assistant's answer, ``email``/``url``/``date`` what the
prompt contains of that shape; numbers are taken from the prompt in order when they fit the bounds.
A value *given* by an example record (``_data.entity_for``) is used when the prompt states nothing firm for
the field (a quoted phrase, a name, an email, a number are firm; the prompt's topic is not) and it
fits the schema. Anything else gets a plain, stable default: plausible for its name (30 minutes, 4
servings), never a bare 1. Bounds (``minimum``, ``exclusiveMaximum``, draft-04
boolean exclusives, ``multipleOf``) and string limits (``minLength``, ``maxLength``, best-effort
``pattern``) are always honoured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .._config import whole_or
from ._data import load, split_words, word_list
from ._text import Hints, first_sentence, words
from ._wire import number_or

__all__ = ["Scalars", "bounds", "fit_string", "within"]

_NEGATION = re.compile(r"\b(?:no|not|never|without|don't|disable|false)\b", re.IGNORECASE)
_STREET_RE = re.compile(
    r"\b\d+\s+(?:[A-Z][a-z]+\s+)+(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Lane|Ln|Way|Drive|Dr)\b\.?"
)


def _formats() -> dict[str, str]:
    """Values for a string property with a JSON Schema ``format`` (``data/words.toml``)."""
    formats: dict[str, str] = load("words")["formats"]
    return formats


class Scalars:
    """Scalar values for one fill; remembers which prompt numbers and names are already used."""

    def __init__(self, hints: Hints, answer: str) -> None:
        self.hints = hints
        self.answer = answer
        self.numbers = list(hints.numbers)
        self.used: set[str] = set()

    def boolean(self, schema: Mapping[str, Any]) -> bool:
        """The default if any, else true unless the prompt is phrased negatively."""
        default = schema.get("default")
        return default if isinstance(default, bool) else not _NEGATION.search(self.hints.text)

    def number(
        self, schema: Mapping[str, Any], name: str, *, integer: bool, given: Any = None
    ) -> float | int:
        """A prompt number that fits, else ``given`` if it fits, else the default or a plausible one."""
        low, high = bounds(schema, integer=integer)
        name_words = set(split_words(name))
        chosen: float | None = None
        wants_year = "year" in name_words
        for index, candidate in enumerate(self.numbers):
            if wants_year and not 1000 <= candidate <= 2999:
                continue
            if within(candidate, low, high) and (not integer or candidate.is_integer()):
                chosen = self.numbers.pop(index)
                break
        if chosen is None and _fits_number(given, schema, low, high, integer=integer):
            return round(given) if integer else given  # type: ignore[no-any-return]
        if chosen is None:
            chosen = number_or(schema.get("default"))
        if chosen is None:
            named = load("words")["named_numbers"]
            chosen = next((float(n["value"]) for n in named if set(n["words"].split()) & name_words), 1.0)
        if not within(chosen, low, high):
            chosen = _inside(chosen, low, high)
        step = schema.get("multipleOf")
        if (unit := number_or(step)) is not None and unit > 0:
            chosen = _multiple(chosen, unit, low, high)
        if integer or chosen.is_integer():
            return round(chosen)
        return chosen

    def string(self, schema: Mapping[str, Any], name: str, given: str | None = None) -> str:
        """A string for ``name``: a firm prompt fact, else ``given`` if it fits, else a weaker guess."""
        fmt = schema.get("format")
        candidate, firm = self.string_from_prompt(name, fmt if isinstance(fmt, str) else None)
        if given is not None and not firm and fmt is None and _fits_pattern(given, schema):
            candidate = given
        if candidate is None:
            examples = schema.get("examples")
            default = schema.get("default")
            if isinstance(examples, list) and examples and isinstance(examples[0], str):
                candidate = examples[0]
            elif isinstance(default, str):
                candidate = default
            elif isinstance(fmt, str) and fmt in _formats():
                candidate = _formats()[fmt]
            else:
                candidate = self.string_default(name)
        return fit_string(candidate, schema)

    def string_from_prompt(self, name: str, fmt: str | None) -> tuple[str | None, bool]:
        """A value for ``name`` from the prompt, and whether it is firm (stated, not guessed)."""
        hints = self.hints
        name_words = set(split_words(name))
        if fmt in ("email", "idn-email") or "email" in name_words:
            return (hints.emails[0], True) if hints.emails else (None, False)
        if fmt in ("uri", "url", "iri") or name_words & word_list("link"):
            return (hints.urls[0], True) if hints.urls else (None, False)
        if fmt == "date" or name_words & word_list("day"):
            return (hints.dates[0], True) if hints.dates else (None, False)
        if fmt in _formats():
            return None, False
        if name_words & {"street"}:
            street = _STREET_RE.search(hints.text)
            return (street.group(0), True) if street else (None, False)
        if name_words & word_list("place"):
            after = _place_after_preposition(hints.text)
            if after and after in hints.proper:
                self.used.add(after)
                return after, True
            named = self.fresh(hints.proper) or self.fresh(hints.quoted)
            return (named, True) if named else (after, False)
        if name_words & word_list("person"):
            named = self.fresh(hints.quoted) or self.fresh(hints.proper)
            return named, named is not None
        if name_words & word_list("math"):
            match = re.findall(r"[\d.\s()+\-*/^%]*\d[\d.\s()]*[+\-*/^%][\d.\s()+\-*/^%]*\d\)*", hints.text)
            return (max(match, key=len).strip(), True) if match else (None, False)
        if name_words & word_list("text"):
            if hints.quoted:
                return hints.quoted[0], True
            return " ".join(hints.text.split())[:300] or None, False
        if name_words & word_list("prose"):
            return first_sentence(self.answer or hints.text, 40) or None, False
        if name_words & word_list("label"):
            return (hints.quoted[0], True) if hints.quoted else (hints.topic, False)
        if name_words & word_list("language"):
            default, *others = load("words")["values"]["languages"]
            found = next((lang for lang in others if lang.lower() in hints.text.lower()), None)
            return (found, True) if found else (default, False)
        if name_words & word_list("sentiment"):
            said = set(words(hints.text))
            pos, neg = len(said & word_list("positive")), len(said & word_list("negative"))
            return "positive" if pos > neg else "negative" if neg > pos else "neutral", False
        return None, False

    def fresh(self, options: tuple[str, ...]) -> str | None:
        """The first option not used by an earlier property (so two names do not repeat)."""
        for option in options:
            if option not in self.used:
                self.used.add(option)
                return option
        return None

    def string_default(self, name: str) -> str:
        """A plausible value for a property by the words of its name (``string_defaults`` in
        ``data/words.toml``: the first entry sharing a word wins), else the prompt's topic."""
        words = set(split_words(name))
        if words & word_list("place"):
            return "Springfield"
        if words & word_list("person"):
            return "Alex"
        if "id" in words or "uuid" in words:
            return f"{name or 'item'}-1"
        defaults = load("words")["string_defaults"]
        found = next((d["value"] for d in defaults if set(d["words"].split()) & words), None)
        if isinstance(found, str):
            return found
        if self.hints.quoted:  # what the prompt quotes is what it means ("the price of 'ACME'")
            return self.hints.quoted[0]
        topic = self.hints.topic
        return topic if topic != "your request" else "example"


def _fits_number(value: Any, schema: Mapping[str, Any], low: _Bound, high: _Bound, *, integer: bool) -> bool:
    if number_or(value) is None or not math.isfinite(value):
        return False
    if integer and not float(value).is_integer():
        return False
    step = number_or(schema.get("multipleOf"))
    if step is not None and step > 0 and not float(value / step).is_integer():
        return False
    return within(float(value), low, high)


def _fits_pattern(value: str, schema: Mapping[str, Any]) -> bool:
    pattern = schema.get("pattern")
    if not isinstance(pattern, str):
        return True
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return False


# A bound is (value, exclusive); None means unbounded on that side.
_Bound = tuple[float, bool] | None


def bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[_Bound, _Bound]:
    """Lower and upper bounds, folding draft-04 boolean and newer numeric ``exclusive*`` keywords."""
    sides: list[_Bound] = []
    for inclusive, exclusive, is_lower in (
        ("minimum", "exclusiveMinimum", True),
        ("maximum", "exclusiveMaximum", False),
    ):
        bound: _Bound = None
        value = number_or(schema.get(inclusive))
        flag = schema.get(exclusive)
        if value is not None:
            bound = (value, flag is True)
        strict = number_or(flag)
        if strict is not None and (bound is None or (strict >= bound[0] if is_lower else strict <= bound[0])):
            bound = (strict, True)
        if bound is not None and integer:  # integers: make the bound inclusive and whole
            edge, excl = bound
            if is_lower:
                bound = (math.floor(edge) + 1.0 if excl else float(math.ceil(edge)), False)
            else:
                bound = (math.ceil(edge) - 1.0 if excl else float(math.floor(edge)), False)
        sides.append(bound)
    return sides[0], sides[1]


def within(value: float, low: _Bound, high: _Bound) -> bool:
    if low is not None and (value < low[0] or (low[1] and value == low[0])):
        return False
    return not (high is not None and (value > high[0] or (high[1] and value == high[0])))


def _inside(value: float, low: _Bound, high: _Bound) -> float:
    """A value within the bounds: the middle when both exist, else just inside the one that does."""
    if low is not None and high is not None:
        if not low[1] and value < low[0]:
            return low[0]
        if not high[1] and value > high[0]:
            return high[0]
        return (low[0] + high[0]) / 2
    if low is not None:
        return low[0] + 1 if low[1] else low[0]
    if high is not None:
        return high[0] - 1 if high[1] else high[0]
    return value


def _multiple(value: float, step: float, low: _Bound, high: _Bound) -> float:
    up = math.ceil(value / step) * step
    if within(up, low, high):
        return up
    down = math.floor(value / step) * step
    return down if within(down, low, high) else value


def _place_after_preposition(text: str) -> str | None:
    """The word(s) after "in"/"at"/"from"/"to"/"near": "weather in paris" -> "Paris"."""
    match = re.search(
        r"\b(?:in|at|from|to|near)\s+(?!the\b|a\b)([A-Za-z][A-Za-z\-]+(?:\s+[A-Z][a-z]+)*)", text
    )
    if not match:
        return None
    place = match.group(1)
    return place[:1].upper() + place[1:]


def fit_string(value: str, schema: Mapping[str, Any]) -> str:
    low = whole_or(schema.get("minLength")) or 0
    high = whole_or(schema.get("maxLength"))
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        value = _matching(value, pattern)
    if high is not None and len(value) > high:
        value = value[:high]
    if len(value) < low:  # repeat the value itself rather than pad with junk characters
        if not value:
            value = "x"
        # value + " value" * k, with the fewest k that reach low (one join, not a loop of copies)
        repeats = -(-(low - len(value)) // (len(value) + 1))
        value = value + f" {value}" * max(repeats, 0)
        value = value[: max(low, high or 0)] if high is not None else value
    return value


def _matching(value: str, pattern: str) -> str:
    """Best effort: keep ``value`` if ``pattern`` finds it (JSON Schema searches), else a common shape."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return value
    if compiled.search(value):
        return value
    return next((t for t in load("words")["values"]["pattern_tries"] if compiled.search(t)), value)
