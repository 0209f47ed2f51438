"""evaluate() keeps ``concurrency`` calls in flight across its batches, never more: the models' answer
batches go at once, a model's answers are judged while another model is still answering, and the result
is the same as one run a call at a time. Counted at a loopback server (requests in flight, what arrived
while a request was held), never by timing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.evals import EvalResult, aevaluate, evaluate, scorers
from tests.evals.conftest import EvalServer

HOLD_S = 10.0  # how long a held request waits for what the test expects (only ever reached on failure)


class Counting:
    """Wraps ``server.reply``: counts requests in flight (and their most), and holds the request that
    ``hold(body)`` picks until ``release(body)`` is true of a request that arrives after it."""

    def __init__(self, server: EvalServer, hold: Any, release: Any) -> None:
        self.server, self.original = server, server.reply
        self.hold, self.release = hold, release
        self.lock, self.in_flight, self.most = threading.Lock(), 0, 0
        self.released = threading.Event()
        self.held = False  # whether the held request was released by what arrived (not the timeout)
        server.reply = self.reply  # type: ignore[method-assign]

    def reply(self, body: dict[str, Any]) -> Any:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            if self.release(body):
                self.released.set()
            if self.hold(body):
                self.held = self.released.wait(HOLD_S)
            return self.original(body)
        finally:
            with self.lock:
                self.in_flight -= 1


def answer(body: dict[str, Any]) -> bool:
    return not any("[Rubric]" in str(m.get("content")) for m in body["messages"])


def script(server: EvalServer, n: int) -> list[dict[str, str]]:
    for model in ("m/a", "m/b", "m/c"):
        server.answers[model] = {f"Q: {i}": (f"a{i}" if i % 2 or model == "m/a" else "no") for i in range(n)}
    return [{"question": str(i), "key": f"a{i}"} for i in range(n)]


def run(client: FlotorchLLM, data: Any, concurrency: Any, sync: bool = True, **options: Any) -> EvalResult:
    options = {
        "template": "Q: {question}",
        "target": "key",
        "models": ["m/a", "m/b"],
        "scorers": ["exact_match", scorers.judge("ok?", model=["m/j1", "m/j2"], votes=2)],
        "client": client,
        "progress": False,
        "concurrency": concurrency,
        **options,
    }
    if sync:
        return evaluate(data, **options)
    import asyncio

    return asyncio.run(aevaluate(data, **options))


def rows(result: EvalResult) -> list[Any]:
    return [(r.model, r.sample, r.answer, r.source, sorted(r.scores.items())) for r in result.records]


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_judges_start_while_another_model_still_answers(
    server: EvalServer, client: FlotorchLLM, sync: bool
) -> None:
    """m/b's last answer is held at the server until a judge call arrives: run batch after batch, no
    judge could come before every answer was in."""
    data = script(server, 4)
    counting = Counting(
        server,
        hold=lambda b: b["model"] == "m/b" and b["messages"][-1]["content"] == "Q: 3",
        release=lambda b: not answer(b),
    )
    result = run(client, data, concurrency=3, sync=sync)
    assert counting.held, "no judge call arrived while m/b was still answering"
    assert counting.most <= 3
    assert server.sent("answer") == 8 and server.sent("judge") == 8 * 4
    # The same result as a run that makes one call at a time (votes kept by their place in the plan).
    server.reply = counting.original  # type: ignore[method-assign]
    one = run(client, data, concurrency=1)
    assert rows(result) == rows(one) and result.judge_usage == one.judge_usage
    assert [r.scores["judge"][1] for r in result.records] == [r.scores["judge"][1] for r in one.records]


def test_the_models_answer_at_once_and_never_above_concurrency(
    server: EvalServer, client: FlotorchLLM
) -> None:
    """m/a's first answer is held until m/b's first arrives: with one batch after the other it never
    would. Three models at concurrency 2: the server never sees more than two requests at once."""
    data = script(server, 3)
    counting = Counting(
        server,
        hold=lambda b: b["model"] == "m/a" and b["messages"][-1]["content"] == "Q: 0",
        release=lambda b: b["model"] == "m/b" and answer(b),
    )
    result = run(client, data, concurrency=2, models=["m/a", "m/b", "m/c"])
    assert counting.held, "m/b's answers waited for m/a's batch to end"
    assert counting.most <= 2
    assert result.answered == 9 and server.sent() == 9 + 9 * 4


def test_an_answer_that_failed_is_not_judged_and_the_rest_are(
    server: EvalServer, client: FlotorchLLM
) -> None:
    data = script(server, 3)
    server.fail = lambda body: (
        500 if body["model"] == "m/b" and body["messages"][-1]["content"] == "Q: 1" else None
    )
    result = run(client, data, concurrency=4)
    failed = [r for r in result.records if r.error_type is not None]
    assert [(r.model, r.sample) for r in failed] == [("m/b", 1)]
    assert server.sent("judge") == 5 * 4 and result.judge_usage["judge"].calls == 5 * 4


def test_auto_concurrency_runs_the_evaluation(server: EvalServer, client: FlotorchLLM) -> None:
    """``concurrency="auto"``: the gateway key's window bounds the batches together; same result."""
    data = script(server, 3)
    auto = run(client, data, concurrency="auto")
    assert rows(auto) == rows(run(client, data, concurrency=2))


def test_on_error_raise_stops_every_batch(server: EvalServer, client: FlotorchLLM) -> None:
    """The first failed call raises its batch's ``BatchError`` out of evaluate, as it did when the
    batches ran one at a time (the others, going at the same time, are cancelled with it)."""
    from flotorch_nb.batch import BatchError

    data = script(server, 3)
    server.fail = lambda body: 500 if body["model"] == "m/b" else None
    with pytest.raises(BatchError):
        run(client, data, concurrency=2, on_error="raise")
