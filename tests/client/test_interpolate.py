"""``{name}`` interpolation for ``%%flotorch`` prompts: references resolve, everything else survives."""

from __future__ import annotations

from collections import ChainMap
from types import SimpleNamespace
from typing import Any

import pytest

from flotorch_nb import LLMResponse
from flotorch_nb._interpolate import interpolate, references

NS: dict[str, Any] = {
    "topic": "asyncio",
    "n": 3,
    "cfg": SimpleNamespace(model="offline/echo", inner=SimpleNamespace(depth=2)),
    "rows": [10, 20, 30],
    "data": {"key": "value", "with space": "spaced", "nested": {"list": [1, 2]}},
    "In": ["", "x = 1", "print(x)"],
    "Out": {2: "two"},
    "_": "last output",
    "_3": "third output",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Explain {topic} in {n} lines", "Explain asyncio in 3 lines"),
        ("model={cfg.model} depth={cfg.inner.depth}", "model=offline/echo depth=2"),
        ("first={rows[0]} last={rows[-1]}", "first=10 last=30"),
        ("{data['key']} {data[\"with space\"]} {data['nested']['list'][1]}", "value spaced 2"),
        ("cell: {In[1]} / out: {Out[2]}", "cell: x = 1 / out: two"),
        ("{_} and {_3}", "last output and third output"),
        ("{topic}{topic}", "asyncioasyncio"),
    ],
)
def test_references_resolve_from_the_namespace(template: str, expected: str) -> None:
    assert interpolate(template, NS) == expected


@pytest.mark.parametrize(
    "template",
    [
        "unknown {missing} stays",
        "missing attribute {cfg.nope} stays",
        "out of range {rows[7]} and missing key {data['nope']} stay",
        "index on a non-sequence {n[0]} stays",
        "empty {} and spaced { topic } braces",
        "a dict literal {'a': 1, 'b': {'c': 2}}",
        "a set {1, 2} and a format-looking dict {n:1}",
        'an f-string f"{value!r:>10}" with a conversion and spec',
        'JSON {"topic": "x"} and lone braces { and } and }{',
        "LaTeX \\frac{a}{b} and a bare-word index {data[key]}",
        "a variable index {rows[n]} is not supported",
        "",
    ],
)
def test_everything_that_is_not_a_resolvable_reference_is_left_exactly_as_written(template: str) -> None:
    namespace = {k: v for k, v in NS.items() if k not in ("a", "b", "value", "key")}
    assert interpolate(template, namespace) == template


def test_doubled_braces_escape_a_reference_and_other_doubled_braces_survive() -> None:
    assert interpolate("literal {{topic}}, value {topic}", NS) == "literal {topic}, value asyncio"
    assert interpolate("jinja {{ topic }} and {{}}", NS) == "jinja {{ topic }} and {{}}"


def test_code_with_braces_around_a_known_name_survives_unless_it_is_a_bare_reference() -> None:
    code = 'def f():\n    return {"n": n, **extra}\nprint(f"{n=}")'
    assert interpolate(code, NS) == code


def test_values_become_text_and_an_llm_response_stands_for_its_answer() -> None:
    resp = LLMResponse(content="the earlier answer", metadata={})
    namespace = {"resp": resp, "obj": [1, 2], "none": None}
    assert interpolate("{resp} | {obj} | {none}", namespace) == "the earlier answer | [1, 2] | None"


def test_a_raising_property_is_treated_as_unresolved() -> None:
    class Boom:
        @property
        def value(self) -> str:
            raise RuntimeError("property failed")

    assert interpolate("{boom.value}", {"boom": Boom()}) == "{boom.value}"


def test_any_mapping_works_as_the_namespace() -> None:
    namespace = ChainMap({"In": ["", "raw cell"]}, NS)
    assert interpolate("{In[1]} {topic}", namespace) == "raw cell asyncio"


def test_references_lists_what_would_be_resolved() -> None:
    assert references("{a} {{b}} {c.d[0]} {} {e f}") == ["a", "c.d[0]"]
