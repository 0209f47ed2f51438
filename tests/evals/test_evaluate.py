"""evaluate() over real HTTP on loopback: a dataset whose accuracy and paired difference are known
exactly, every data form, mistakes refused before any request, errors counted, epochs, resuming."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
from pathlib import Path
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.evals import EvalError, EvalResult, Score, aevaluate, evaluate, scorers
from tests.evals.conftest import EvalServer

N = 20
#: m/a answers questions 0-14 right (15/20); m/b answers 0-9 and 15-17 right (13/20). Discordant
#: pairs: only a right on 10-14 (5), only b right on 15-17 (3).
RIGHT = {"m/a": set(range(15)), "m/b": set(range(10)) | {15, 16, 17}}
Z = 1.959963984540054  # the 97.5 % point of the standard normal


def dataset(n: int = N) -> list[dict[str, Any]]:
    return [{"question": f"q{i}", "answer_key": f"t{i}"} for i in range(n)]


def script(server: EvalServer, n: int = N) -> None:
    for model, right in RIGHT.items():
        server.answers[model] = {f"Question: q{i}": (f"T{i}." if i in right else "nope") for i in range(n)}


def run(client: FlotorchLLM, data: Any = None, *, sync: bool = True, **options: Any) -> EvalResult:
    """``evaluate`` (or ``aevaluate`` on a fresh loop) over ``data`` with the test's template."""
    options.setdefault("scorers", [scorers.exact_match()])
    options.setdefault("models", ["m/a", "m/b"])
    args = (dataset() if data is None else data,)
    options |= {
        "template": "Question: {question}",
        "target": "answer_key",
        "client": client,
        "progress": False,
    }
    if sync:
        return evaluate(*args, **options)
    return asyncio.run(aevaluate(*args, **options))


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval by its formula (not scipy's), to check scipy's use against."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_accuracy_and_paired_difference_known_exactly(
    server: EvalServer, client: FlotorchLLM, sync: bool
) -> None:
    script(server)
    result = run(client, sync=sync)
    assert server.sent("answer") == 2 * N
    rows = {r["model"]: r for r in result.summary_rows()}
    for model, k in (("m/a", 15), ("m/b", 13)):
        row, p = rows[model], k / N
        assert row["n"] == N and row["errors"] == 0
        assert row["mean"] == pytest.approx(p)
        assert row["se"] == pytest.approx(math.sqrt(p * (1 - p) / N))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson(k, N))
        assert "Wilson" in row["method"]
    test = result.compare("m/a", "m/b")
    assert (test.a_only, test.b_only, test.n) == (5, 3, N)
    # Exact McNemar: 2 * P(X >= 5), X ~ Binomial(8, 1/2) = 2 * (56 + 28 + 8 + 1) / 256.
    assert test.p_value == pytest.approx(186 / 256)
    assert test.difference == pytest.approx(0.1)
    # Bonett-Price: p1 = 6/22, p2 = 4/22, centre 2/22, SE = sqrt((10/22 - (2/22)^2) / 22).
    centre, se = 2 / 22, math.sqrt((10 / 22 - (2 / 22) ** 2) / 22)
    assert (test.ci_low, test.ci_high) == pytest.approx((centre - Z * se, centre + Z * se))
    assert not test.significant
    assert "only 20 samples" in (test.caveat or "") and "8 discordant" in (test.caveat or "")
    # The other way round: the difference and the discordant counts swap, the p-value stays.
    back = result.compare("m/b", "m/a")
    assert (back.a_only, back.b_only) == (3, 5) and back.difference == pytest.approx(-0.1)
    assert back.p_value == pytest.approx(test.p_value)


def test_every_row_kept_with_scores_and_usage(server: EvalServer, client: FlotorchLLM) -> None:
    script(server)
    frame = run(client, scorers=[scorers.exact_match(), "includes"]).to_pandas()
    assert len(frame) == 2 * N
    first = frame[(frame["model"] == "m/a") & (frame["sample"] == 0)].iloc[0]
    assert first["question"] == "q0" and first["prompt"] == "Question: q0" and first["target"] == "t0"
    assert first["answer"] == "T0." and first["exact_match"] == 1.0 and first["includes"] == 1.0
    assert first["exact_match_explanation"] == "equals 't0'"
    assert (first["input_tokens"], first["output_tokens"], first["source"]) == (10, 2, "live")
    assert first["latency_ms"] > 0 and first["error"] is None
    assert frame[frame["model"] == "m/b"]["exact_match"].sum() == 13


