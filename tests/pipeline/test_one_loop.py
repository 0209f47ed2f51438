"""One send loop: every path (invoke, ainvoke, stream, astream, a batch item) gets the same retry,
same-origin redirect, hook, gate and answer-cache behaviour, because every path rides the client's
own loop instead of a copy of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest

from flotorch_nb import CallRequest, CallResult, FlotorchLLM, LLMResponse
from flotorch_nb.cache import AnswerCache
from tests.support.client import (
    MOCK_URL,
    USER,
    Counting,
    Recorder,
    chunk,
    completion,
    mock_llm,
    sse,
    sse_response,
)

PATHS = ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"]
USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def _gateway() -> Recorder:
    """503, then a same-origin 307, then the answer (streamed when the request asked for a stream)."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        if b'"stream":true' in request.content:
            final = {**chunk(), "choices": [], "usage": USAGE}
            return sse_response(sse(chunk("Hello!", finish_reason="stop"), final))
        return httpx2.Response(200, json=completion("Hello!"))

    moved = httpx2.Response(307, headers={"location": f"{MOCK_URL}/moved/chat/completions"})
    return Recorder(httpx2.Response(503, json={"error": {"message": "busy"}}), moved, answer)


async def _ask(llm: FlotorchLLM, path: str) -> tuple[LLMResponse, Any]:
    """One call by ``path``: the answer, and the batch item for the batch paths."""
    if path == "invoke":
        return llm.invoke(USER), None
    if path == "ainvoke":
        return await llm.ainvoke(USER), None
    if path == "stream":
        chat = llm.stream(USER)
        assert "".join(chat) == "Hello!"
        return chat.response, None
    if path == "astream":
        achat = llm.astream(USER)
        assert "".join([d async for d in achat]) == "Hello!"
        return achat.response, None
    if path == "batch":
        import asyncio

        result = await asyncio.to_thread(llm.batch, [USER], progress=False)
    else:
        result = await llm.abatch([USER], progress=False)
    (item,) = result
    assert item.answer is not None, item.error
    return item.answer.to_response(), (item, result.stats)


@pytest.mark.anyio
@pytest.mark.parametrize("path", PATHS)
async def test_every_path_rides_one_loop(path: str, tmp_path: Path) -> None:
    handler = _gateway()
    gate = Counting()
    before: list[CallRequest] = []
    after: list[CallResult] = []
    async with mock_llm(handler, cache=tmp_path / "answers.sqlite") as llm:
        llm.hooks.before_request.append(before.append)
        llm.hooks.after_call.append(after.append)
        llm.hooks.gates.append(gate)
        response, batched = await _ask(llm, path)

        # Retry and redirect: the 503 was retried, the 307 followed to the same origin.
        assert response.content == "Hello!"
        assert [r.url.path for r in handler.requests] == [
            "/api/openai/v1/chat/completions",
            "/api/openai/v1/chat/completions",
            "/moved/chat/completions",
        ]
        # Hooks once per call; the gate once per attempt (a redirect is part of its attempt).
        assert len(before) == len(after) == 1 and after[0].outcome == "ok"
        assert len(gate.admits) == len(gate.settles) == 2
        if batched is not None:
            item, stats = batched
            assert item.attempts == 2 and stats.requests == 2 and stats.retries == 1
            assert before[0].label == "batch"

        # The answer cache: the same request again is answered from the file, nothing sent, no hook.
        again, batched = await _ask(llm, path)
        assert again.source == "cache" and again.content == "Hello!"
        assert len(handler.requests) == 3 and len(before) == len(after) == 1
        assert len(gate.admits) == 2
        assert isinstance(llm.cache, AnswerCache)
        assert again.request_hash is not None and again.request_hash == response.request_hash
        if batched is not None:
            item, stats = batched
            assert item.source == "cache" and item.attempts == 0 and stats.cache_hits == 1


def test_a_cache_hit_carries_its_request_hash(tmp_path: Path) -> None:
    with httpx2.Client(transport=httpx2.MockTransport(Recorder())) as http:
        llm = FlotorchLLM(
            "test/model", "k-0123456789", MOCK_URL, http_client=http, cache=tmp_path / "a.sqlite"
        )
        first = llm.invoke(USER)
        hit = llm.invoke(USER)
    assert first.source == "live" and hit.source == "cache"
    assert hit.request_hash is not None and hit.request_hash == first.request_hash
