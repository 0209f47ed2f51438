"""Validation retries (issue 15 item 5): ``response_format=Model, validation_retries=N`` re-asks the model
with the validation errors, each re-ask a normal call (hooks, ledger, budgets count it), and the answer
says how many attempts it took and their total usage. Real HTTP to ``offline/scripted``, whose script's
``turns`` answer the first call and each re-ask in turn."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel, Field

from flotorch_nb import (
    CallResult,
    FlotorchLLM,
    InvalidRequestError,
    StructuredOutputError,
    Usage,
)
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook.ledger import Ledger
from flotorch_nb.spending import TokenBudget
from tests.support.client import SYNC, SYNC_IDS, Recorder, invoke, live_llm, mock_llm

SCRIPTED = "offline/scripted"


class City(BaseModel):
    """What the model is asked for."""

    name: str
    population: int = Field(ge=0)


VALID = '{"name": "Paris", "population": 2100000}'
NEGATIVE = '{"name": "Paris", "population": -1}'
NOT_JSON = "Paris has about two million people."


def scripted(*contents: str, tokens: int = 10) -> list[dict[str, str]]:
    """A prompt whose script answers the first call and each re-ask with ``contents`` in turn, each
    reporting ``tokens`` prompt and ``tokens`` completion tokens."""
    usage = {"prompt_tokens": tokens, "completion_tokens": tokens}
    turns = [{"content": content, "usage": usage} for content in contents]
    return [{"role": "user", "content": json.dumps({"script": {"turns": turns}})}]


def counting(llm: FlotorchLLM) -> tuple[list[str], list[CallResult]]:
    """Hooks on ``llm`` that record every call's start and end."""
    started: list[str] = []
    ended: list[CallResult] = []
    llm.hooks.before_request.append(lambda request: started.append(request.model))
    llm.hooks.after_call.append(ended.append)
    return started, ended


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_an_invalid_answer_is_asked_again_with_its_errors(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url, SCRIPTED) as llm:
        started, ended = counting(llm)
        ledger = Ledger()
        ledger.attach(llm)
        budget = TokenBudget(10_000).attach(llm.hooks)
        messages = scripted(NOT_JSON, NEGATIVE, VALID)
        response = await invoke(llm, sync, messages, response_format=City, validation_retries=2)

    assert response.parsed == City(name="Paris", population=2_100_000)
    assert response.attempts == 3
    assert response.usage == Usage(10, 10, 20)  # the last call's own usage
    assert response.usage_total == Usage(30, 30, 60)  # every attempt's
    assert response.provenance is not None and response.provenance["attempts"] == 3
    assert response.fallbacks == [] and response.provenance["fallbacks"] == []
    # Every re-ask is a call of its own: hooks, the ledger and the budget saw three.
    assert started == [SCRIPTED] * 3 and [r.outcome for r in ended] == ["error", "error", "ok"]
    assert len(ledger.entries) == 3 and sum(e.total_tokens for e in ledger.entries) == 60
    assert budget.spent == 60
    # The re-asks carry the conversation so far: each invalid answer, then the errors it had.
    sent = [r["body"]["messages"] for r in gateway.requests]
    assert [len(m) for m in sent] == [1, 3, 5]
    assert sent[2][:3] == sent[1]
    assert sent[1][1] == {"role": "assistant", "content": NOT_JSON}
    assert sent[1][2]["role"] == "user" and "Invalid JSON" in sent[1][2]["content"]
    assert sent[2][3] == {"role": "assistant", "content": NEGATIVE}
    assert "population" in sent[2][4]["content"] and "greater than or equal to 0" in sent[2][4]["content"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_when_every_attempt_fails_the_error_keeps_the_last_answer(
    gateway: OfflineGateway, sync: bool
) -> None:
    async with live_llm(gateway.url, SCRIPTED) as llm:
        _, ended = counting(llm)
        with pytest.raises(StructuredOutputError, match="population") as caught:
            await invoke(llm, sync, scripted(NOT_JSON, NEGATIVE), response_format=City, validation_retries=1)
    error = caught.value
    assert error.content == NEGATIVE and error.response.content == NEGATIVE
    assert error.attempts == 2 and error.usage_total == Usage(20, 20, 40)
    assert len(ended) == 2 and all(r.outcome == "error" for r in ended)


@pytest.mark.anyio
async def test_a_valid_first_answer_takes_one_attempt(gateway: OfflineGateway) -> None:
    async with live_llm(gateway.url, SCRIPTED) as llm:
        response = await llm.ainvoke(scripted(VALID), response_format=City, validation_retries=3)
    assert response.attempts == 1 and response.usage_total == response.usage == Usage(10, 10, 20)
    assert len(gateway.requests) == 1


@pytest.mark.anyio
async def test_without_validation_retries_one_failure_is_final(gateway: OfflineGateway) -> None:
    async with live_llm(gateway.url, SCRIPTED) as llm:
        with pytest.raises(StructuredOutputError) as caught:
            await llm.ainvoke(scripted(NOT_JSON, VALID), response_format=City)
    assert caught.value.attempts == 1 and len(gateway.requests) == 1


BAD_RETRIES: list[tuple[Any, Any, str]] = [
    (-1, City, "whole number >= 0"),
    (1.5, City, "whole number >= 0"),
    (True, City, "whole number >= 0"),
    ("2", City, "whole number >= 0"),
    (2, None, "needs response_format"),
    (2, {"type": "json_object"}, "needs response_format"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(("retries", "response_format", "says"), BAD_RETRIES)
async def test_a_bad_validation_retries_is_refused_before_any_io(
    sync: bool, retries: Any, response_format: Any, says: str
) -> None:
    recorder = Recorder()  # records any request: there must be none
    async with mock_llm(recorder) as llm:
        with pytest.raises(InvalidRequestError, match=says):
            await invoke(llm, sync, response_format=response_format, validation_retries=retries)
        with pytest.raises(InvalidRequestError, match=says):
            llm.check([{"role": "user", "content": "hi"}], None, response_format, validation_retries=retries)
        with pytest.raises(InvalidRequestError, match=says):
            await llm.abatch(["hi"], response_format=response_format, validation_retries=retries)
    assert recorder.requests == []


@pytest.mark.anyio
async def test_a_stream_refuses_validation_retries_before_any_io() -> None:
    recorder = Recorder()
    async with mock_llm(recorder) as llm:
        with pytest.raises(InvalidRequestError, match="does not apply to a stream"):
            llm.stream([{"role": "user", "content": "hi"}], response_format=City, validation_retries=1)
        with pytest.raises(InvalidRequestError, match="does not apply to a stream"):
            llm.astream([{"role": "user", "content": "hi"}], response_format=City, validation_retries=1)
    assert recorder.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_batch_item_is_asked_again_on_its_own(gateway: OfflineGateway, sync: bool) -> None:
    prompts = [scripted(VALID)[0]["content"], scripted(NOT_JSON, VALID)[0]["content"]]
    async with live_llm(gateway.url, SCRIPTED) as llm:
        _, ended = counting(llm)
        if sync:
            result = llm.batch(prompts, response_format=City, validation_retries=1, progress=False)
        else:
            result = await llm.abatch(prompts, response_format=City, validation_retries=1, progress=False)
    answers = result.responses
    assert [a.attempts for a in answers] == [1, 2]
    assert all(a.parsed == City(name="Paris", population=2_100_000) for a in answers)
    assert len(ended) == 3


@pytest.mark.anyio
async def test_a_comparison_column_is_asked_again(gateway: OfflineGateway) -> None:
    async with live_llm(gateway.url, SCRIPTED) as llm:
        comparison = await llm.acompare(
            scripted(NEGATIVE, VALID), [SCRIPTED], response_format=City, validation_retries=1
        )
    (column,) = comparison.results
    assert column.error is None and column.response is not None and column.response.attempts == 2
    assert column.provenance is not None and column.provenance["attempts"] == 2


@pytest.mark.anyio
async def test_the_reask_names_the_errors_on_a_mock_gateway() -> None:
    """A pure check of the wire: the re-ask is the invalid answer then a user turn, nothing else."""
    from tests.support.client import completion

    recorder = Recorder(
        httpx2.Response(200, json=completion(NEGATIVE)), httpx2.Response(200, json=completion(VALID))
    )
    async with mock_llm(recorder) as llm:
        response = await llm.ainvoke(
            [{"role": "user", "content": "Paris?"}], response_format=City, validation_retries=1
        )
    first, second = recorder.bodies
    assert second["messages"][:1] == first["messages"]
    assert second["messages"][1] == {"role": "assistant", "content": NEGATIVE}
    assert second["messages"][2]["content"].startswith("Your answer was not valid: population:")
    assert second["response_format"] == first["response_format"]
    assert "validation_retries" not in first and response.attempts == 2


@pytest.mark.anyio
async def test_a_class_schema_is_built_once_for_every_call_and_reask(gateway: OfflineGateway) -> None:
    """pydantic builds a schema in about a millisecond: a batch with re-asks (a judge's votes) must not
    rebuild it per call. Counted at the class, through real calls and re-asks."""

    class Counted(City):
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            built.append(cls)
            return super().model_json_schema(*args, **kwargs)

    built: list[type] = []
    prompts = [scripted(VALID), scripted(NOT_JSON, VALID), scripted(NEGATIVE, VALID)]
    async with live_llm(gateway.url, SCRIPTED) as llm:
        result = await llm.abatch(
            [p[0]["content"] for p in prompts], response_format=Counted, validation_retries=1, progress=False
        )
        again = await llm.ainvoke(prompts[1], response_format=Counted, validation_retries=1)
    assert [a.attempts for a in result.responses] == [1, 2, 2] and again.attempts == 2
    assert all(isinstance(a.parsed, Counted) for a in [*result.responses, again])
    assert len(gateway.requests) == 7 and built == [Counted]  # seven calls, one schema


def test_the_schema_given_out_is_a_copy_callers_may_change() -> None:
    from flotorch_nb import convert_pydantic_to_custom_json_schema

    first = convert_pydantic_to_custom_json_schema(City)
    first["response_format"]["json_schema"]["schema"]["properties"]["name"]["type"] = "integer"
    first["response_format"]["json_schema"]["schema"]["required"].append("mayor")
    again = convert_pydantic_to_custom_json_schema(City)
    schema = again["response_format"]["json_schema"]["schema"]
    assert schema == {**City.model_json_schema(), "additionalProperties": False}
    assert schema["properties"]["name"]["type"] == "string" and "mayor" not in schema["required"]
