"""Fallbacks across models (issue 17 item 4): ``FlotorchLLM(..., fallbacks=[...])`` asks the next model when
one still fails after its retries on a 429, a 5xx, a timeout, a lost connection, a prompt too long for
it, an empty answer or an answer that fails validation; never on an ordinary 4xx. Real HTTP to the
offline gateway, whose faults can target one model; ``httpx2.MockTransport`` for the pure edge cases."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel, Field

from flotorch_nb import (
    AuthenticationError,
    BadRequestError,
    CallResult,
    ConfigurationError,
    FlotorchLLM,
    LLMResponse,
    NotFoundError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    StreamError,
    StructuredOutputError,
)
from flotorch_nb._config import Secret
from flotorch_nb._pipeline._recover import reask_message
from flotorch_nb._response import Skipped, Usage
from flotorch_nb._transport import Call
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook.ledger import Ledger
from tests.support.client import (
    ONCE,
    SYNC,
    SYNC_IDS,
    USER,
    Counting,
    Recorder,
    completion,
    invoke,
    live_llm,
    mock_llm,
    stream,
)

PRIMARY, SECOND, THIRD = "offline/concise", "offline/verbose", "offline/echo"
HELLO = [{"role": "user", "content": "Say hello."}]


def watched(llm: FlotorchLLM) -> tuple[list[CallResult], Counting, Ledger]:
    """What every call and every attempt of ``llm`` is seen by: after_call hooks, a gate, the ledger."""
    ended: list[CallResult] = []
    llm.hooks.after_call.append(ended.append)
    gate = Counting()
    llm.hooks.gates.append(gate)
    ledger = Ledger()
    ledger.attach(llm)
    return ended, gate, ledger


def models_asked(gateway: OfflineGateway) -> list[str]:
    return [r.body["model"] for r in gateway.requests]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_after_its_retries_a_failing_model_gives_way_to_the_next(
    gateway: OfflineGateway, sync: bool
) -> None:
    gateway.faults.add(Fault(status=503, model=PRIMARY, times=3), Fault(status=429, model=SECOND, times=3))
    async with live_llm(gateway.url, PRIMARY, fallbacks=[SECOND, THIRD]) as llm:  # 2 retries each
        ended, gate, ledger = watched(llm)
        response = await invoke(llm, sync, HELLO)

    assert response.model == THIRD and response.content == "Say hello."  # echo answered
    assert response.fallbacks == [Skipped(PRIMARY, "server_error"), Skipped(SECOND, "rate_limited")]
    assert models_asked(gateway) == [PRIMARY] * 3 + [SECOND] * 3 + [THIRD]  # in order, retries spent
    assert response.attempts == 3  # three calls, one per model
    assert response.provenance is not None and response.provenance["model"] == THIRD
    assert response.provenance["fallbacks"] == [[PRIMARY, "server_error"], [SECOND, "rate_limited"]]
    # Every call reached the hooks, every HTTP attempt the gates (budgets); the ledger records the
    # calls that reached a model (the 5xx and 429 spent nothing).
    assert [r.model for r in ended] == [PRIMARY, SECOND, THIRD]
    assert [r.outcome for r in ended] == ["error", "error", "ok"]
    assert len(gate.admits) == len(gate.settles) == 7
    assert [e.model for e in ledger.entries] == [THIRD]


@pytest.mark.anyio
async def test_a_model_that_recovers_within_its_retries_answers_itself(gateway: OfflineGateway) -> None:
    gateway.faults.add(Fault(status=503, model=PRIMARY, times=2))
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD]) as llm:
        response = await llm.ainvoke(HELLO)
    assert response.model == PRIMARY and response.fallbacks == [] and response.attempts == 1
    assert models_asked(gateway) == [PRIMARY] * 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault(status=500), "server_error"),
        (Fault(status=429, retry_after="0"), "rate_limited"),
        (Fault(cut_after=0), "connection_error"),
        (Fault(delay=5.0), "timeout"),
        (
            Fault(
                status=400,
                message="This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9000 tokens.",
            ),
            "context_length",
        ),
    ],
    ids=["5xx", "429", "connection", "timeout", "context-length"],
)
async def test_each_reason_to_fall_back(gateway: OfflineGateway, fault: Fault, reason: str) -> None:
    gateway.faults.add(Fault(**{**fault.to_dict(), "model": PRIMARY}))
    timeout = 1.0 if fault.delay else 30.0  # the delayed answer outlasts it; on a busy machine no other does
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE, timeout=timeout) as llm:
        response = await llm.ainvoke(HELLO)
    assert response.model == THIRD and response.fallbacks == [Skipped(PRIMARY, reason)]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("status", "error"), [(400, BadRequestError), (401, AuthenticationError)], ids=["400", "401"]
)
async def test_an_ordinary_4xx_never_falls_back(
    gateway: OfflineGateway, sync: bool, status: int, error: type[Exception]
) -> None:
    gateway.faults.add(Fault(status=status, model=PRIMARY, message="no"))
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD]) as llm:
        ended, _, _ = watched(llm)
        with pytest.raises(error):
            await invoke(llm, sync, HELLO)
    assert models_asked(gateway) == [PRIMARY] and len(ended) == 1


@pytest.mark.anyio
async def test_an_unknown_model_is_not_found_and_never_falls_back(gateway: OfflineGateway) -> None:
    async with live_llm(gateway.url, "offline/no-such-model", fallbacks=[THIRD]) as llm:
        with pytest.raises(NotFoundError):
            await llm.ainvoke(HELLO)
    assert models_asked(gateway) == ["offline/no-such-model"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_when_every_model_fails_the_last_error_says_what_was_tried(
    gateway: OfflineGateway, sync: bool
) -> None:
    gateway.faults.add(Fault(status=503, times=2))
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE) as llm:
        with pytest.raises(ServerError) as caught:
            await invoke(llm, sync, HELLO)
    error = caught.value
    assert error.attempts == 2 and error.fallbacks == [Skipped(PRIMARY, "server_error")]
    assert any(PRIMARY in note and "server_error" in note for note in error.__notes__)


def script(*turns: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": json.dumps({"script": {"turns": list(turns)}})}]


@pytest.mark.anyio
async def test_an_empty_answer_falls_back(gateway: OfflineGateway) -> None:
    messages = script({"content": "", "usage": {"prompt_tokens": 4, "completion_tokens": 0}})
    async with live_llm(gateway.url, "offline/scripted", fallbacks=[THIRD]) as llm:
        response = await llm.ainvoke(messages)
    assert response.model == THIRD and response.content == messages[0]["content"]
    assert response.fallbacks == [Skipped("offline/scripted", "empty_answer")]
    assert response.usage_total is not None and response.usage is not None
    assert response.usage_total.input_tokens == 4 + response.usage.input_tokens


class City(BaseModel):
    name: str
    population: int = Field(ge=0)


@pytest.mark.anyio
async def test_an_answer_still_invalid_after_its_validation_retries_falls_back(
    gateway: OfflineGateway,
) -> None:
    messages = script({"content": "not json"}, {"content": '{"name": "X", "population": -1}'})
    async with live_llm(gateway.url, "offline/scripted", fallbacks=["offline/assistant"]) as llm:
        ended, _, _ = watched(llm)
        response = await llm.ainvoke(messages, response_format=City, validation_retries=1)
    assert isinstance(response.parsed, City) and response.model == "offline/assistant"
    assert response.fallbacks == [Skipped("offline/scripted", "validation_failed")]
    assert response.attempts == 3 and len(ended) == 3
    # The next model is asked the original question, not the re-ask conversation.
    assert [len(r.body["messages"]) for r in gateway.requests] == [1, 3, 1]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_falls_back_before_its_first_delta(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(status=503, model=PRIMARY))
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE) as llm:
        ended, gate, _ = watched(llm)
        deltas, response = await stream(llm, sync, HELLO)
    assert "".join(deltas) == "Say hello." and response.model == THIRD
    assert response.fallbacks == [Skipped(PRIMARY, "server_error")] and response.attempts == 2
    assert [r.outcome for r in ended] == ["error", "ok"] and len(gate.settles) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_asks_the_answer_cache_for_the_model_it_falls_back_to(
    gateway: OfflineGateway, sync: bool, tmp_path: Any
) -> None:
    """Every call of a recovery plan asks the cache first, a stream's fall-back too (as invoke's do)."""
    async with live_llm(gateway.url, THIRD, cache=tmp_path / "answers.sqlite") as llm:
        _, stored = await stream(llm, sync, HELLO)  # the fallback model's answer, now in the cache
    gateway.faults.add(Fault(status=503, model=PRIMARY))
    async with live_llm(
        gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE, cache=tmp_path / "answers.sqlite"
    ) as llm:
        deltas, response = await stream(llm, sync, HELLO)
    assert "".join(deltas) == stored.content == response.content and response.source == "cache"
    assert models_asked(gateway) == [THIRD, PRIMARY]  # the cached model was not asked again
    assert response.fallbacks == [Skipped(PRIMARY, "server_error")] and response.attempts == 2


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_cut_before_its_first_delta_falls_back(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(cut_after=1, model=PRIMARY))  # the role chunk only: no text shown yet
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE) as llm:
        deltas, response = await stream(llm, sync, HELLO)
    assert "".join(deltas) == "Say hello." and response.fallbacks == [Skipped(PRIMARY, "connection_error")]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_never_falls_back_after_its_first_delta(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(cut_after=3, model=PRIMARY))  # role chunk and two deltas, then cut
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE) as llm:
        ended, _, _ = watched(llm)
        with pytest.raises(StreamError):
            await stream(llm, sync, HELLO)
    assert models_asked(gateway) == [PRIMARY] and [r.outcome for r in ended] == ["error"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_each_batch_item_falls_back_on_its_own(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(status=503, model=PRIMARY))  # one request of the primary fails
    prompts = ["first", "second", "third"]
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE) as llm:
        if sync:
            result = llm.batch(prompts, concurrency=1, progress=False)
        else:
            result = await llm.abatch(prompts, concurrency=1, progress=False)
    answers = result.responses
    assert [a.model for a in answers] == [THIRD, PRIMARY, PRIMARY]
    assert answers[0].fallbacks == [Skipped(PRIMARY, "server_error")] and answers[0].content == "first"
    assert [a.fallbacks for a in answers[1:]] == [[], []]


@pytest.mark.anyio
async def test_a_comparison_column_falls_back_and_says_so(gateway: OfflineGateway) -> None:
    gateway.faults.add(Fault(status=503, model=PRIMARY))
    async with live_llm(gateway.url, PRIMARY, fallbacks=[THIRD], retry=ONCE) as llm:
        comparison = await llm.acompare(HELLO, [PRIMARY, SECOND])
    first, second = comparison.results
    assert first.model == PRIMARY and first.response is not None and first.response.model == THIRD
    assert first.provenance is not None and first.provenance["fallbacks"] == [[PRIMARY, "server_error"]]
    assert second.response is not None and second.response.model == SECOND


@pytest.mark.anyio
async def test_context_length_by_the_gateways_code() -> None:
    """OpenAI's shape: a 400 whose ``code`` says it, whatever the wording; an ordinary 400 does not."""
    too_long = {"error": {"message": "prompt too big", "type": "invalid_request_error", "param": "messages"}}
    too_long["error"]["code"] = "context_length_exceeded"
    recorder = Recorder(httpx2.Response(400, json=too_long), httpx2.Response(200, json=completion("ok")))
    async with mock_llm(recorder, fallbacks=["model-b"]) as llm:
        response = await llm.ainvoke(USER)
    assert response.fallbacks == [Skipped("test/model", "context_length")]
    assert [json.loads(r.content)["model"] for r in recorder.requests] == ["test/model", "model-b"]

    plain = {"error": {"message": "bad temperature", "code": "invalid_value"}}
    recorder = Recorder(httpx2.Response(400, json=plain), httpx2.Response(200, json=completion("ok")))
    async with mock_llm(recorder, fallbacks=["model-b"]) as llm:
        with pytest.raises(BadRequestError):
            await llm.ainvoke(USER)
    assert len(recorder.requests) == 1


