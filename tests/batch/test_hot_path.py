"""The batch's per-item path stays as cheap as a plain ``ainvoke``: what it keeps of each answer is
the body as it arrived (no second JSON encoding of ``raw_response``), rebuilt equal on demand."""

from __future__ import annotations

import json

import httpx2
import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb._response import LLMResponse, ResponseInfo, parse_completion
from flotorch_nb._stored import StoredAnswer
from tests.support.client import KEY

#: Spaced out as a gateway may send it: a re-encoded answer would differ from these bytes.
BODY = (
    b'{ "id": "chatcmpl-1", "object": "chat.completion", "model": "m/1",\n'
    b'  "choices": [ { "index": 0, "message": { "role": "assistant", "content": "caf\xc3\xa9 \\ud83d" },'
    b' "finish_reason": "stop" } ],\n'
    b'  "usage": { "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 } }'
)


def _client() -> FlotorchLLM:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=BODY, headers={"content-type": "application/json"})

    transport = httpx2.MockTransport(answer)
    return FlotorchLLM(
        "m/1", KEY, "http://127.0.0.1:9", async_http_client=httpx2.AsyncClient(transport=transport)
    )


@pytest.mark.anyio
async def test_a_batch_item_keeps_the_answer_as_it_arrived_and_rebuilds_it_equal() -> None:
    llm = _client()
    result = await llm.abatch(["a", "b"], progress=False, cache=False)
    direct = await llm.ainvoke([{"role": "user", "content": "a"}])
    for item in result.items:
        assert item.answer is not None and item.answer.raw == BODY  # kept, not encoded again
        rebuilt = item.response
        assert rebuilt is not None
        assert rebuilt.metadata["raw_response"] == json.loads(BODY) == direct.metadata["raw_response"]
        assert rebuilt.content == direct.content == "café \ud83d"
        assert rebuilt.usage == direct.usage and rebuilt.provenance is not None


def test_a_stored_answer_without_a_body_encodes_its_raw_response_as_ascii() -> None:
    """A rebuilt answer (a cache hit, a stream's) has no wire body: its dict is encoded, as ASCII."""
    response = StoredAnswer.of(_answer()).to_response()
    assert response.raw_body is None
    stored = StoredAnswer.of(response)
    assert stored.raw.isascii() and json.loads(stored.raw) == json.loads(BODY)
    assert stored.to_response().content == "café \ud83d"


def _answer() -> LLMResponse:
    return parse_completion(BODY, ResponseInfo(0.0))
