"""Pure: produce a JSON value that is valid against a JSON schema, using facts from the prompt.

This is how the offline models answer structured-output requests and fill tool-call arguments without
an LLM. It covers what chat APIs send in practice (pydantic / OpenAI strict schemas): objects, arrays,
strings with ``enum``/``format``/length limits, integers and numbers with bounds and ``multipleOf``,
booleans, ``null``, ``$ref`` into ``$defs``/``definitions``, ``allOf`` (merged), ``anyOf``/``oneOf``
(first non-null option), type lists (nullable). ``pattern`` is honoured on a best-effort basis (a few
common shapes are tried); ``if``/``then``, ``not`` and remote ``$ref`` are ignored.

Values come from the prompt where a property's name says what it wants: a ``city`` gets a capitalised
place from the prompt, a ``query`` gets the quoted phrase or the prompt, numbers are taken in order,
an enum value mentioned in the prompt wins. When the prompt names a kind of thing the gateway has an
example record of (a film, a dish: ``_data.entity_for``), fields the prompt does not settle come from that
record, each checked against its schema first. Everything else gets a plain, stable default.

The gateway plans on its event loop, so a fill must stay small whatever the schema asks (see
``MAX_SIZE`` and below): an oversized keyword is refused up front, and a fill that grows past the limits
stops with ``SchemaTooLargeError``. Both become a 400 in OpenAI's error shape. The bounds keep the
worst fill to a fraction of a second (about 0.2 s measured), so planning stays on the event loop: a
thread per request would cost every benchmark request a hand-off, and a runaway thread could not be
stopped anyway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .._config import whole_or
from ._data import MISSING, entity_for, field, phrases, split_words, word_list
from ._schema_scalars import Scalars, bounds, fit_string, within
from ._text import Hints, words
from ._wire import number_or

__all__ = [
    "MAX_CHARS",
    "MAX_SIZE",
    "MAX_STEPS",
    "MAX_VALUES",
    "SchemaTooLargeError",
    "fill_schema",
    "oversized_keyword",
]

#: The largest ``minItems`` / ``minLength`` / ``minProperties`` / ``minContains`` a schema may ask for.
MAX_SIZE = 1000
#: The most values (objects, arrays, scalars) one fill may make: 10x a maximal flat array.
MAX_VALUES = 10 * MAX_SIZE
#: The most characters of text one fill may make: room for a maximal flat array of maximal strings.
MAX_CHARS = 2 * MAX_SIZE * MAX_SIZE
#: The most schema work one fill may do: $ref/allOf merges (by what they copy), anyOf/enum scans.
MAX_STEPS = 200_000
_SIZE_KEYWORDS = ("minItems", "minLength", "minProperties", "minContains")

_MAX_DEPTH = 24  # hard stop for pathological recursive schemas
_FULL_DEPTH = 4  # below this depth, optional properties are filled too; deeper, only required ones

_SHAPED = frozenset({"enum", "const", "format", "pattern", "anyOf", "oneOf", "minLength"})


def fill_schema(schema: Any, hints: Hints, *, answer: str = "") -> Any:
    """Return a value valid against ``schema``; ``answer`` fills prose fields such as ``summary``.

    Raises ``SchemaTooLargeError`` when the answer would need more than ``MAX_VALUES`` values,
    ``MAX_CHARS`` characters of text or ``MAX_STEPS`` steps of schema work.
    """
    filler = _Filler(schema, hints, answer)
    record = entity_for(words(hints.text))
    return filler.value(schema, "", 0, record if record is not None else MISSING)


class SchemaTooLargeError(Exception):
    """The schema asks for an answer larger than the offline gateway makes (see the module docstring)."""


def oversized_keyword(schema: Any) -> tuple[str, float] | None:
    """The first size keyword above ``MAX_SIZE`` in ``schema`` (its JSON pointer and value), if any.

    Walks every nested object and list (not only where a keyword is meaningful: cheap, and safe for
    anything a ``$ref`` may point at), without recursion, so a deep schema cannot exhaust the stack.
    """
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, pointer = stack.pop()
        if isinstance(node, Mapping):
            for keyword in _SIZE_KEYWORDS:
                size: Any = node.get(keyword)
                if (number_or(size) or 0) > MAX_SIZE:
                    return f"{pointer}/{keyword}", size
            stack.extend((child, f"{pointer}/{key}") for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, f"{pointer}/{index}") for index, child in enumerate(node))
    return None


def _unique_key(value: Any) -> Any:
    """What ``uniqueItems`` compares: JSON's distinctions (``true`` is not ``1``), ``1`` equal to ``1.0``."""
    number = number_or(value)
    return number if number is not None else json.dumps(value, sort_keys=True)