def test_data_forms_give_the_same_result(server: EvalServer, client: FlotorchLLM, tmp_path: Path) -> None:
    import pandas as pd

    script(server, 4)
    rows = dataset(4)
    csv_path = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    class HFDataset:  # what datasets.Dataset offers and evaluate uses
        column_names = ("question", "answer_key")

        def to_list(self) -> list[dict[str, Any]]:
            return rows

    means = []
    for data in (rows, pd.DataFrame(rows), csv_path, str(jsonl), HFDataset()):
        result = run(client, data, models="m/a")
        means.append([r.scores["exact_match"][0] for r in result.records])
    assert means == [[1.0, 1.0, 1.0, 1.0]] * 5


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"data": []}, "empty"),
        ({"template": "Q: {nope}"}, "{nope}"),
        ({"target": "missing"}, "target='missing'"),
        ({"scorers": ["no_such_scorer"]}, "unknown scorer"),
        ({"scorers": []}, "at least one scorer"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"models": []}, "no model"),
        ({"models": ["m/a", "m/a"]}, "twice"),
        ({"models": None}, "evaluate needs models"),
        ({"data": "nothing-here.csv"}, "no such data file"),
        ({"data": {"question": "q"}}, "list of dicts"),
        ({"target": None, "scorers": ["exact_match"]}, "give target="),
        ({"extra_body": "tag"}, "extra_body"),
        ({"scorers": [scorers.judge("fair", model="m/j", extra_body="tag")]}, "extra_body"),
        ({"temperature": 9}, "temperature"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_mistakes_are_refused_before_any_request(
    server: EvalServer, client: FlotorchLLM, change: dict[str, Any], words: str
) -> None:
    args: dict[str, Any] = {
        "data": dataset(3),
        "template": "Question: {question}",
        "target": "answer_key",
        "models": ["m/a"],
        "scorers": ["exact_match"],
        "client": client,
        "progress": False,
    }
    with pytest.raises(ValueError) as caught:
        args.update(change)
        data = args.pop("data")
        evaluate(data, **args)
    assert words in str(caught.value)
    assert server.sent() == 0


def test_extra_body_goes_with_every_answer_and_judge_call(server: EvalServer, client: FlotorchLLM) -> None:
    script(server, 2)
    judge = scorers.judge("fair", model="m/j", votes=1, extra_body={"judging": 1})
    run(client, dataset(2), models="m/a", scorers=[judge], extra_body={"answering": 1})
    answers = [b for b in server.bodies if b["model"] == "m/a"]
    graded = [b for b in server.bodies if b["model"] == "m/j"]
    assert len(answers) == 2 and all(b["extra_body"] == {"answering": 1} for b in answers)
    assert len(graded) == 2 and all(b["extra_body"] == {"judging": 1} for b in graded)


def test_client_is_required_outside_a_notebook(server: EvalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # Outside a notebook the notebook layer is not loaded (another test of this run may have loaded it).
    monkeypatch.delitem(sys.modules, "flotorch_nb.notebook.session", raising=False)
    with pytest.raises(EvalError, match="client="):
        evaluate(dataset(1), template="{question}", models="m/a", scorers="json_valid", progress=False)


def test_failed_answers_are_counted_never_dropped(server: EvalServer, client: FlotorchLLM) -> None:
    script(server, 10)
    server.fail = lambda body: (
        500 if body["messages"][-1]["content"] in ("Question: q0", "Question: q1") else None
    )
    result = run(client, dataset(10), models="m/a")
    (row,) = result.summary_rows()
    assert row["errors"] == 2 and row["n"] == 10
    assert row["mean"] == pytest.approx(8 / 10)  # q0, q1 were right answers, but failed: they count as 0
    (excluded,) = result.summary_rows(errors="exclude")
    assert excluded["n"] == 8 and excluded["mean"] == 1.0 and excluded["errors"] == 2
    frame = result.to_pandas()
    assert list(frame["error_type"][:2]) == ["ServerError", "ServerError"]
    assert frame["exact_match_explanation"][0] == "no answer: ServerError"


def test_function_scorers_and_their_failures(server: EvalServer, client: FlotorchLLM) -> None:
    script(server, 3)

    def short(answer: str, target: Any, sample: dict[str, Any]) -> Score:
        return Score(len(answer) <= 3, f"{len(answer)} characters")

    def broken(answer: str, target: Any, sample: dict[str, Any]) -> bool:
        if sample["question"] == "q1":
            raise RuntimeError("cannot score this one")
        return True

    def half(answer: str, target: Any, sample: dict[str, Any]) -> float:
        return 0.5

    result = run(client, dataset(3), models="m/a", scorers=[short, broken, half])
    first = result.records[0].scores
    assert first["short"] == (1.0, "3 characters") and first["half"] == (0.5, None)
    assert result.records[1].scores["broken"] == (None, "scorer failed: RuntimeError: cannot score this one")
    rows = {r["scorer"]: r for r in result.summary_rows()}
    assert rows["broken"]["errors"] == 1 and rows["broken"]["mean"] == pytest.approx(2 / 3)
    assert "Student t" in rows["half"]["method"] and rows["half"]["se"] == 0.0


def test_epochs_send_distinct_requests_and_average_per_sample(
    server: EvalServer, client: FlotorchLLM
) -> None:
    script(server, 3)
    result = run(client, dataset(3), models="m/a", epochs=3, temperature=0.7)
    assert server.sent("answer") == 9
    seeds = sorted(str(b.get("seed")) for b in server.bodies)
    assert seeds == ["1", "1", "1", "2", "2", "2", "None", "None", "None"]
    assert len(result.records) == 9 and {r.epoch for r in result.records} == {0, 1, 2}
    (row,) = result.summary_rows()
    assert row["n"] == 3  # samples, not records


def test_a_rerun_with_the_same_cache_sends_only_what_is_missing(
    server: EvalServer, client: FlotorchLLM, tmp_path: Path
) -> None:
    script(server, 6)
    # m/b's answers differ from m/a's, so no judge call of one is the very request of the other's: with
    # a cache, a judge call that another model's answer already asked is an answer it has (whether it
    # is stored before the other is sent depends on timing), and the counts would vary.
    server.answers["m/b"] = {k: f"{v}!" for k, v in server.answers["m/b"].items()}
    cache = tmp_path / "answers.sqlite"
    judge = scorers.judge("Is it right?", model="m/judge", votes=2)
    run(client, dataset(4), scorers=["exact_match", judge], cache=cache)
    assert server.sent("answer") == 2 * 4 and server.sent("judge") == 2 * 4 * 2
    server.requests.clear()
    result = run(client, dataset(6), scorers=["exact_match", judge], cache=cache)
    # Only the two new samples: their answers from both models, and their judges' votes.
    assert server.sent("answer") == 2 * 2 and server.sent("judge") == 2 * 2 * 2
    assert result.stats["cache_hits"] == 2 * 4
    assert result.judge_usage["judge"].cache_hits == 2 * 4 * 2
    assert sum(1 for r in result.records if r.source == "cache") == 8
    server.requests.clear()
    again = run(client, dataset(6), scorers=["exact_match", judge], cache=cache)
    assert server.sent() == 0
    assert again.to_pandas()["exact_match"].tolist() == result.to_pandas()["exact_match"].tolist()


def test_one_rate_limiter_for_answers_and_judges(server: EvalServer, client: FlotorchLLM) -> None:
    from flotorch_nb.evals._plan import Plan

    judge = scorers.judge("ok?", model=["m/j1", "m/j2"], votes=2)
    plan = Plan(
        dataset(2), "Question: {question}", "answer_key", ["m/a", "m/b"], [judge], client, 2, {"rpm": 60}
    )
    limiters = {id(o.limiter) for o in plan.answer_options.values()}
    limiters |= {id(o.limiter) for calls in plan.judge_calls.values() for _, _, o in calls}
    assert limiters == {id(plan.limiter)} and plan.limiter.rpm == 60


def test_the_two_shells_take_the_same_arguments() -> None:
    from flotorch_nb.evals import _evaluate

    assert inspect.signature(evaluate).parameters == inspect.signature(aevaluate).parameters
    assert (
        inspect.signature(_evaluate._run_sync).parameters
        == inspect.signature(_evaluate._run_async).parameters
    )
