"""Construction: arguments > FLOTORCH_* environment (read when the client is built) > defaults; the
options; and what every request carries (URL, headers, body)."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from flotorch_nb import ConfigurationError, FlotorchLLM, RetryPolicy
from flotorch_nb._config import DEFAULT_ENDPOINT, DEFAULT_TIMEOUT
from flotorch_nb.gateway import OfflineGateway
from tests.support.client import (
    KEY,
    MOCK_URL,
    SYNC,
    SYNC_IDS,
    USER,
    Recorder,
    invoke,
    live_llm,
    mock_llm,
)

ENDPOINT = "/api/openai/v1/chat/completions"


def test_seed_positional_and_keyword_construction() -> None:
    a = FlotorchLLM("m1", KEY, MOCK_URL)
    b = FlotorchLLM(model_id="m1", api_key=KEY, base_url=MOCK_URL)
    for llm in (a, b):
        assert llm.model_id == "m1"
        assert llm.base_url == MOCK_URL
        assert llm.endpoint == ENDPOINT == DEFAULT_ENDPOINT
        assert llm.url == MOCK_URL + ENDPOINT
        assert llm.timeout == DEFAULT_TIMEOUT
        llm.close()


@pytest.mark.parametrize("missing", ["model_id", "api_key", "base_url"])
def test_each_omitted_argument_comes_from_the_environment_read_at_construction(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    values = {"model_id": "env/model", "api_key": KEY, "base_url": "http://env.test"}
    env = {"model_id": "FLOTORCH_MODEL_ID", "api_key": "FLOTORCH_API_KEY", "base_url": "FLOTORCH_BASE_URL"}
    given: dict[str, Any] = {k: v for k, v in values.items() if k != missing}
    # The variable is set only now, after flotorch_nb was imported: it must still be seen.
    monkeypatch.setenv(env[missing], values[missing])
    llm = FlotorchLLM(**given)
    assert llm.model_id == "env/model"
    assert llm.base_url == "http://env.test"
    assert llm.url == "http://env.test" + ENDPOINT
    llm.close()


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "env/model")
    monkeypatch.setenv("FLOTORCH_BASE_URL", "http://env.test")
    monkeypatch.setenv("FLOTORCH_API_KEY", "env-key-123")
    llm = FlotorchLLM("arg/model", KEY, "http://arg.test")
    assert (llm.model_id, llm.base_url) == ("arg/model", "http://arg.test")


def test_the_environment_is_read_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTORCH_API_KEY", KEY)
    monkeypatch.setenv("FLOTORCH_BASE_URL", MOCK_URL)
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "first")
    first = FlotorchLLM()
    monkeypatch.setenv("FLOTORCH_MODEL_ID", "second")
    second = FlotorchLLM()
    assert (first.model_id, second.model_id) == ("first", "second")


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (
            {},
            ["model_id", "api_key", "base_url", "FLOTORCH_MODEL_ID", "FLOTORCH_API_KEY", "FLOTORCH_BASE_URL"],
        ),
        ({"model_id": "m", "base_url": MOCK_URL}, ["api_key=", "FLOTORCH_API_KEY"]),
        ({"model_id": "m", "api_key": KEY}, ["base_url=", "FLOTORCH_BASE_URL"]),
        ({"api_key": KEY, "base_url": MOCK_URL}, ["model_id=", "FLOTORCH_MODEL_ID"]),
    ],
)
def test_missing_configuration_names_both_ways_to_fix_it(given: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        FlotorchLLM(**given)
    for word in named:
        assert word in str(info.value)
    assert "environment" in str(info.value)


def test_an_empty_environment_variable_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTORCH_API_KEY", "")
    with pytest.raises(ConfigurationError, match="FLOTORCH_API_KEY"):
        FlotorchLLM("m", base_url=MOCK_URL)


def test_options(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = FlotorchLLM("m", KEY, MOCK_URL, timeout=7.5, max_retries=5, endpoint="v2/chat")
    assert llm.timeout == 7.5
    assert llm.retry.max_retries == 5
    assert llm.endpoint == "/v2/chat"
    assert llm.url == MOCK_URL + "/v2/chat"
    policy = RetryPolicy(max_retries=1, base_delay=0, max_delay=0)
    assert FlotorchLLM("m", KEY, MOCK_URL, max_retries=5, retry=policy).retry is policy
    monkeypatch.setenv("FLOTORCH_TIMEOUT", "3.5")
    monkeypatch.setenv("FLOTORCH_MAX_RETRIES", "4")
    from_env = FlotorchLLM("m", KEY, MOCK_URL)
    assert (from_env.timeout, from_env.retry.max_retries) == (3.5, 4)
    assert FlotorchLLM("m", KEY, MOCK_URL, timeout=1, max_retries=0).retry.max_retries == 0
    monkeypatch.setenv("FLOTORCH_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="FLOTORCH_TIMEOUT"):
        FlotorchLLM("m", KEY, MOCK_URL)


def test_the_default_timeout_is_finite() -> None:
    llm = FlotorchLLM("m", KEY, MOCK_URL)
    assert 0 < llm.timeout < float("inf")
    assert llm.timeout <= 300


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("base_url", [MOCK_URL, MOCK_URL + "/", MOCK_URL + "//", " " + MOCK_URL + "/ "])
async def test_a_trailing_slash_never_doubles_the_slash(sync: bool, base_url: str) -> None:
    handler = Recorder()
    transport = httpx2.MockTransport(handler)
    async with httpx2.AsyncClient(transport=transport) as async_http:
        with httpx2.Client(transport=transport) as http:
            async with FlotorchLLM("m", KEY, base_url, http_client=http, async_http_client=async_http) as llm:
                await invoke(llm, sync)
    assert str(handler.requests[0].url) == MOCK_URL + ENDPOINT
    assert handler.requests[0].url.path == ENDPOINT


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_gateway_receives_the_path_once_with_a_trailing_slash(
    gateway: OfflineGateway, sync: bool
) -> None:
    async with live_llm(gateway.url + "/") as llm:
        await invoke(llm, sync)
    assert gateway.requests[0]["path"] == ENDPOINT


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_the_body_and_headers(sync: bool) -> None:
    handler = Recorder()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Summarize FloTorch in one line."},
    ]
    async with mock_llm(handler) as llm:
        await invoke(llm, sync, messages)
        await invoke(
            llm,
            sync,
            messages,
            tools=tools,
            response_format={"type": "json_object"},
            extra_body={"guardrails": ["pii"]},
            temperature=0.3,
            max_tokens=50,
            top_p=0.9,
            model="other/model",
        )
    plain, full = handler.bodies
    assert plain == {"model": "test/model", "messages": messages, "extra_body": {}}
    assert full == {
        "model": "other/model",
        "messages": messages,
        "tools": tools,
        "response_format": {"type": "json_object"},
        "extra_body": {"guardrails": ["pii"]},
        "temperature": 0.3,
        "max_tokens": 50,
        "top_p": 0.9,
    }
    for request in handler.requests:
        assert request.method == "POST"
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["content-type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_gateway_receives_body_and_bearer_header(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url) as llm:
        await invoke(llm, sync, USER, temperature=0.2, extra_body={"trace": "t1"})
    seen = gateway.requests[0]
    assert seen["body"]["model"] == "offline/assistant"
    assert seen["body"]["messages"] == USER
    assert seen["body"]["extra_body"] == {"trace": "t1"}
    assert seen["body"]["temperature"] == 0.2
    assert seen["headers"]["authorization"] == "Bearer ***"  # the gateway masks what it records


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_per_call_options_do_not_leak_into_the_next_call(sync: bool) -> None:
    handler = Recorder()
    async with mock_llm(handler) as llm:
        await invoke(llm, sync, model="other/model", temperature=1.0, timeout=5)
        await invoke(llm, sync)
    assert handler.bodies[0]["model"] == "other/model"
    assert handler.bodies[1] == {"model": "test/model", "messages": USER, "extra_body": {}}
    assert "timeout" not in handler.bodies[0]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_an_empty_model_per_call_is_refused_not_replaced(sync: bool) -> None:
    from flotorch_nb import InvalidRequestError

    handler = Recorder()
    async with mock_llm(handler) as llm:
        with pytest.raises(InvalidRequestError, match="model"):
            await invoke(llm, sync, model="")
    assert handler.requests == []


@pytest.mark.anyio
async def test_injected_clients_are_used_and_never_closed() -> None:
    handler = Recorder()
    transport = httpx2.MockTransport(handler)
    async with httpx2.AsyncClient(transport=transport) as async_http:
        with httpx2.Client(transport=transport) as http:
            async with FlotorchLLM("m", KEY, MOCK_URL, http_client=http, async_http_client=async_http) as llm:
                llm.invoke(USER)
                await llm.ainvoke(USER)
            llm.close()
            await llm.aclose()
            assert not http.is_closed
            assert not async_http.is_closed
            # Still usable by their owner.
            assert http.get(MOCK_URL).status_code == 200
            assert (await async_http.get(MOCK_URL)).status_code == 200
    assert len(handler.requests) == 4


def test_with_model_keeps_everything_but_the_model() -> None:
    policy = RetryPolicy(max_retries=4, base_delay=0, max_delay=0)
    base = FlotorchLLM("m1", KEY, MOCK_URL, timeout=9, retry=policy, endpoint="/x")
    other = base.with_model("m2")
    assert (other.model_id, other.base_url, other.endpoint, other.timeout) == ("m2", MOCK_URL, "/x", 9)
    assert other.retry == policy
    assert base.model_id == "m1"
    with pytest.raises(ConfigurationError):
        base.with_model("")
