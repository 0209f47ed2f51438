"""scorers.judge over real HTTP: the documented prompt, structured grades, votes and their majority,
several judge models, and the judges' calls counted apart from the answers'."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.evals import EvalError, evaluate, scorers
from flotorch_nb.evals._judge import SYSTEM
from flotorch_nb.pricing import default_prices, reset_default_prices
from tests.evals.conftest import EvalServer, sections

DATA = [{"question": "capital of France?", "key": "Paris"}, {"question": "2+2?", "key": "4"}]


def answers(server: EvalServer) -> None:
    server.answers["m/a"] = {"Q: capital of France?": "It is Paris.", "Q: 2+2?": "five"}


def run(client: FlotorchLLM, *judges: Any, **options: Any) -> Any:
    return evaluate(
        DATA,
        template="Q: {question}",
        target="key",
        models="m/a",
        scorers=list(judges),
        client=client,
        progress=False,
        **options,
    )


def test_the_judge_prompt_and_grade_contract(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    result = run(client, scorers.judge("Is the answer correct?", model="m/judge", votes=1))
    judged = [b for b in server.bodies if b["model"] == "m/judge"]
    assert len(judged) == 2
    body = next(b for b in judged if "France" in b["messages"][1]["content"])  # calls run concurrently
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    parts = sections(body["messages"][1]["content"])
    assert parts == {
        "Question": "Q: capital of France?",
        "Reference": "Paris",
        "Answer": "It is Paris.",
        "Rubric": "Is the answer correct?",
    }
    schema = body["response_format"]["json_schema"]
    assert schema["name"] == "JudgeGrade"
    assert schema["schema"]["properties"]["grade"]["enum"] == ["correct", "incorrect"]
    assert set(schema["schema"]["required"]) == {"grade", "explanation"}
    values = [r.scores["judge"] for r in result.records]
    assert values[0] == (1.0, "m/judge: correct — graded correct")
    assert values[1] == (0.0, "m/judge: incorrect — graded incorrect")


def test_votes_majority_and_several_judge_models(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    # m/strict says incorrect to everything: with m/judge's 2 votes (one right, one wrong answer) the
    # majority over 4 votes is 2 of 4 for the right answer: a tie, which is incorrect.
    server.grade = lambda s: (
        "incorrect" if s["model"] == "m/strict" else ("correct" if "Paris" in s["Answer"] else "incorrect")
    )
    majority = scorers.judge("correct?", model=["m/judge", "m/strict"], votes=2)
    mean = scorers.judge(
        "correct?", model=["m/judge", "m/strict"], votes=2, aggregate="mean", name="judge_mean"
    )
    result = run(client, majority, mean)
    assert server.sent("judge") == 2 * 2 * 2 * 2  # samples x judge models x votes x two scorers
    seeds = sorted(str(b.get("seed")) for b in server.bodies if b["model"] == "m/judge")
    assert seeds == ["1"] * 4 + ["None"] * 4  # vote 2 of each judge model is sent with seed=1
    assert result.records[0].scores["judge"][0] == 0.0  # 2 of 4: a tie is not a majority
    assert result.records[0].scores["judge_mean"][0] == 0.5
    assert result.records[0].scores["judge"][1].count("\n") == 3  # one line per vote
    assert result.binary == {"judge": True, "judge_mean": False}


def test_judge_calls_and_cost_counted_apart(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    prices = default_prices()
    prices.set("m/a", 1_000_000, 0)  # $1 per input token: 10 tokens = $10 per answer
    prices.set("m/judge", 0, 1_000_000)  # $1 per output token: 2 tokens = $2 per vote
    try:
        result = run(client, scorers.judge("ok?", model="m/judge", votes=3))
    finally:
        reset_default_prices()
    usage = result.judge_usage["judge"]
    assert (usage.calls, usage.requests, usage.errors) == (6, 6, 0)
    assert (usage.input_tokens, usage.output_tokens, usage.cost) == (60, 12, pytest.approx(12.0))
    (row,) = result.summary_rows()
    assert row["cost"] == pytest.approx(20.0) and row["cost_per_sample"] == pytest.approx(10.0)
    assert row["cost_per_correct"] == pytest.approx(20.0)  # one correct answer of two
    assert result.stats["requests"] == 2 and result.stats["judge_requests"] == 6


def test_an_unpriced_judge_costs_unknown_not_nothing(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    prices = default_prices()
    prices.set("m/a", 1_000_000, 0)  # the answers are priced, the judge model is not
    try:
        result = run(client, scorers.judge("ok?", model="m/judge", votes=3))
    finally:
        reset_default_prices()
    usage = result.judge_usage["judge"]
    assert (usage.calls, usage.unpriced, usage.cost) == (6, 6, None)
    (line,) = [x for x in repr(result).splitlines() if x.startswith("judge judge:")]
    assert line.endswith("tokens, cost —")  # shown as unknown, not as $0 (+6 unpriced)
    assert result.summary_rows()[0]["cost"] == pytest.approx(20.0)


def test_a_grade_that_does_not_validate_is_that_votes_error(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    server.grade = lambda s: "maybe"  # not in the enum
    result = run(client, scorers.judge("ok?", model="m/judge", votes=2, validation_retries=0))
    value, why = result.records[0].scores["judge"]
    assert value is None and "no judge vote came back" in (why or "")
    assert result.judge_usage["judge"].errors == 4
    (row,) = result.summary_rows()
    assert row["errors"] == 2 and row["mean"] == 0.0


def test_scale_grades(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    original = server.reply

    def reply(body: dict[str, Any]) -> Any:
        if "[Rubric]" in body["messages"][-1]["content"]:
            schema = body["response_format"]["json_schema"]
            assert schema["name"] == "JudgeScore"
            assert schema["schema"]["properties"]["grade"]["maximum"] == 4
            status, reply_ = original(body)
            reply_["choices"][0]["message"]["content"] = json.dumps({"grade": 3, "explanation": "fair"})
            return status, reply_
        return original(body)

    server.reply = reply  # type: ignore[method-assign]
    result = run(client, scorers.judge("rate", model="m/judge", votes=1, scale=4))
    assert result.records[0].scores["judge"][0] == 0.75
    assert result.binary["judge"] is False


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"votes": 0}, "votes"),
        ({"aggregate": "median"}, "aggregate"),
        ({"scale": 0}, "scale"),
        ({"model": [""]}, "model"),
    ],
)
def test_bad_judge_options(options: dict[str, Any], words: str) -> None:
    with pytest.raises(EvalError, match=words):
        scorers.judge("ok?", **options)


def test_judge_without_a_model_uses_the_clients(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    run(client, scorers.judge("ok?", votes=1))
    assert server.requests[("m/a", "judge")] == 2


def test_an_invalid_grade_is_re_asked_through_the_client(server: EvalServer, client: FlotorchLLM) -> None:
    answers(server)
    server.grade = lambda s: "maybe"  # the first grade never validates; the re-ask is graded normally
    result = run(client, scorers.judge("ok?", model="m/judge", votes=1, validation_retries=1))
    assert [r.scores["judge"][0] for r in result.records] == [1.0, 0.0]
    reasks = [b for b in server.bodies if b["model"] == "m/judge" and len(b["messages"]) > 2]
    assert len(reasks) == 2 and reasks[0]["messages"][2]["role"] == "assistant"
    assert result.judge_usage["judge"].requests == 4 and result.judge_usage["judge"].errors == 0


def test_a_token_budget_holds_across_answers_and_judges(server: EvalServer, client: FlotorchLLM) -> None:
    """The client's budget gate admits answers and judge votes alike: when it runs out mid-judging, the
    votes it refuses are the run's reported errors, nothing past the limit is spent, and nothing raises."""
    from flotorch_nb.spending import TokenBudget

    server.answers["m/a"] = {f"Q: {i}": str(i) for i in range(4)}
    budget = TokenBudget(500)  # a judge vote may use 402: room for a few of them after the answers
    client.hooks.gates.append(budget)
    client.hooks.after_call.append(budget.after_call)
    result = evaluate(
        [{"question": str(i), "key": str(i)} for i in range(4)],
        template="Q: {question}",
        target="key",
        models="m/a",
        scorers=["exact_match", scorers.judge("ok?", model="m/judge", votes=2, max_tokens=50)],
        client=client,
        progress=False,
        concurrency=1,
        max_tokens=50,
    )
    assert server.sent("answer") == 4 and 0 < server.sent("judge") < 8
    assert server.sent() * 12 <= 500  # each call reported 12 tokens: the budget's limit held
    usage = result.judge_usage["judge"]
    assert usage.errors == 8 - server.sent("judge") and usage.requests == server.sent("judge")
    refused = [r.scores["judge"][1] or "" for r in result.records]
    assert any("BudgetExceededError" in why for why in refused)
    assert [r.scores["exact_match"][0] for r in result.records] == [1.0] * 4


def test_without_a_target_the_prompt_has_no_reference_section(
    server: EvalServer, client: FlotorchLLM
) -> None:
    answers(server)
    evaluate(
        DATA,
        template="Q: {question}",
        models="m/a",
        scorers=[scorers.judge("Is it polite?", model="m/judge", votes=1)],
        client=client,
        progress=False,
    )
    prompts = [b["messages"][1]["content"] for b in server.bodies if b["model"] == "m/judge"]
    assert len(prompts) == 2 and all("[Reference]" not in p for p in prompts)
    assert sections(next(p for p in prompts if "France" in p)) == {
        "Question": "Q: capital of France?",
        "Answer": "It is Paris.",
        "Rubric": "Is it polite?",
    }
