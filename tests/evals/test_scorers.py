"""The pure scorers: normalisation and its options, numbers, patterns, JSON, schemas, functions."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from flotorch_nb.evals import EvalError, Score, scorers
from flotorch_nb.evals.scorers import Scorer, extract_number, normalize, resolve


def score(scorer: Any, answer: str, target: Any = None) -> float:
    return float(scorer(answer, target, {}).value)


def test_normalisation_steps_and_switches() -> None:
    assert normalize("  The  ANSWER:\n Paris! ") == "the answer paris"
    assert normalize("A.B", ignore_punctuation=False) == "a.b"
    assert normalize("A  B", ignore_whitespace=False) == "a  b"
    assert normalize("Ab", ignore_case=False) == "Ab"


def test_exact_match_and_includes() -> None:
    assert score(scorers.exact_match(), " paris. ", "Paris") == 1
    assert score(scorers.exact_match(), "It is Paris", "Paris") == 0
    assert score(scorers.exact_match(ignore_case=False), "paris", "Paris") == 0
    assert score(scorers.exact_match(ignore_punctuation=False), "Paris.", "Paris") == 0
    assert score(scorers.includes(), "It is PARIS, of course", "paris") == 1
    assert score(scorers.includes(), "It is Lyon", ["Paris", "Lyon"]) == 1  # any of several targets
    assert score(scorers.includes(ignore_case=False), "PARIS", "Paris") == 0


def test_numeric_extracts_the_last_number() -> None:
    assert extract_number("first 3 apples, then 1,234.5 in total") == 1234.5
    assert extract_number("minus \u22122") == -2.0 and extract_number("none") is None
    assert score(scorers.numeric(), "So the answer is 42.", "42") == 1
    assert score(scorers.numeric(), "41.9", 42) == 0
    assert score(scorers.numeric(tolerance=0.2), "41.9", 42) == 1
    assert score(scorers.numeric(tolerance=0.01, relative=True), "1005", "1000") == 1
    assert score(scorers.numeric(), "no number here", "1") == 0
    with pytest.raises(EvalError):
        scorers.numeric(tolerance=-1)


def test_regex_json_and_schema() -> None:
    assert score(scorers.regex(r"\bcat\b"), "a cat sat") == 1
    assert score(scorers.regex(r"\bcat\b"), "concatenate") == 0
    with pytest.raises(EvalError, match="regular expression"):
        scorers.regex("(")
    assert score(scorers.json_valid(), '{"a": 1}') == 1
    assert score(scorers.json_valid(), 'Here:\n```json\n{"a": 1}\n```') == 1
    assert score(scorers.json_valid(), "{a: 1}") == 0

    class Point(BaseModel):
        x: int
        y: int

    check = scorers.schema(Point)
    assert check.name == "schema(Point)"
    assert score(check, '{"x": 1, "y": 2}') == 1
    verdict = check('{"x": 1}', None, {})
    assert verdict.value is False and "y" in (verdict.explanation or "")
    with pytest.raises(EvalError):
        scorers.schema(dict)


def plain(given: Any) -> Scorer:
    scorer = resolve(given)
    assert isinstance(scorer, Scorer)
    return scorer


def test_functions_and_names() -> None:
    def yes(answer: str, target: Any, sample: Any) -> bool:
        return True

    assert plain(yes).name == "yes" and plain(yes)("x", None, {}) == Score(True)
    assert resolve("includes").name == "includes"
    with pytest.raises(EvalError, match="unknown scorer"):
        resolve("nope")
    with pytest.raises(EvalError, match="between 0 and 1"):
        plain(lambda a, t, s: 2.0)("x", None, {})
    with pytest.raises(EvalError, match="returned a str"):
        plain(lambda a, t, s: "yes")("x", None, {})
