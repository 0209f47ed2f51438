"""Pure: JSON-mode answers (``response_format: {"type": "json_object"}``) that honour the prompt.

JSON mode has no schema: the prompt says what it wants ("a JSON object whose key "colors" lists the
three primary colours"). So the keys are read from the prompt, and each value from the words that
describe it:

- keys: quoted or back-quoted names near "key", "field" or "property" (or followed by ``:``), and
  unquoted lists after "keys"/"fields" ("with keys name, age and city"); without any, a "list N
  things" request becomes ``{"things": [...]}``, and anything else ``{"answer": "..."}``;
- a value described as a list (or counted, or a plural key) is an array: a known list when the words
  name one (``lists`` in ``data/knowledge.toml``), else numbered placeholders; numbers, booleans and
  strings come from the prompt the way schema fields do (``_schema_scalars``), the answer text
  filling prose.
"""

from __future__ import annotations

import re
from typing import Any

from ._data import list_for, split_words, word_list
from ._schema_scalars import Scalars
from ._text import asked_count, hints_from, stem, words

__all__ = ["json_object", "named_keys"]

_NAME = r"[A-Za-z_][\w\-]{0,40}"
_QUOTED_KEY = re.compile(rf"[\"'`\u201c\u2018]({_NAME})[\"'`\u201d\u2019](\s*:)?")
_KEY_WORDS = re.compile(r"\b(?:keys?|fields?|propert(?:y|ies)|named|called|attributes?)\b", re.IGNORECASE)
_UNQUOTED_KEYS = re.compile(
    rf"\b(?:keys|fields|properties|attributes)\s+(?:named\s+|called\s+)?"
    rf"({_NAME}(?:\s*,\s*{_NAME})*(?:\s*,?\s+and\s+{_NAME})?)",
    re.IGNORECASE,
)
_LISTED = re.compile(r"\b(?:list|name|give(?:\s+me)?)\s+(?:the\s+)?(?:(\w+)\s+)?([a-z]+s)\b", re.IGNORECASE)
_DEFAULT_ITEMS = 3


def named_keys(prompt: str) -> list[tuple[str, str]]:
    """(key, the words describing it) for every key the prompt names, in order."""
    found: list[tuple[str, int, int]] = []  # key, where it starts, where its description starts
    for match in _QUOTED_KEY.finditer(prompt):
        before = prompt[max(0, match.start() - 40) : match.start()]
        after = prompt[match.end() : match.end() + 12]
        if (
            match.group(2)
            or _KEY_WORDS.search(before)
            or _KEY_WORDS.match(after.lstrip())
            or (found and re.search(r"\band\s*$|,\s*$", before))
        ):
            found.append((match.group(1), match.start(), match.end()))
    keys: list[tuple[str, str]] = []
    for index, (key, _start, described_from) in enumerate(found):
        end = found[index + 1][1] if index + 1 < len(found) else len(prompt)
        description = re.split(r"[.;\n]", prompt[described_from:end], maxsplit=1)[0]
        if key not in dict(keys):
            keys.append((key, description.strip()))
    if not keys:  # "with keys name, age and city": what follows is data, not a description
        for match in _UNQUOTED_KEYS.finditer(prompt):
            for name in re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", match.group(1)):
                if name and name.lower() not in word_list("stopwords") and name not in dict(keys):
                    keys.append((name, ""))
    return keys


def _listed(prompt: str) -> tuple[str, str] | None:
    """``("colors", "three colors")`` for "List three colors as JSON"."""
    match = _LISTED.search(prompt)
    if not match or match.group(2).lower() in word_list("stopwords"):
        return None
    return match.group(2).lower(), match.group(0)


def _value(key: str, description: str, scalars: Scalars) -> Any:
    described = set(words(description))
    said = described | set(split_words(key))
    count = asked_count(description)
    known = list_for(said)
    if said & word_list("json_bool"):
        return scalars.boolean({})
    if said & word_list("json_number") and not (known or described & word_list("json_list")):
        return scalars.number({}, key, integer=True)
    plural_key = key.lower().endswith("s") and not key.lower().endswith("ss") and len(key) > 3
    if known or described & word_list("json_list") or (count is not None and count > 1) or plural_key:
        if known:
            return list(known[1][: count or len(known[1])])
        singular = stem((split_words(key) or ["item"])[-1])
        return [f"{singular} {index}" for index in range(1, (count or _DEFAULT_ITEMS) + 1)]
    return scalars.string({}, key)


def json_object(prompt: str, answer: str) -> dict[str, Any]:
    """The JSON object to answer ``prompt`` with in JSON mode (see the module docstring)."""
    keys = named_keys(prompt)
    if not keys:
        listed = _listed(prompt)
        if listed is None:
            return {"answer": answer}
        keys = [listed]
    # A quoted key is not a quoted value: facts for the values come from the prompt without them.
    named = {key for key, _ in keys}
    plain = _QUOTED_KEY.sub(lambda m: m.group(1) if m.group(1) in named else m.group(0), prompt)
    scalars = Scalars(hints_from(plain), answer)
    return {key: _value(key, description, scalars) for key, description in keys}
