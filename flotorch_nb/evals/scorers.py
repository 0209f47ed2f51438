"""Scorers: how an answer is graded. ``evaluate(..., scorers=[scorers.exact_match(), ...])``.

A scorer turns one answer into a value between 0 and 1 (a ``bool`` is 1 or 0) with an optional
explanation. Built in: ``exact_match``, ``includes``, ``regex``, ``numeric``, ``json_valid``,
``schema`` (all pure, run in this process as the answers arrive) and ``judge`` (an LLM grades the
answer: its calls ride the same client and batch engine, see ``flotorch_nb.evals._judge``). Any plain
function ``(answer, target, sample) -> bool | float | Score`` is a scorer too; its name is the
function's. A scorer that raises gives that sample no value (an error, reported and counted, see
``EvalResult.summary``), never a silent 0 or a skipped row.

Text normalisation of ``exact_match`` and ``includes`` (each step can be switched off):
``ignore_case`` (``casefold``), ``ignore_punctuation`` (every Unicode punctuation character is
removed: ``"Paris."`` matches ``"paris"``) and ``ignore_whitespace`` (runs of spaces, tabs and
newlines become one space, ends stripped). With all three off, the comparison is exact.
A target may be a list: the answer matches if it matches any of them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from ..schema import is_model_class
from ._errors import EvalError
from ._judge import Judge
from ._score import Score, to_score

__all__ = [
    "Score",
    "Scorer",
    "exact_match",
    "includes",
    "json_valid",
    "judge",
    "normalize",
    "numeric",
    "regex",
    "schema",
]


class Scorer:
    """A named, pure scorer: ``scorer(answer, target, sample) -> Score``.

    ``binary`` says its values are only 0 or 1 (the statistics then use the binomial formulas);
    ``needs_target`` that it compares with the reference column (``evaluate`` refuses it without one).
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[str, Any, Mapping[str, Any]], Any],
        *,
        binary: bool | None = None,
        needs_target: bool = False,
    ) -> None:
        self.name, self.fn, self.binary, self.needs_target = name, fn, binary, needs_target

    def __call__(self, answer: str, target: Any, sample: Mapping[str, Any]) -> Score:
        return to_score(self.fn(answer, target, sample), self.name)

    def __repr__(self) -> str:
        return f"<scorer {self.name}>"


def normalize(
    text: str, *, ignore_case: bool = True, ignore_punctuation: bool = True, ignore_whitespace: bool = True
) -> str:
    """``text`` as ``exact_match``/``includes`` compare it (see the module docstring)."""
    if ignore_case:
        text = text.casefold()
    if ignore_punctuation:
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    if ignore_whitespace:
        text = " ".join(text.split())
    return text


def _targets(target: Any) -> list[str]:
    if isinstance(target, list | tuple):
        return [str(t) for t in target]
    return [str(target)]


def _text_scorer(
    name: str, matches: Callable[[str, str], bool], found: str, missed: str, options: dict[str, bool]
) -> Scorer:
    """A scorer comparing the normalised answer with each normalised target by ``matches(said, wanted)``."""

    def score(answer: str, target: Any, sample: Mapping[str, Any]) -> Score:
        said = normalize(answer, **options)
        for wanted in _targets(target):
            if matches(said, normalize(wanted, **options)):
                return Score(True, f"{found} {wanted!r}")
        return Score(False, f"{missed} {target!r}")

    return Scorer(name, score, binary=True, needs_target=True)


def exact_match(
    *, ignore_case: bool = True, ignore_punctuation: bool = True, ignore_whitespace: bool = True
) -> Scorer:
    """1 when the normalised answer equals the normalised target (any of them, for a list)."""
    options = {"ignore_case": ignore_case, "ignore_punctuation": ignore_punctuation}
    options["ignore_whitespace"] = ignore_whitespace
    return _text_scorer("exact_match", lambda said, wanted: said == wanted, "equals", "expected", options)


def includes(
    *, ignore_case: bool = True, ignore_punctuation: bool = True, ignore_whitespace: bool = True
) -> Scorer:
    """1 when the normalised target (any of them, for a list) appears in the normalised answer."""
    options = {"ignore_case": ignore_case, "ignore_punctuation": ignore_punctuation}
    options["ignore_whitespace"] = ignore_whitespace
    return _text_scorer(
        "includes", lambda said, wanted: wanted in said, "contains", "does not contain", options
    )


def regex(pattern: str | re.Pattern[str], *, flags: int = 0, name: str = "regex") -> Scorer:
    """1 when ``pattern`` is found anywhere in the answer (``re.search``); no target needed."""
    try:
        compiled = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    except re.error as exc:
        raise EvalError(f"regex({pattern!r}): not a regular expression ({exc})") from None

    def score(answer: str, target: Any, sample: Mapping[str, Any]) -> Score:
        found = compiled.search(answer)
        return (
            Score(True, f"matched {found.group(0)!r}")
            if found
            else Score(False, f"no match for {compiled.pattern!r}")
        )

    return Scorer(name, score, binary=True)


