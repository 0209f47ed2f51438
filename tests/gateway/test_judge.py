"""The offline models grade an LLM-judge prompt: the contract of ``flotorch_nb.gateway._judge``.

A judge prompt marks the answer (``[Answer]``) and the reference (``[Reference]``); the grade is
"correct" when the normalised answer contains the normalised reference. Tests pin the grade's form
(text ``GRADE: C``/``GRADE: I``, the fields of a JSON grade), not the explanation's wording.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel, Field

from flotorch_nb import FlotorchLLM
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.gateway._judge import grade_of
from flotorch_nb.gateway._validate import Message

from .test_tool_calls import planned_here_and_elsewhere

CHAT = "/api/openai/v1/chat/completions"
JUDGE = (
    "You are grading an answer against a reference.\n"
    "[BEGIN DATA]\n***\n[Question]: What is the capital of France?\n***\n"
    "[Reference]: {reference}\n***\n[Answer]: {answer}\n***\n[END DATA]\n"
    "Does the answer contain the reference? Explain, then grade."
)


@pytest.fixture
def client(gateway: OfflineGateway) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gateway.url, headers={"Authorization": "Bearer k-judge"}, timeout=10) as c:
        yield c


def _judge(client: httpx2.Client, answer: str, reference: str = "Paris", **extra: Any) -> str:
    prompt = JUDGE.format(answer=answer, reference=reference)
    body = {
        "model": extra.pop("model", "offline/assistant"),
        "messages": [{"role": "user", "content": prompt}],
    }
    response = client.post(CHAT, json={**body, **extra})
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


@pytest.mark.parametrize(
    ("answer", "reference", "grade"),
    [
        ("The capital is Paris.", "Paris", "C"),
        ("paris!", "PARIS", "C"),  # case and punctuation do not count
        ("It is   New-York,  surely", "new york", "C"),
        ("Lyon", "Paris", "I"),
        ("There were 100 of them", "10", "I"),  # word boundaries: 10 is not in 100
        ("", "Paris", "I"),
    ],
)
@pytest.mark.parametrize("model", ["offline/assistant", "offline/concise", "offline/verbose"])
def test_a_text_grade_ends_with_inspects_grade_line(
    client: httpx2.Client, answer: str, reference: str, grade: str, model: str
) -> None:
    text = _judge(client, answer, reference, model=model)
    explanation, _, last = text.rpartition("\n\n")
    assert last == f"GRADE: {grade}" and explanation.strip()


class Letter(BaseModel):
    score: str = Field(pattern="^[CI]$", json_schema_extra={"enum": ["C", "I"]})
    explanation: str


class Scale(BaseModel):
    reasoning: str
    rating: int = Field(ge=1, le=10)
    passed: bool


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


def test_a_json_schema_grade_sets_the_grade_and_explanation_fields(client: httpx2.Client) -> None:
    right = Letter.model_validate_json(_judge(client, "Paris", response_format=_schema(Letter)))
    wrong = Letter.model_validate_json(_judge(client, "Rome", response_format=_schema(Letter)))
    assert (right.score, wrong.score) == ("C", "I")
    assert "Paris" in right.explanation and right.explanation != wrong.explanation
    high = Scale.model_validate_json(_judge(client, "Paris", response_format=_schema(Scale)))
    low = Scale.model_validate_json(_judge(client, "Rome", response_format=_schema(Scale)))
    assert (high.rating, high.passed, low.rating, low.passed) == (10, True, 1, False)
    assert high.reasoning and low.reasoning


def test_a_json_object_grade_has_grade_score_and_explanation(client: httpx2.Client) -> None:
    grade = json.loads(_judge(client, "Paris", response_format={"type": "json_object"}))
    assert set(grade) == {"grade", "score", "explanation"}
    assert (grade["grade"], grade["score"]) == ("correct", 1)
    assert json.loads(_judge(client, "Rome", response_format={"type": "json_object"}))["score"] == 0


def test_the_same_judge_prompt_gets_the_same_grade(client: httpx2.Client) -> None:
    assert len({_judge(client, "I think Paris") for _ in range(3)}) == 1
    prompt = JUDGE.format(answer="I think Paris", reference="Paris")
    one, other = planned_here_and_elsewhere(
        {"model": "offline/assistant", "messages": [{"role": "user", "content": prompt}]}
    )
    assert one == other and one["content"] == _judge(client, "I think Paris")


def test_without_a_reference_a_non_empty_answer_passes(client: httpx2.Client) -> None:
    for answer, grade in (("Anything at all", "C"), ("", "I")):
        body = {
            "model": "offline/assistant",
            "messages": [{"role": "user", "content": f"[Answer]: {answer}"}],
        }
        text = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
        assert text.endswith(f"GRADE: {grade}")


def test_a_prompt_without_an_answer_marker_is_no_judge_prompt(client: httpx2.Client) -> None:
    body = {
        "model": "offline/assistant",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    text = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    assert "GRADE:" not in text


def test_the_client_parses_a_grade_with_its_pydantic_model(gateway: OfflineGateway) -> None:
    with FlotorchLLM("offline/assistant", "k-judge", gateway.url) as llm:
        prompt = JUDGE.format(answer="Paris, of course", reference="Paris")
        response = llm.invoke([{"role": "user", "content": prompt}], response_format=Scale)
    assert isinstance(response.parsed, Scale) and response.parsed.passed is True


def test_a_prompt_of_blank_lines_is_read_in_linear_time() -> None:
    """A marker pattern that let whitespace span lines rescanned every run of blank lines (quadratic:
    minutes for 100,000 lines). Not a wall-clock bound: four times the lines must take about four times
    as long, not sixteen. The best of five runs of each size is compared, and the bound (12x) leaves
    room for the noise of a loaded machine (up to 8x was seen) while a quadratic reading takes 16x."""

    def seconds(lines: int) -> float:
        messages = [Message("user", "[Answer]: x" + "\n" * lines + "end")]
        best = math.inf
        for _ in range(5):
            started = time.perf_counter()
            assert grade_of(messages) is not None
            best = min(best, time.perf_counter() - started)
        return best

    assert seconds(400_000) < 12 * seconds(100_000)