def _is_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Combine two schemas for allOf / $ref siblings: properties merged, required united."""
    merged = dict(base)
    for key, val in extra.items():
        if key == "properties" and isinstance(merged.get(key), Mapping) and isinstance(val, Mapping):
            merged[key] = {**merged[key], **val}
        elif key == "required" and isinstance(merged.get(key), list) and isinstance(val, list):
            merged[key] = list(dict.fromkeys([*merged[key], *val]))
        else:
            merged[key] = val
    return merged


_NO_VALUE: Any = object()  # "no further unique item can be made"


class _Filler:
    """One fill: holds the root (for $ref) and the prompt facts not yet used (numbers, names)."""

    def __init__(self, root: Any, hints: Hints, answer: str) -> None:
        self.root = root
        self.hints = hints
        self.scalars = Scalars(hints, answer)
        self.made = 0  # values made so far, against MAX_VALUES
        self.chars = 0  # characters of text made so far, against MAX_CHARS
        self.steps = 0  # schema work so far, against MAX_STEPS
        # Per enum list (alive as long as the schema): the option the prompt mentions, and for
        # which default object whether it is an option.
        self.mentioned: dict[int, tuple[list[Any], Any, Any, bool]] = {}

    # -- schema plumbing -------------------------------------------------------------------------
    def resolve(self, schema: Any) -> Any:
        for _ in range(32):  # follow $ref chains, merge allOf, keep sibling keywords
            if not isinstance(schema, Mapping):
                return schema
            ref = schema.get("$ref")
            if isinstance(ref, str):
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = self.merge(self.lookup(ref), rest)
                continue
            parts = schema.get("allOf")
            if isinstance(parts, list) and parts:
                merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
                for part in parts:
                    resolved = self.resolve(part)
                    if isinstance(resolved, Mapping):
                        merged = self.merge(merged, resolved)
                schema = merged
                continue
            return schema
        return {}

    def merge(self, base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        """``_merge``, paid for by what it copies (allOf parts that reference each other multiply)."""
        properties = base.get("properties")
        self.spend(1 + len(base) + len(extra) + (len(properties) if isinstance(properties, Mapping) else 0))
        return _merge(base, extra)

    def spend(self, steps: int) -> None:
        """Count schema work ($ref and allOf merges, anyOf and enum scans) against ``MAX_STEPS``."""
        self.steps += steps
        if self.steps > MAX_STEPS:
            raise SchemaTooLargeError(
                f"the schema takes more than {MAX_STEPS} steps to resolve ($ref and allOf merges, "
                "anyOf/oneOf options and enum values are counted)"
            )

    def lookup(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            return {}  # remote references are not fetched (no I/O here)
        node: Any = self.root
        self.spend(ref.count("/"))
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return {}
        return node if isinstance(node, Mapping) else {}

    def value(self, schema: Any, name: str, depth: int, given: Any = MISSING) -> Any:
        """A value for ``schema``; ``given`` (from an example record) is used where it fits.

        Every value counts against ``MAX_VALUES`` and every leaf against the text budget.
        """
        self.made += 1
        if self.made > MAX_VALUES:
            raise SchemaTooLargeError(
                f"the schema asks for an answer of more than {MAX_VALUES} values (nested or recursive "
                "arrays multiply their minItems)"
            )
        schema = self.resolve(schema)
        if schema is False or depth > _MAX_DEPTH:
            return None
        if not isinstance(schema, Mapping) or not schema:  # `true` / `{}` accept anything
            if isinstance(given, str | int | float | bool) and not isinstance(given, Mapping | list):
                return self.charge(given)
            return self.charge(self.scalars.string({}, name))
        if "const" in schema:
            return self.charge(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            found = self.pick_enum(enum, schema.get("default"))
            if given is not MISSING and given in enum and self.mention(enum) is _NO_VALUE:
                found = given
            return self.charge(found)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                chosen = options[0]
                for option in options:
                    self.spend(1)
                    if not _is_null(self.resolve(option)):
                        chosen = option
                        break
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                chosen = self.resolve(chosen)
                combined = _merge(rest, chosen) if isinstance(chosen, Mapping) else rest
                return self.value(combined, name, depth, given)
        kind = self.kind(schema)
        if kind == "object":
            return self.object(schema, name, depth, given)
        if kind == "array":
            return self.array(schema, name, depth, given)
        if kind in ("integer", "number"):
            return self.scalars.number(schema, name, integer=kind == "integer", given=given)
        if kind == "boolean":
            return given if isinstance(given, bool) else self.scalars.boolean(schema)
        if kind == "null":
            return None
        if isinstance(given, list) and given and isinstance(given[0], str):
            given = given[0]  # a record's genres for a single "genre"
        return self.charge(self.scalars.string(schema, name, given=given if isinstance(given, str) else None))

    @staticmethod
    def kind(schema: Mapping[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, list):
            non_null = [t for t in declared if t != "null"]
            declared = non_null[0] if non_null else "null"
        if isinstance(declared, str):
            return declared
        if {"properties", "required", "additionalProperties"} & schema.keys():
            return "object"
        if {"items", "prefixItems", "minItems", "maxItems"} & schema.keys():
            return "array"
        if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & schema.keys():
            return "number"
        return "string"

    def pick_enum(self, enum: list[Any], default: Any) -> Any:
        """The first option the prompt mentions as a word, else the default, else the first option."""
        cached = self.mentioned.get(id(enum))
        if cached is None or cached[0] is not enum or cached[2] is not default:
            self.spend(len(enum))
            cached = self.mentioned[id(enum)] = (enum, self.mention(enum), default, default in enum)
        _, found, _, default_allowed = cached
        if found is not _NO_VALUE:
            return found
        return default if default_allowed else enum[0]

    def mention(self, enum: list[Any]) -> Any:
        text = f"{self.hints.text}\n{self.hints.context}".lower()
        for option in enum:
            if not isinstance(option, str) or not option:
                continue
            lowered = option.lower()
            # The substring test first: one regex compiled per option would be slow for long enums.
            if lowered in text and re.search(rf"\b{re.escape(lowered)}\b", text):
                return option
        return _NO_VALUE

    # -- containers ------------------------------------------------------------------------------
    def object(
        self, schema: Mapping[str, Any], name: str, depth: int, given: Any = MISSING
    ) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        needed = set(required)
        wanted = list(props) if depth < _FULL_DEPTH else [p for p in props if p in needed]
        out: dict[str, Any] = {}
        record = given if isinstance(given, Mapping) else None
        for prop in wanted:
            out[prop] = self.value(props[prop], prop, depth + 1, field(record, prop) if record else MISSING)
        for prop in required:
            if prop not in out:
                extra = schema.get("additionalProperties")
                out[prop] = self.value(extra if isinstance(extra, Mapping) else {}, prop, depth + 1)
        if not props and not required and depth == 0:
            extra = schema.get("additionalProperties", True)
            if extra is not False:
                out["answer"] = self.value(extra if isinstance(extra, Mapping) else {}, "answer", 1)
        return out

    def array(self, schema: Mapping[str, Any], name: str, depth: int, given: Any = MISSING) -> list[Any]:
        low = whole_or(schema.get("minItems")) or 0
        high = whole_or(schema.get("maxItems"))
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        item_schema = self.resolve(items)
        item_kind = self.kind(item_schema) if isinstance(item_schema, Mapping) else "any"
        plain = item_kind == "string" and not (_SHAPED & set(item_schema))
        phrases = self.phrases(name) if plain else []
        examples = given if isinstance(given, list) and not prefix else []
        if examples and depth < _FULL_DEPTH:
            count = len(examples)
        elif depth >= _FULL_DEPTH:
            count = low
        elif item_kind in ("integer", "number"):
            count = min(max(len(self.scalars.numbers), 2), 10)
        elif plain:
            count = min(max(len(phrases), 1), 5)
        else:
            count = 2
        count = max(count, low) if items is not False else min(max(count, low), len(prefix))
        count = max(count, len(prefix)) if items is not False else count
        if high is not None:
            count = min(count, high)
        singular = name[:-1] if name.endswith("s") else name
        out: list[Any] = []
        # uniqueItems: the keys of the items so far, and where each variant search stopped
        taken: set[Any] | None = set() if schema.get("uniqueItems") else None
        cursor: dict[Any, int] = {}
        for index in range(count):
            if index < len(prefix):
                value = self.value(prefix[index], singular, depth + 1)
            elif index < len(examples):
                example = examples[index]
                if plain and isinstance(example, str):
                    value = self.charge(fit_string(example, item_schema))
                else:
                    value = self.value(item_schema, singular, depth + 1, example)
            elif plain and index - len(prefix) < len(phrases):
                value = self.charge(fit_string(phrases[index - len(prefix)], item_schema))
            else:
                value = self.value(item_schema, singular, depth + 1)
            if taken is not None:
                if _unique_key(value) in taken:
                    if isinstance(value, str):
                        self.chars -= len(value)  # replaced: only the variant is in the answer
                    value = self.unique_variant(item_schema, taken, cursor, value)
                    if value is _NO_VALUE:
                        break
                taken.add(_unique_key(value))
            out.append(value)
        return out

    def phrases(self, name: str) -> list[str]:
        """Items for a plain string array: sentences for "steps"/"tips", prompt keywords otherwise."""
        if set(split_words(name)) & word_list("sentence_lists"):
            return [aspect.format(t=self.hints.topic) for aspect in phrases()["lists"]["aspects"][:3]]
        return list(self.hints.keywords[:5])

    def unique_variant(self, item_schema: Any, taken: set[Any], cursor: dict[Any, int], value: Any) -> Any:
        """Another valid item that is not in ``taken``, or ``_NO_VALUE`` when none is easy to make.

        Each search resumes where the previous one for the same value stopped (``cursor``):
        items only accumulate, so what was taken stays taken, and a long array costs linear time.
        """
        if isinstance(item_schema, Mapping) and isinstance(item_schema.get("enum"), list):
            options = item_schema["enum"]
            for index in range(cursor.get("enum", 0), len(options)):
                if _unique_key(options[index]) not in taken:
                    cursor["enum"] = index + 1
                    return self.charge(options[index])
            cursor["enum"] = len(options)
            return _NO_VALUE
        if isinstance(value, bool):
            return _NO_VALUE if _unique_key(not value) in taken else not value
        if isinstance(value, str):
            index = cursor.get(("s", value), 2)
            while _unique_key(f"{value} {index}") in taken:
                index += 1
            cursor[("s", value)] = index + 1
            return self.charge(f"{value} {index}")
        if isinstance(value, int | float) and isinstance(item_schema, Mapping):
            low, high = bounds(item_schema, integer=isinstance(value, int))
            unit = number_or(item_schema.get("multipleOf"))
            unit = unit if unit is not None and unit > 0 else 1.0
            for step in range(cursor.get(("n", value), 1), len(taken) + 2):
                for candidate in (value + step * unit, value - step * unit):
                    if _unique_key(candidate) not in taken and within(candidate, low, high):
                        cursor[("n", value)] = step
                        return round(candidate) if isinstance(value, int) else candidate
            cursor[("n", value)] = len(taken) + 2
        return _NO_VALUE

    # -- the size budget -------------------------------------------------------------------------
    def charge(self, made: Any) -> Any:
        """Count ``made`` against ``MAX_CHARS`` (strings by length, const/enum objects by their JSON)."""
        if isinstance(made, str):
            self.chars += len(made)
        elif isinstance(made, Mapping | list):
            self.chars += len(json.dumps(made, default=str))
        if self.chars > MAX_CHARS:
            raise SchemaTooLargeError(
                f"the schema asks for an answer of more than {MAX_CHARS} characters of text"
            )
        return made
