"""The offline models a comparison can set side by side: answers and timings that differ the way real
models differ, deterministically."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import jsonschema
import pytest

import flotorch_nb.gateway as gateway_package
from flotorch_nb.gateway import OFFLINE_MODELS, PROFILES, OfflineGateway

CHAT = "/api/openai/v1/chat/completions"
AUTH = {"Authorization": "Bearer models-test-key"}
PROMPTS = [
    "Explain in two sentences what a Jupyter magic command is.",
    "List three steps to make tea.",
    "Summarize FloTorch in one line.",
    "Write a Python function that returns the factorial of n.",
    "A haiku about the sea.",
]


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    with OfflineGateway() as gw, httpx2.Client(base_url=gw.url, headers=AUTH, timeout=10) as c:
        yield c


def ask(client: httpx2.Client, model: str, text: str, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_at_least_four_models_are_listed_and_documented(client: httpx2.Client) -> None:
    assert {"offline/assistant", "offline/echo", "offline/concise", "offline/verbose"} <= set(OFFLINE_MODELS)
    listed = [m["id"] for m in client.get("/api/openai/v1/models").json()["data"]]
    assert listed == list(OFFLINE_MODELS)
    for name in OFFLINE_MODELS:
        assert PROFILES[name].description
        assert name in (gateway_package.__doc__ or "")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_concise_is_shorter_and_verbose_longer_than_the_assistant(client: httpx2.Client, prompt: str) -> None:
    tokens = {
        model: ask(client, model, prompt)["usage"]["completion_tokens"]
        for model in ("offline/concise", "offline/assistant", "offline/verbose")
    }
    assert tokens["offline/concise"] <= tokens["offline/assistant"] < tokens["offline/verbose"], tokens
    for model in ("offline/concise", "offline/verbose"):
        assert ask(client, model, prompt)["choices"] == ask(client, model, prompt)["choices"]


def test_the_styles_keep_what_matters(client: httpx2.Client) -> None:
    code = ask(client, "offline/concise", PROMPTS[3])["choices"][0]["message"]["content"]
    assert code.startswith("```python") and "def factorial" in code
    steps = ask(client, "offline/concise", PROMPTS[1])["choices"][0]["message"]["content"]
    assert steps.count("\n") == 2 and steps.startswith("1. ")
    verbose = ask(client, "offline/verbose", PROMPTS[2])["choices"][0]["message"]["content"]
    assert verbose.startswith("FloTorch is an LLM gateway") and "offline/verbose" in verbose


@pytest.mark.parametrize("model", OFFLINE_MODELS)
def test_structured_answers_still_validate_for_every_model(client: httpx2.Client, model: str) -> None:
    if model in ("offline/echo", "offline/scripted"):
        pytest.skip("echo repeats the message and scripted answers its script, by design")
    schema = {
        "type": "object",
        "properties": {"dish": {"type": "string"}, "minutes": {"type": "integer"}},
        "required": ["dish", "minutes"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "Recipe", "schema": schema, "strict": True}}
    answer = ask(client, model, "A quick pasta dish.", response_format=fmt)
    content = answer["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema)


def _stream_seconds(client: httpx2.Client, model: str) -> tuple[float, float]:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[0]}], "stream": True}
    started = time.perf_counter()
    with client.stream("POST", CHAT, json=body) as response:
        first = time.perf_counter() - started
        response.read()
    return first, time.perf_counter() - started


def test_timings_differ_like_real_models() -> None:
    with (
        OfflineGateway(latency=0.2, token_delay=0.004) as gw,
        httpx2.Client(base_url=gw.url, headers=AUTH, timeout=30) as client,
    ):
        concise, assistant, verbose = (
            _stream_seconds(client, m) for m in ("offline/concise", "offline/assistant", "offline/verbose")
        )
    # first bytes after 0.1 s, 0.2 s and 0.3 s (latency x 0.5, 1, 1.5), with 0.1 s of slack each
    assert 0.1 <= concise[0] < 0.2 <= assistant[0] < 0.3 <= verbose[0], (concise, assistant, verbose)
    assert concise[1] < assistant[1] < verbose[1]
