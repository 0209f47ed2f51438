"""Pure: produce a JSON value that is valid against a JSON schema, using facts from the prompt.

This is how the offline models answer structured-output requests and fill tool-call arguments without
an LLM. It covers what chat APIs send in practice (pydantic / OpenAI strict schemas): objects, arrays,
strings with ``enum``/``format``/length limits, integers and numbers with bounds and ``multipleOf``,
booleans, ``null``, ``$ref`` into ``$defs``/``definitions``, ``allOf`` (merged), ``anyOf``/``oneOf``
(first non-null option), type lists (nullable). ``pattern`` is honoured on a best-effort basis (a few
common shapes are tried); ``if``/``then``, ``not`` and remote ``$ref`` are ignored.

Values come from the prompt where a property's name says what it wants: a ``city`` gets a capitalised
place from the prompt, a ``query`` gets the quoted phrase or the prompt, numbers are taken in order,
an enum value mentioned in the prompt wins. Everything else gets a plain, stable default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._schema_scalars import Scalars, bounds, fit_string, int_or, number_or, within
from ._text import ASPECTS, Hints, split_words, wordset

__all__ = ["fill_schema"]

_MAX_DEPTH = 24  # hard stop for pathological recursive schemas
_FULL_DEPTH = 4  # below this depth, optional properties are filled too; deeper, only required ones

_SHAPED = frozenset({"enum", "const", "format", "pattern", "anyOf", "oneOf", "minLength"})
_SENTENCE_LISTS = wordset(
    """steps step instructions tips ideas points suggestions recommendations pros cons benefits reasons
    sentences questions examples bullets highlights takeaways"""
)


def fill_schema(schema: Any, hints: Hints, *, answer: str = "") -> Any:
    """Return a value valid against ``schema``; ``answer`` fills prose fields such as ``summary``."""
    return _Filler(schema, hints, answer).value(schema, "", 0)


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

    # -- schema plumbing -------------------------------------------------------------------------
    def resolve(self, schema: Any) -> Any:
        for _ in range(32):  # follow $ref chains, merge allOf, keep sibling keywords
            if not isinstance(schema, Mapping):
                return schema
            ref = schema.get("$ref")
            if isinstance(ref, str):
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                schema = _merge(self.lookup(ref), rest)
                continue
            parts = schema.get("allOf")
            if isinstance(parts, list) and parts:
                merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
                for part in parts:
                    resolved = self.resolve(part)
                    if isinstance(resolved, Mapping):
                        merged = _merge(merged, resolved)
                schema = merged
                continue
            return schema
        return {}

    def lookup(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            return {}  # remote references are not fetched (no I/O here)
        node: Any = self.root
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

    def value(self, schema: Any, name: str, depth: int) -> Any:
        schema = self.resolve(schema)
        if schema is False or depth > _MAX_DEPTH:
            return None
        if not isinstance(schema, Mapping) or not schema:
            return self.scalars.string({}, name)  # `true` / `{}` accept anything
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self.pick_enum(enum, schema.get("default"))
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                chosen = next((o for o in options if not _is_null(self.resolve(o))), options[0])
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                chosen = self.resolve(chosen)
                combined = _merge(rest, chosen) if isinstance(chosen, Mapping) else rest
                return self.value(combined, name, depth)
        kind = self.kind(schema)
        if kind == "object":
            return self.object(schema, name, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind in ("integer", "number"):
            return self.scalars.number(schema, name, integer=kind == "integer")
        if kind == "boolean":
            return self.scalars.boolean(schema)
        if kind == "null":
            return None
        return self.scalars.string(schema, name)

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
        text = self.hints.text.lower()
        for option in enum:
            if isinstance(option, str) and option and re.search(rf"\b{re.escape(option.lower())}\b", text):
                return option
        return default if default in enum else enum[0]

    # -- containers ------------------------------------------------------------------------------
    def object(self, schema: Mapping[str, Any], name: str, depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        wanted = list(props) if depth < _FULL_DEPTH else [p for p in props if p in required]
        out: dict[str, Any] = {}
        for prop in wanted:
            out[prop] = self.value(props[prop], prop, depth + 1)
        for prop in required:
            if prop not in out:
                extra = schema.get("additionalProperties")
                out[prop] = self.value(extra if isinstance(extra, Mapping) else {}, prop, depth + 1)
        if not props and not required and depth == 0:
            extra = schema.get("additionalProperties", True)
            if extra is not False:
                out["answer"] = self.value(extra if isinstance(extra, Mapping) else {}, "answer", 1)
        return out

    def array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        low = int_or(schema.get("minItems"), 0)
        high = int_or(schema.get("maxItems"), None)
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        item_schema = self.resolve(items)
        item_kind = self.kind(item_schema) if isinstance(item_schema, Mapping) else "any"
        plain = item_kind == "string" and not (_SHAPED & set(item_schema))
        phrases = self.phrases(name) if plain else []
        if depth >= _FULL_DEPTH:
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
        for index in range(count):
            if index < len(prefix):
                value = self.value(prefix[index], singular, depth + 1)
            elif plain and index - len(prefix) < len(phrases):
                value = fit_string(phrases[index - len(prefix)], item_schema)
            else:
                value = self.value(item_schema, singular, depth + 1)
            if schema.get("uniqueItems") and value in out:
                value = self.unique_variant(item_schema, out, value)
                if value is _NO_VALUE:
                    break
            out.append(value)
        return out

    def phrases(self, name: str) -> list[str]:
        """Items for a plain string array: sentences for "steps"/"tips", prompt keywords otherwise."""
        if set(split_words(name)) & _SENTENCE_LISTS:
            return [aspect.format(t=self.hints.topic) for aspect in ASPECTS[:3]]
        return list(self.hints.keywords[:5])

    def unique_variant(self, item_schema: Any, taken: list[Any], value: Any) -> Any:
        """Another valid item that is not in ``taken``, or ``_NO_VALUE`` when none is easy to make."""
        if isinstance(item_schema, Mapping) and isinstance(item_schema.get("enum"), list):
            return next((option for option in item_schema["enum"] if option not in taken), _NO_VALUE)
        if isinstance(value, bool):
            return _NO_VALUE if (not value) in taken else not value
        if isinstance(value, str):
            return next(v for i in range(2, len(taken) + 3) if (v := f"{value} {i}") not in taken)
        if isinstance(value, int | float) and isinstance(item_schema, Mapping):
            low, high = bounds(item_schema, integer=isinstance(value, int))
            unit = number_or(item_schema.get("multipleOf"))
            unit = unit if unit is not None and unit > 0 else 1.0
            for step in range(1, len(taken) + 2):
                for candidate in (value + step * unit, value - step * unit):
                    if candidate not in taken and within(candidate, low, high):
                        return round(candidate) if isinstance(value, int) else candidate
        return _NO_VALUE
