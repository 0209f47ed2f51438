"""Pure: the offline models grade an LLM-judge prompt, deterministically and meaningfully.

**The judge-prompt contract** (``flotorch_nb.evals``' ``scorers.judge`` writes its prompt this way;
anyone may): the system and user messages hold lines that *start* with a bracketed marker, optionally
followed by a colon. The value runs from the marker to the next marker line, a ``***`` line or
``[END DATA]``. Markers, case-insensitive:

- the answer being graded: ``[Answer]``, ``[Submission]`` or ``[Response]`` (required);
- the reference: ``[Reference]``, ``[Target]``, ``[Expected]`` or ``[Criterion]`` (inspect-ai's
  ``model_graded_qa`` puts the target there);
- anything else (``[Question]``, ``[Task]``, ``[Rubric]``) is read by a person, not by the grade.

**The grade**: both texts are normalised (lower case; every run of characters that are not letters or
digits becomes one space; trimmed). The answer is *correct* when the normalised reference is not empty
and occurs in the normalised answer on word boundaries ("Paris" is in "It is Paris.", "10" is not in
"100"), else *incorrect*. Without a reference, a non-empty answer is correct. The explanation says
which, quoting the reference. Same prompt, same grade.

**How it is sent** (the request's format decides):

- ``response_format`` ``json_schema``: the schema is filled as usual, then each top-level property is
  set by its name's words: ``score``/``grade``/``verdict``/``correct``/``passed``/``rating``/``label``/
  ``result`` get the grade (a boolean ``true``/``false``; a number the schema's ``maximum`` / ``minimum``,
  else 1 / 0; a string enum the option that means it, e.g. ``"C"``/``"I"``, ``"correct"``/``"incorrect"``,
  ``"pass"``/``"fail"``, ``"yes"``/``"no"``, else its first / last option; another string ``"correct"`` /
  ``"incorrect"``), and ``explanation``/``reason``/``reasoning``/``rationale``/``justification``/
  ``feedback`` get the explanation;
- ``json_object``: ``{"grade": "correct"|"incorrect", "score": 1|0, "explanation": "..."}``;
- text: the explanation, a blank line, then ``GRADE: C`` or ``GRADE: I`` (inspect-ai's pattern).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._data import phrases, split_words, word_list
from ._validate import Message

__all__ = ["Grade", "grade_of", "graded_json", "graded_text"]

# Only spaces and tabs around a marker: a \s* at a line start would rescan every run of blank lines.
_MARKER = re.compile(r"^[ \t]*\[([A-Za-z ]{1,40})\][ \t]*:?[ \t]?", re.MULTILINE)
_END = re.compile(r"^[ \t]*(?:\*\*\*|\[END DATA\])[ \t]*$", re.MULTILINE | re.IGNORECASE)
_ANSWER = ("answer", "submission", "response")  # in this order when a prompt has several
_REFERENCE = ("reference", "target", "expected", "criterion")


@dataclass(frozen=True, slots=True)
class Grade:
    """A judge's verdict on one answer."""

    correct: bool
    explanation: str


def normalise(text: str) -> str:
    """Lower case, runs of non-alphanumerics as one space, trimmed (the contract's normalisation)."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def grade_of(messages: Sequence[Message]) -> Grade | None:
    """The grade of a judge prompt (see the module docstring), or None when it is not one."""
    text = "\n".join(m.text for m in messages if m.role in ("system", "developer", "user"))
    fields = _fields(text)
    answer = next((fields[k] for k in _ANSWER if k in fields), None)
    if answer is None:
        return None
    reference = next((fields[k] for k in _REFERENCE if k in fields), None)
    said, meant = normalise(answer), normalise(reference or "")
    why = phrases()["judge"]
    if reference is None:
        return Grade(bool(said), why["no_reference" if said else "empty"])
    correct = bool(meant) and f" {meant} " in f" {said} "
    shown = " ".join(reference.split())
    return Grade(correct, why["contains" if correct else "lacks"].format(reference=shown))


def _fields(text: str) -> dict[str, str]:
    """Marker name (lower case) -> its value, for the markers the grade reads (the first of each wins)."""
    found: dict[str, str] = {}
    marks = list(_MARKER.finditer(text))
    for index, mark in enumerate(marks):
        name = " ".join(mark.group(1).lower().split())
        if name not in (*_ANSWER, *_REFERENCE) or name in found:
            continue
        end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
        stop = _END.search(text, mark.end(), end)
        found[name] = text[mark.end() : stop.start() if stop else end].strip()
    return found


def graded_text(grade: Grade) -> str:
    """The text form: the explanation, then ``GRADE: C`` or ``GRADE: I``."""
    return f"{grade.explanation}\n\nGRADE: {'C' if grade.correct else 'I'}"


def graded_json(grade: Grade, schema: Any, filled: Any) -> Any:
    """``filled`` (a value valid against ``schema``) with its grade and explanation fields set."""
    if schema is None:
        return {
            "grade": "correct" if grade.correct else "incorrect",
            "score": 1 if grade.correct else 0,
            "explanation": grade.explanation,
        }
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(filled, dict) or not isinstance(props, Mapping):
        return filled
    for name, prop in props.items():
        named = set(split_words(name))
        prop = _plain(prop)
        if prop is None or name not in filled:
            continue
        if named & word_list("grade_fields"):
            value = _verdict(grade.correct, prop)
            filled[name] = filled[name] if value is None else value
        elif named & word_list("explanation_fields") and prop.get("type") == "string" and "enum" not in prop:
            filled[name] = grade.explanation
    return filled


def _plain(prop: Any) -> Mapping[str, Any] | None:
    """A property schema with a plain type (an ``Optional`` one's non-null option), else None."""
    if isinstance(prop, Mapping) and "anyOf" in prop:
        options = [o for o in prop["anyOf"] if isinstance(o, Mapping) and o.get("type") != "null"]
        prop = options[0] if len(options) == 1 else None
    return prop if isinstance(prop, Mapping) and ("type" in prop or "enum" in prop) else None


def _verdict(correct: bool, prop: Mapping[str, Any]) -> Any:
    """The grade as a value of ``prop``'s type, or None when it has no plain form for it."""
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        wanted = word_list("grade_yes" if correct else "grade_no")
        match = next((o for o in enum if isinstance(o, str) and o.lower() in wanted), None)
        return match if match is not None else enum[0 if correct else -1]
    kind = prop.get("type")
    if kind == "boolean":
        return correct
    if kind in ("number", "integer"):
        bound = prop.get("maximum" if correct else "minimum")
        value = bound if isinstance(bound, int | float) and not isinstance(bound, bool) else int(correct)
        return int(value) if kind == "integer" else value
    if kind == "string":
        return "correct" if correct else "incorrect"
    return None
