"""EvalResult kept and shared: save/load without the key, inspect-ai logs read back by inspect-ai,
the notebook report (escaped), and a cancelled run keeping what finished."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb.evals import EvalCancelled, EvalError, EvalResult, aevaluate, evaluate, scorers
from flotorch_nb.gateway import OfflineGateway
from tests.evals.conftest import KEY, EvalServer

DATA = [{"q": "<b>bold</b>", "key": "<i>x</i>"}, {"q": "two", "key": "2"}, {"q": "three", "key": "3"}]


def result_of(server: EvalServer, client: FlotorchLLM, **options: Any) -> EvalResult:
    server.answers["m/a"] = {"<b>bold</b>": "<script>alert(1)</script>", "two": "2", "three": "3"}
    server.answers["m/b"] = {"<b>bold</b>": "<i>x</i>", "two": "two", "three": "3"}
    options.setdefault("scorers", ["exact_match", scorers.judge("ok?", model="m/j", votes=1)])
    return evaluate(
        DATA, template="{q}", target="key", models=["m/a", "m/b"], client=client, progress=False, **options
    )


def test_save_and_load_round_trip_without_the_key(
    server: EvalServer, client: FlotorchLLM, tmp_path: Path
) -> None:
    result = result_of(server, client)
    path = result.save(tmp_path / "run.json")
    assert KEY not in path.read_text()
    back = EvalResult.load(path)
    assert back.to_pandas().equals(result.to_pandas())
    assert back.summary_rows() == result.summary_rows()
    assert back.judge_usage == result.judge_usage
    assert (
        back.compare("m/a", "m/b", scorer="exact_match").p_value
        == result.compare("m/a", "m/b", scorer="exact_match").p_value
    )
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(EvalError, match="not a saved"):
        EvalResult.load(tmp_path / "other.json")
    with pytest.raises(EvalError, match="cannot read"):
        EvalResult.load(tmp_path / "missing.json")


def test_inspect_logs_read_back_by_inspect_ai(
    server: EvalServer, client: FlotorchLLM, tmp_path: Path
) -> None:
    from inspect_ai.log import read_eval_log

    result = result_of(server, client)
    paths = result.to_inspect(tmp_path / "logs")
    assert len(paths) == 2
    log = read_eval_log(str(paths[0]))
    assert log.status == "success" and log.eval.model == "m/a" and log.eval.task == "flotorch_eval"
    assert log.samples is not None and len(log.samples) == 3
    sample = log.samples[1]
    assert (sample.input, sample.target, sample.output.completion) == ("two", "2", "2")
    assert sample.scores is not None and sample.scores["exact_match"].value == 1.0
    assert log.results is not None
    metrics = {s.name: s.metrics for s in log.results.scores}
    est = result.estimate("m/a", "exact_match")
    assert metrics["exact_match"]["mean"].value == pytest.approx(est.mean)
    assert metrics["exact_match"]["stderr"].value == pytest.approx(est.se)
    assert "judge" in metrics


def test_the_report_escapes_model_and_data_text(server: EvalServer, client: FlotorchLLM) -> None:
    result = result_of(server, client)
    bundle = result._repr_mimebundle_()
    page = bundle["text/html"]
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>bold" not in page and "<i>x" not in page
    assert 'class="flotorch-eval"' in page and "<svg" in page and "flotorch-eval-worst" in page
    assert "Wilson" in page and "judge judge: 6 calls" in page
    text = bundle["text/plain"]
    assert text.startswith("EvalResult: 3 samples x 2 models") and "m/a" in text and "exact_match" in text


def test_a_display_draws_the_statistics_once(
    server: EvalServer, client: FlotorchLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = result_of(server, client)
    expected = result._repr_mimebundle_()
    calls: list[int] = []
    summary_rows = EvalResult.summary_rows

    def counted(self: EvalResult, **options: Any) -> list[dict[str, Any]]:
        calls.append(1)
        return summary_rows(self, **options)

    monkeypatch.setattr(EvalResult, "summary_rows", counted)
    assert result._repr_mimebundle_() == expected  # text and HTML from one table of estimates
    assert len(calls) == 1
    calls.clear()
    assert repr(result) == expected["text/plain"] and len(calls) == 1


def test_a_cancelled_run_keeps_what_finished(server: EvalServer, client: FlotorchLLM) -> None:
    server.answers["m/a"] = {"two": "2", "three": "3", "<b>bold</b>": "x"}
    release, arrived = threading.Event(), threading.Event()
    original = server.reply

    def reply(body: dict[str, Any]) -> Any:
        if body["messages"][-1]["content"] == "three":
            arrived.set()
            release.wait(10)
        return original(body)

    server.reply = reply  # type: ignore[method-assign]
    finished: list[Any] = []
    client.hooks.after_call.append(finished.append)

    async def main() -> EvalResult:
        task = asyncio.create_task(
            aevaluate(
                DATA,
                template="{q}",
                target="key",
                models="m/a",
                scorers="exact_match",
                client=client,
                progress=False,
            )
        )
        # The two quick answers have reached the client, and the third is held at the server.
        while not (arrived.is_set() and len(finished) == 2):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(EvalCancelled) as stopped:
            await task
        return stopped.value.result

    try:
        partial = asyncio.run(main())
    finally:
        release.set()
    assert partial.stats["interrupted"] is True
    by_q = {partial.samples[r.sample]["q"]: r for r in partial.records}
    assert by_q["two"].answer == "2" and by_q["two"].scores["exact_match"][0] == 1.0
    assert by_q["three"].answer is None and by_q["three"].error_type == "ItemCancelledError"


def test_offline_gateway_scripted_answers_and_counts(tmp_path: Path) -> None:
    """Against the embedded gateway: scripted exact answers, and a re-run that sends nothing."""
    rows = [{"prompt": json.dumps({"script": {"content": c}}), "key": k} for c, k in (("4", "4"), ("5", "6"))]
    with OfflineGateway() as gateway:
        llm = FlotorchLLM("offline/scripted", "k", gateway.url, cache=tmp_path / "c.sqlite")
        try:
            options: dict[str, Any] = {"template": "{prompt}", "target": "key", "models": "offline/scripted"}
            options |= {"scorers": "numeric", "client": llm, "progress": False}
            first = evaluate(rows, **options)
            assert sum(gateway.request_counts().values()) == 2
            again = evaluate(rows, **options)
            assert sum(gateway.request_counts().values()) == 2  # all from the cache
        finally:
            llm.close()
    assert [r.scores["numeric"][0] for r in first.records] == [1.0, 0.0]
    assert [r.source for r in again.records] == ["cache", "cache"]
    assert first.records[0].source == "offline"


def test_an_interrupt_keeps_what_finished_and_a_rerun_sends_the_rest(
    server: EvalServer, client: FlotorchLLM, tmp_path: Path
) -> None:
    import _thread

    from flotorch_nb.evals import EvalInterrupted

    server.answers["m/a"] = {"two": "2", "three": "3", "<b>bold</b>": "x"}
    server.answers["m/b"] = dict(server.answers["m/a"])
    held, release, answered = threading.Event(), threading.Event(), threading.Event()
    original = server.reply

    def reply(body: dict[str, Any]) -> Any:
        if body["model"] == "m/b" and body["messages"][-1]["content"] == "three":
            held.set()
            release.wait(10)
            try:
                return original(body)
            finally:
                answered.set()
        return original(body)

    server.reply = reply  # type: ignore[method-assign]

    def interrupt_when_held() -> None:
        held.wait(10)
        _thread.interrupt_main()

    options: dict[str, Any] = {
        "template": "{q}",
        "target": "key",
        "models": ["m/a", "m/b"],
        "progress": False,
    }
    options |= {"scorers": "exact_match", "client": client, "cache": tmp_path / "c.sqlite", "concurrency": 1}
    timer = threading.Thread(target=interrupt_when_held)
    timer.start()
    try:
        with pytest.raises(EvalInterrupted) as caught:
            evaluate(DATA, **options)
    finally:
        release.set()
        timer.join()
    partial = caught.value.result
    assert isinstance(caught.value, KeyboardInterrupt) and partial.stats["interrupted"]
    done = {(r.model, r.sample) for r in partial.records if r.answer is not None}
    assert {("m/a", 0), ("m/a", 1), ("m/a", 2), ("m/b", 0), ("m/b", 1)} == done
    assert [r.scores["exact_match"][0] for r in partial.records if r.model == "m/a"] == [0.0, 1.0, 1.0]
    answered.wait(10)  # the held request is counted before the counts are cleared
    server.requests.clear()
    server.reply = original  # type: ignore[method-assign]
    again = evaluate(DATA, **options)
    assert server.sent() == 1 and again.answered == 6  # only m/b's third answer was missing


def test_summary_latency_is_of_the_answers_sent_and_worst_counts_a_failure_as_0() -> None:
    from flotorch_nb.evals import Record

    records = [
        Record(i, "m/a", 0, answer="x", latency_ms=(i + 1) * 10.0, source="network", cost=0.5)
        for i in range(10)
    ]
    for record in records:
        record.scores["exact_match"] = (1.0 if record.sample % 2 == 0 else 0.0, None)
    hit = Record(10, "m/a", 0, answer="x", latency_ms=1000.0, source="cache", cost=0.5)
    hit.scores["exact_match"] = (1.0, None)
    failed = Record(11, "m/a", 0, error_type="ServerError", error="boom")
    failed.scores["exact_match"] = (None, "no answer: ServerError")
    result = EvalResult(
        samples=[{"q": str(i)} for i in range(12)],
        prompts=[str(i) for i in range(12)],
        template="{q}",
        target=None,
        models=["m/a"],
        epochs=1,
        scorers=["exact_match"],
        binary={"exact_match": True},
        records=[*records, hit, failed],
    )
    (row,) = result.summary_rows()
    # Nearest rank over the 10 answers sent (10..100 ms); the cache hit's 1000 ms is no latency of a call.
    assert (row["p50_latency_ms"], row["p95_latency_ms"]) == (50.0, 100.0)
    assert (row["n"], row["errors"], row["mean"]) == (12, 1, 6 / 12)
    assert row["cost"] == pytest.approx(5.5) and row["cost_per_sample"] == pytest.approx(5.5 / 12)
    assert row["cost_per_correct"] == pytest.approx(5.5 / 6)
    assert result.worst(3) == [(1, 0.0), (3, 0.0), (5, 0.0)]
    assert result.worst(6)[-1] == (11, 0.0)  # the failed sample is among the worst, not dropped


def test_compare_says_what_it_did_with_the_samples_without_a_value() -> None:
    from flotorch_nb.evals import Record

    records = []
    for model, values in (("m/a", [1.0, 1.0, 0.0, 1.0]), ("m/b", [None, 0.0, 0.0, 1.0])):
        for i, value in enumerate(values):
            record = Record(i, model, 0, answer=None if value is None else "x")
            record.scores["exact_match"] = (value, None)
            records.append(record)
    result = EvalResult(
        samples=[{"q": str(i)} for i in range(4)],
        prompts=[str(i) for i in range(4)],
        template="{q}",
        target=None,
        models=["m/a", "m/b"],
        epochs=1,
        scorers=["exact_match"],
        binary={"exact_match": True},
        records=records,
    )
    zero = result.compare("m/a", "m/b")
    assert (zero.n, zero.a_only, zero.errors_b) == (4, 2, 1)
    assert "no value (counted as 0): 0 for m/a, 1 for m/b" in zero.text()
    left_out = result.compare("m/a", "m/b", errors="exclude")
    assert (left_out.n, left_out.a_only, left_out.errors_b) == (3, 1, 1)
    assert "no value (left out of the pairs): 0 for m/a, 1 for m/b" in left_out.text()
    assert "counted as 0" not in left_out.text()
