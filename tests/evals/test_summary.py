"""``EvalResult.summary_rows`` / ``compare`` on a run of several models and scorers: the figures of every
model x scorer are those a reading of that pair's records alone gives, and they are drawn in one pass
over the records (not one per model x scorer)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.batch._result import _percentile
from flotorch_nb.evals import EvalResult, evaluate, scorers
from flotorch_nb.evals._stats import estimate, is_binary
from flotorch_nb.pricing import default_prices, reset_default_prices
from tests.evals.conftest import EvalServer

N = 8
MODELS = ["m/a", "m/b", "m/c"]
SCORERS = ["exact_match", "includes", "terse"]


class Passes(list[Any]):
    """A list that counts how often it is walked."""

    passes = 0

    def __iter__(self) -> Any:
        self.passes += 1
        return super().__iter__()


def terse(answer: str, target: Any, sample: Any) -> float:
    """A continuous scorer that fails on some answers (their value is missing, an error)."""
    if answer == "nope":
        raise ValueError("nothing to measure")
    return 1.0 / len(answer.split())


def run(server: EvalServer, client: FlotorchLLM) -> EvalResult:
    """m/a: exact on 0-5, "nope" after; m/b: the key inside a sentence on even samples; m/c: exact,
    but its calls on samples 6 and 7 fail. m/a and m/b are priced, m/c is not. Two epochs."""
    server.answers["m/a"] = {f"Q: q{i}": (f"t{i}" if i < 6 else "nope") for i in range(N)}
    server.answers["m/b"] = {f"Q: q{i}": (f"it is t{i} surely" if i % 2 == 0 else "no") for i in range(N)}
    server.answers["m/c"] = {f"Q: q{i}": f"t{i}" for i in range(N)}
    failing = {("m/c", "Q: q6"), ("m/c", "Q: q7")}
    server.fail = lambda body: 500 if (body["model"], body["messages"][-1]["content"]) in failing else None
    prices = default_prices()
    prices.set("m/a", 1_000_000, 0)
    prices.set("m/b", 0, 1_000_000)
    try:
        return evaluate(
            [{"question": f"q{i}", "key": f"t{i}"} for i in range(N)],
            template="Q: {question}",
            target="key",
            models=MODELS,
            scorers=[scorers.exact_match(), "includes", terse],
            client=client,
            epochs=2,
            progress=False,
        )
    finally:
        reset_default_prices()


def one_pair(result: EvalResult, model: str, scorer: str, errors: str) -> dict[str, Any]:
    """The summary row of ``model`` x ``scorer`` from that pair's records alone (the reference)."""
    mine = [r for r in result.records if r.model == model]
    per_sample: list[list[float]] = [[] for _ in result.samples]
    missing = 0
    for record in mine:
        value = record.scores[scorer][0]
        missing += value is None
        if value is None and errors == "zero":
            value = 0.0
        if value is not None:
            per_sample[record.sample].append(value)
    values = [math.fsum(v) / len(v) for v in per_sample if v]
    est = estimate(values, binary=result.binary[scorer] is not False and is_binary(values))
    costs = [r.cost for r in mine if r.answer is not None]
    known = [c for c in costs if c is not None]
    total = math.fsum(known) if known else None
    latencies = [r.latency_ms for r in mine if r.latency_ms is not None and r.source != "cache"]
    correct = est.mean * est.n if est.n else 0.0
    return {
        "model": model,
        "scorer": scorer,
        "mean": est.mean,
        "se": est.se,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n": est.n,
        "errors": missing,
        "cost": total,
        "cost_unknown": len(costs) - len(known),
        "cost_per_sample": total / N if total is not None else None,
        "cost_per_correct": total / correct if total is not None and correct > 0 else None,
        "p50_latency_ms": _percentile(latencies, 0.5),
        "p95_latency_ms": _percentile(latencies, 0.95),
        "method": est.method,
    }


@pytest.mark.parametrize("errors", ["zero", "exclude"])
def test_every_model_and_scorer_has_its_own_figures(
    server: EvalServer, client: FlotorchLLM, errors: str
) -> None:
    result = run(server, client)
    for record in result.records:  # m/a's second epoch as a re-run serves it: its latencies are not counted
        if record.model == "m/a" and record.epoch == 1:
            record.source = "cache"
    rows = result.summary_rows(errors=errors)
    assert rows == [one_pair(result, m, s, errors) for m in MODELS for s in SCORERS]
    # And by hand, so the reference itself is pinned:
    by = {(r["model"], r["scorer"]): r for r in rows}
    assert by[("m/a", "exact_match")]["mean"] == 6 / 8 and by[("m/a", "exact_match")]["errors"] == 0
    assert by[("m/b", "exact_match")]["mean"] == 0.0 and by[("m/b", "includes")]["mean"] == 4 / 8
    assert by[("m/a", "terse")]["errors"] == 2 * 2  # "nope" on samples 6 and 7, two epochs each
    assert by[("m/c", "includes")]["errors"] == 2 * 2 and by[("m/c", "includes")]["cost"] is None
    assert by[("m/a", "includes")]["cost"] == pytest.approx(2 * N * 10.0)  # $1 x 10 input tokens
    sent = [r.latency_ms for r in result.records if r.model == "m/a" and r.epoch == 0]
    assert by[("m/a", "terse")]["p50_latency_ms"] == _percentile([v for v in sent if v is not None], 0.5)
    expected_n = {"zero": N, "exclude": 6}
    assert by[("m/c", "exact_match")]["n"] == expected_n[errors]
    assert by[("m/c", "exact_match")]["mean"] == (6 / 8 if errors == "zero" else 1.0)


def test_summary_and_compare_walk_the_records_once(server: EvalServer, client: FlotorchLLM) -> None:
    result = run(server, client)
    before = result.summary_rows()
    records = result.records = Passes(result.records)
    assert result.summary_rows() == before
    assert records.passes == 1  # not one per model x scorer (3 x 3 here)
    records.passes = 0
    test = result.compare("m/a", "m/c", scorer="exact_match")
    assert records.passes == 1
    assert (test.n, test.errors_a, test.errors_b, test.a_only, test.b_only) == (N, 0, 4, 0, 0)
