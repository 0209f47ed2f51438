"""Bad input is refused before any network call: the handler must see zero requests.

A typo in a notebook should cost no tokens and say exactly what is wrong, so each case below checks
the error class, a word of its message, and that nothing was sent.
"""

from __future__ import annotations

from typing import Any

import pytest

from flotorch_nb import ConfigurationError, FlotorchLLM, InvalidRequestError
from tests.support.client import KEY, MOCK_URL, SYNC, SYNC_IDS, USER, Recorder, invoke, mock_llm


class Opaque:
    """Not JSON-serialisable."""


BAD_MESSAGES: list[tuple[Any, str]] = [
    ("hello", "must be a list"),
    (b"hello", "must be a list"),
    ({"role": "user", "content": "x"}, "must be a list"),
    (None, "must be a list"),
    (42, "must be a list"),
    ([], "empty"),
    (["hello"], "messages[0] must be a dict"),
    ([{"role": "user", "content": "ok"}, None], "messages[1] must be a dict"),
    ([{"role": "wizard", "content": "x"}], "role 'wizard'"),
    ([{"content": "no role"}], "role None"),
    ([{"role": "user"}], "no 'content'"),
    ([{"role": "user", "content": None}], "no 'content'"),
    ([{"role": "assistant", "content": None}], "no 'content'"),
    ([{"role": "tool", "content": "42"}], "tool_call_id"),
    ([{"role": "tool", "content": "42", "tool_call_id": ""}], "tool_call_id"),
    ([{"role": "user", "content": {"a", "b"}}], "content"),
    ([{"role": "user", "content": Opaque()}], "content"),
    ([{"role": "user", "content": 12}], "content"),
    ([{"role": "user", "content": [{"type": "text", "text": {1, 2}}]}], "JSON-serialisable"),
    ([{"role": "user", "content": [{"no_type": "x"}]}], "content"),
    ([{"role": "user", "content": "x", "name": Opaque()}], "JSON-serialisable"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(("messages", "words"), BAD_MESSAGES)
async def test_bad_messages_are_refused_before_any_request(sync: bool, messages: Any, words: str) -> None:
    handler = Recorder()
    async with mock_llm(handler) as llm:
        with pytest.raises(InvalidRequestError, match=words.replace("[", r"\[").replace("]", r"\]")):
            await invoke(llm, sync, messages)
    assert handler.requests == []


BAD_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"temperature": "hot"}, "temperature must be a number"),
    ({"temperature": float("nan")}, "temperature must be a number"),
    ({"temperature": float("inf")}, "temperature must be a number"),
    ({"temperature": True}, "temperature must be a number"),
    ({"temperature": 2.5}, "between 0 and 2"),
    ({"temperature": -0.1}, "between 0 and 2"),
    ({"top_p": 1.5}, "top_p must be between 0 and 1"),
    ({"top_p": -1}, "top_p must be between 0 and 1"),
    ({"top_p": "0.5"}, "top_p must be a number"),
    ({"max_tokens": 0}, "max_tokens must be a whole number >= 1"),
    ({"max_tokens": -5}, "max_tokens must be a whole number >= 1"),
    ({"max_tokens": "100"}, "max_tokens must be a whole number >= 1"),
    ({"max_tokens": 10.5}, "max_tokens must be a whole number >= 1"),
    ({"max_tokens": True}, "max_tokens must be a whole number >= 1"),
    ({"stream": True}, "stream"),
    ({"stream_options": {"include_usage": False}}, "stream_options"),
    ({"seed": Opaque()}, "seed"),
    ({"user": {1, 2}}, "JSON-serialisable"),
    ({"model": 42}, "model must be a non-empty string"),
    ({"model": "   "}, "model must be a non-empty string"),
    ({"extra_body": "x"}, "extra_body must be a dict"),
    ({"extra_body": {"tags": {1}}}, "JSON-serialisable"),
    ({"timeout": 0}, "timeout must be a positive number"),
    ({"timeout": "5"}, "timeout must be a number"),
    ({"timeout": float("nan")}, "timeout must be a positive number"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(("kwargs", "words"), BAD_PARAMS, ids=lambda v: repr(v)[:40])
async def test_bad_params_are_refused_before_any_request(
    sync: bool, kwargs: dict[str, Any], words: str
) -> None:
    handler = Recorder()
    async with mock_llm(handler) as llm:
        # A bad timeout is a configuration mistake; everything else is a malformed request.
        expected = ConfigurationError if "timeout" in kwargs else InvalidRequestError
        with pytest.raises(expected, match=words):
            await invoke(llm, sync, USER, **kwargs)
    assert handler.requests == []


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
BAD_TOOLS: list[Any] = [
    "get_weather",
    {"type": "function"},
    [{"type": "function"}],
    [{"type": "function", "function": {"parameters": {}}}],
    [{"type": "function", "function": {"name": ""}}],
    [{"type": "function", "function": "get_weather"}],
    [TOOL, 3],
    [{"type": "function", "function": {"name": "f", "parameters": {"x": Opaque()}}}],
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("tools", BAD_TOOLS, ids=lambda v: repr(v)[:40])
async def test_malformed_tools_are_refused(sync: bool, tools: Any) -> None:
    handler = Recorder()
    async with mock_llm(handler) as llm:
        with pytest.raises(InvalidRequestError, match=r"tools|JSON-serialisable"):
            await invoke(llm, sync, USER, tools=tools)
    assert handler.requests == []


BAD_FORMATS: list[Any] = [
    "json",
    {"type": "json"},
    {"response_format": "json"},
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": {"name": "x"}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": "object"}},
    {"response_format": {"type": "json_schema", "json_schema": None}},
    dict,
    42,
]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("response_format", BAD_FORMATS, ids=lambda v: repr(v)[:40])
async def test_malformed_response_format_is_refused(sync: bool, response_format: Any) -> None:
    handler = Recorder()
    async with mock_llm(handler) as llm:
        with pytest.raises(InvalidRequestError, match="response_format"):
            await invoke(llm, sync, USER, response_format=response_format)
    assert handler.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_messages_twice_is_refused_by_the_signature(sync: bool) -> None:
    handler = Recorder()
    async with mock_llm(handler) as llm:
        with pytest.raises(TypeError, match="messages"):
            if sync:
                llm.invoke(USER, messages=USER)  # type: ignore[misc]
            else:
                await llm.ainvoke(USER, messages=USER)  # type: ignore[misc]
    assert handler.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_refused_stream_sends_nothing_either(sync: bool) -> None:
    handler = Recorder()
    async with mock_llm(handler) as llm:
        with pytest.raises(InvalidRequestError):
            if sync:
                llm.stream([{"role": "user"}])
            else:
                llm.astream([{"role": "user"}])
    assert handler.requests == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("", KEY, MOCK_URL), "model_id must be a non-empty string"),
        (("  ", KEY, MOCK_URL), "model_id must be a non-empty string"),
        (("m", "", MOCK_URL), "the API key is empty: .*FLOTORCH_API_KEY"),
        (("m", "   ", MOCK_URL), "the API key is empty: .*FLOTORCH_API_KEY"),
        (("m", KEY, "gateway.flotorch.cloud"), "base_url must be an http"),
        (("m", KEY, "ftp://gateway.flotorch.cloud"), "base_url must be an http"),
        (("m", KEY, "http://"), "base_url must be an http"),
        (("m", KEY, ""), "base_url must be an http"),
    ],
)
def test_bad_constructor_values_are_configuration_errors(args: tuple[str, str, str], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        FlotorchLLM(*args)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"endpoint": ""}, "endpoint"),
    ],
)
def test_bad_constructor_options_are_configuration_errors(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        FlotorchLLM("m", KEY, MOCK_URL, **options)


def test_configuration_and_request_errors_are_value_errors() -> None:
    """Code written against the seed that catches ValueError keeps working."""
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidRequestError, ValueError)