#: A number as people write it: sign, thousands separators, decimals, exponent.
_NUMBER = re.compile(r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+\u2212]?\.\d+")


def extract_number(text: str) -> float | None:
    """The last number in ``text`` (answers tend to end with theirs: "... so the total is 1,234.5")."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    return float(found[-1].replace(",", "").replace("\u2212", "-"))


def numeric(tolerance: float = 0.0, *, relative: bool = False) -> Scorer:
    """1 when the last number in the answer is within ``tolerance`` of the target's number.

    ``relative=True`` reads ``tolerance`` as a fraction of the target (0.01: within 1 %).
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise EvalError(f"numeric(tolerance=...) must be a number >= 0, got {tolerance!r}")

    def score(answer: str, target: Any, sample: Mapping[str, Any]) -> Score:
        wanted = target if isinstance(target, int | float) else extract_number(str(target))
        if wanted is None:
            raise EvalError(f"the target {target!r} has no number")
        got = extract_number(answer)
        if got is None:
            return Score(False, "no number in the answer")
        allowed = tolerance * abs(float(wanted)) if relative else tolerance
        ok = abs(got - float(wanted)) <= allowed
        return Score(ok, f"{got:g} vs {float(wanted):g}" + ("" if ok else f" (tolerance {allowed:g})"))

    return Scorer("numeric", score, binary=True, needs_target=True)


_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)\n?```", re.DOTALL)


def _json_text(answer: str) -> str:
    """The answer, or the inside of its first fenced code block (models often wrap JSON in one)."""
    fenced = _FENCE.search(answer)
    return fenced.group(1) if fenced else answer


def json_valid() -> Scorer:
    """1 when the answer (or its first fenced code block) parses as JSON."""

    def score(answer: str, target: Any, sample: Mapping[str, Any]) -> Score:
        try:
            json.loads(_json_text(answer))
        except ValueError as exc:
            return Score(False, f"not JSON: {exc}")
        return Score(True)

    return Scorer("json_valid", score, binary=True)


def schema(model: type[Any]) -> Scorer:
    """1 when the answer (or its first fenced code block) validates against the pydantic class ``model``."""
    if not is_model_class(model):
        raise EvalError(f"schema(...) needs a pydantic BaseModel class, got {model!r}")
    validate = model.model_validate_json

    def score(answer: str, target: Any, sample: Mapping[str, Any]) -> Score:
        try:
            validate(_json_text(answer))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            first = str(exc).splitlines()
            return Score(False, " ".join(first[:3]))
        return Score(True)

    return Scorer(f"schema({model.__name__})", score, binary=True)


def judge(
    rubric: str,
    *,
    model: str | list[str] | tuple[str, ...] | None = None,
    votes: int = 3,
    aggregate: str = "majority",
    scale: int | None = None,
    validation_retries: int = 1,
    name: str = "judge",
    **params: Any,
) -> Judge:
    """An LLM grades each answer against ``rubric`` (and the target, when there is one).

    ``model``: the judge model (a list: each of them judges, ``votes`` calls each; default: the
    client's model). ``aggregate``: ``"majority"`` (a binary verdict: more than half the votes say
    correct; a tie is incorrect) or ``"mean"`` (the fraction of correct votes, or the mean score).
    ``scale=N`` asks for a whole-number score 0..N instead of correct/incorrect (value = score / N).
    ``validation_retries``: how often the client re-asks when a grade does not validate (default 1).
    ``params`` are call parameters of the judge's calls (``temperature``...). The prompt and the grade's
    schema are documented in ``flotorch_nb.evals._judge``.
    """
    return Judge(
        rubric,
        model=model,
        votes=votes,
        aggregate=aggregate,
        scale=scale,
        validation_retries=validation_retries,
        name=name,
        params=params,
    )


#: What a scorer may be called by name (``scorers=["exact_match", "includes"]``, ``--score``).
BY_NAME: dict[str, Callable[[], Scorer]] = {
    "exact_match": exact_match,
    "includes": includes,
    "json_valid": json_valid,
    "numeric": numeric,
}


def resolve(scorer: Any) -> Scorer | Judge:
    """A scorer from what was given: a ``Scorer``/``Judge``, a built-in's name, or a plain function."""
    if isinstance(scorer, Scorer | Judge):
        return scorer
    if isinstance(scorer, str):
        make = BY_NAME.get(scorer)
        if make is None:
            raise EvalError(
                f"unknown scorer {scorer!r}; by name: {', '.join(BY_NAME)} "
                "(or pass scorers.regex(...), a function...)"
            )
        return make()
    if callable(scorer):
        name = getattr(scorer, "__name__", None) or type(scorer).__name__
        return Scorer(name, scorer)
    raise EvalError(f"a scorer is a scorers.* object, a built-in's name or a function; got {scorer!r}")