@pytest.mark.anyio
async def test_a_calls_own_model_is_asked_first_and_not_twice() -> None:
    """``model=`` replaces the client's model for the call; the fallbacks follow it, each once."""
    recorder = Recorder(httpx2.Response(503, json={"error": {"message": "busy"}}))
    async with mock_llm(recorder, fallbacks=["model-b", "model-c"], retry=ONCE) as llm:
        with pytest.raises(ServerError):
            await llm.ainvoke(USER, model="model-b")
    assert [json.loads(r.content)["model"] for r in recorder.requests] == ["model-b", "model-c"]


BAD_FALLBACKS: list[tuple[Any, str]] = [
    ("model-b", "list of model ids"),
    ({"model-b"}, "list of model ids"),
    ([""], r"fallbacks\[0\] must be a non-empty model id"),
    (["model-b", 3], r"fallbacks\[1\] must be a non-empty model id"),
    (["m"], "the client's own model"),
    (["model-b", "model-b"], "repeats 'model-b'"),
]


@pytest.mark.parametrize(("fallbacks", "says"), BAD_FALLBACKS)
def test_bad_fallbacks_are_refused_when_the_client_is_built(fallbacks: Any, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        FlotorchLLM("m", "k", "http://127.0.0.1:9", fallbacks=fallbacks)
    llm = FlotorchLLM("m", "k", "http://127.0.0.1:9")
    with pytest.raises(ConfigurationError, match=says):
        llm.copy(fallbacks=fallbacks)


def test_copy_keeps_changes_or_clears_the_fallbacks() -> None:
    llm = FlotorchLLM("m", "k", "http://127.0.0.1:9", fallbacks=("b", "c"))
    assert llm.fallbacks == ("b", "c")
    assert llm.copy(timeout=5).fallbacks == ("b", "c")
    assert llm.copy(fallbacks=["d"]).fallbacks == ("d",)
    assert llm.copy(fallbacks=[]).fallbacks == ()
    assert llm.with_model("b").fallbacks == ("c",)  # the new model is no longer its own fallback
    with pytest.raises(ConfigurationError, match="own model"):
        llm.copy(model_id="d", fallbacks=["d"])
    assert FlotorchLLM("m", "k", "http://127.0.0.1:9", retry=RetryPolicy()).fallbacks == ()


def test_the_plan_is_driven_by_twins_with_the_same_signature() -> None:
    """``drive``/``adrive`` run one recovery plan over invoke's and ainvoke's single call."""
    import inspect

    from flotorch_nb._pipeline._recover import adrive, drive

    assert list(inspect.signature(drive).parameters) == list(inspect.signature(adrive).parameters)
    assert inspect.iscoroutinefunction(adrive) and not inspect.iscoroutinefunction(drive)


# -- drive and adrive, fed the same outcomes ---------------------------------------------------------
def _call(model: str, messages: list[dict[str, Any]]) -> Call:
    return Call(
        url="http://127.0.0.1:9/api/openai/v1/chat/completions",
        body={"model": model, "messages": messages},
        content=b"",
        headers={},
        key=Secret("test-key-twins"),
        timeout=5.0,
        model=model,
        stream=False,
    )


def _invalid(model: str) -> StructuredOutputError:
    answer = LLMResponse(content='{"label": 7}', metadata={}, model=model, usage=Usage(5, 2, 7))
    return StructuredOutputError(
        "invalid", content=answer.content, response=answer, problems="label: not a str"
    )


def _rate_limited() -> RateLimitError:
    return RateLimitError("HTTP 429", status_code=429, gateway_message="slow down", retry_after=1.0)


#: What each call the plan makes ends with, in order: the first model answers invalidly twice (its
#: validation retry spent), the second is rate limited, the third answers (or fails: every model fails).
OUTCOMES: dict[str, Callable[[], list[Any]]] = {
    "answered": lambda: [
        _invalid(PRIMARY),
        _invalid(PRIMARY),
        _rate_limited(),
        LLMResponse(content='{"label": "ok"}', metadata={}, model=THIRD, usage=Usage(4, 1, 5)),
    ],
    "every model fails": lambda: [_invalid(PRIMARY), _invalid(PRIMARY), _rate_limited(), _rate_limited()],
    "a bug in the call": lambda: [_invalid(PRIMARY), RuntimeError("not a FlotorchError: no fallback")],
}


async def _drive(sync: bool, script: str) -> tuple[Any, ...]:
    """One plan (a validation retry, two fallbacks) run by ``drive`` or ``adrive`` over ``script``:
    the calls made (model, messages) and how it ended."""
    from flotorch_nb._pipeline._recover import adrive, drive, recover

    made: list[tuple[str, Any]] = []
    outcomes = OUTCOMES[script]()

    def once(call: Call) -> LLMResponse:
        made.append((call.model, call.body["messages"]))
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def aonce(call: Call) -> LLMResponse:
        return once(call)

    plan = recover(
        _call(PRIMARY, HELLO), HELLO, 1, [SECOND, THIRD], lambda messages, model: _call(model, messages)
    )
    try:
        end: Any = drive(plan, once) if sync else await adrive(plan, aonce)
    except Exception as exc:  # what the plan raised is compared as its answer would be
        end = exc
    marks = ("attempts", "fallbacks", "usage_total", "__notes__")
    return (made, type(end), getattr(end, "content", str(end)), *(getattr(end, m, None) for m in marks))


@pytest.mark.anyio
@pytest.mark.parametrize("script", list(OUTCOMES))
async def test_drive_and_adrive_run_a_plan_alike(script: str) -> None:
    """The twins make the same calls in the same order, fed the same outcomes, and end the same way."""
    blocking, awaited = await _drive(True, script), await _drive(False, script)
    assert awaited == blocking

    made, kind, _content, attempts, fallbacks, usage, notes = blocking
    reask = [*HELLO, {"role": "assistant", "content": '{"label": 7}'}, reask_message(_invalid(PRIMARY))]
    if script == "a bug in the call":  # not a FlotorchError: raised at once, nothing else asked
        assert made == [(PRIMARY, HELLO), (PRIMARY, reask)] and kind is RuntimeError and attempts is None
        return
    assert made == [(PRIMARY, HELLO), (PRIMARY, reask), (SECOND, HELLO), (THIRD, HELLO)]
    assert attempts == 4
    assert fallbacks == [Skipped(PRIMARY, "validation_failed"), Skipped(SECOND, "rate_limited")]
    if script == "answered":
        assert kind is LLMResponse and notes is None and usage == Usage(14, 5, 19)
    else:  # the last error, marked with what was tried; only the invalid answers reported usage
        assert kind is RateLimitError and usage == Usage(10, 4, 14)
        assert notes == [
            f"asked before it, and passed over: {PRIMARY} (validation_failed), {SECOND} (rate_limited)"
        ]
