"""Structured output: the three shapes ``response_format`` accepts, ``resp.parsed``, and what the gateway
returns validating against the schema."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import jsonschema
import pytest
from pydantic import BaseModel, Field

from flotorch_nb import StructuredOutputError, convert_pydantic_to_custom_json_schema
from flotorch_nb.gateway import OfflineGateway
from tests.support.client import SYNC, SYNC_IDS, Recorder, completion, invoke, live_llm, mock_llm, stream


class City(BaseModel):
    """A city and a few facts about it."""

    name: str
    country: str
    population: int = Field(ge=0)
    landmarks: list[str]


PARIS: dict[str, Any] = {
    "name": "Paris",
    "country": "France",
    "population": 2_100_000,
    "landmarks": ["Louvre"],
}
PROMPT = [{"role": "user", "content": "Describe Paris as JSON."}]


def test_convert_gives_the_seed_wrapper() -> None:
    wrapper = convert_pydantic_to_custom_json_schema(City)
    assert list(wrapper) == ["response_format"]
    inner = wrapper["response_format"]
    assert inner["type"] == "json_schema"
    spec = inner["json_schema"]
    assert spec["name"] == "City"
    assert spec["strict"] is True
    assert spec["schema"]["additionalProperties"] is False
    assert set(spec["schema"]["required"]) == {"name", "country", "population", "landmarks"}
    jsonschema.Draft202012Validator.check_schema(spec["schema"])


SHAPES: dict[str, Any] = {
    "wrapper": convert_pydantic_to_custom_json_schema(City),
    "inner": convert_pydantic_to_custom_json_schema(City)["response_format"],
    "class": City,
}


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_every_shape_sends_the_same_wire_format(sync: bool, shape: str) -> None:
    handler = Recorder(httpx2.Response(200, json=completion(json.dumps(PARIS))))
    async with mock_llm(handler) as llm:
        response = await invoke(llm, sync, PROMPT, response_format=SHAPES[shape])
    assert handler.bodies[0]["response_format"] == SHAPES["inner"]
    assert json.loads(response.content) == PARIS
    if shape == "class":
        assert isinstance(response.parsed, City)
        assert response.parsed == City(**PARIS)
    else:
        assert response.parsed is None


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"name": "Paris"}),
        json.dumps({**PARIS, "population": -1}),
        json.dumps({**PARIS, "population": "many"}),
        json.dumps([PARIS]),
        "",
    ],
    ids=["not-json", "missing-fields", "out-of-range", "wrong-type", "array", "empty"],
)
async def test_json_that_does_not_validate_is_a_structured_output_error(sync: bool, content: str) -> None:
    handler = Recorder(httpx2.Response(200, json=completion(content)))
    async with mock_llm(handler) as llm:
        with pytest.raises(StructuredOutputError, match="City") as info:
            await invoke(llm, sync, PROMPT, response_format=City)
    assert info.value.content == content


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_json_object_and_text_formats_pass_through(sync: bool) -> None:
    handler = Recorder(httpx2.Response(200, json=completion("{}")))
    async with mock_llm(handler) as llm:
        await invoke(llm, sync, PROMPT, response_format={"type": "json_object"})
        await invoke(llm, sync, PROMPT, response_format={"response_format": {"type": "text"}})
    assert handler.bodies[0]["response_format"] == {"type": "json_object"}
    assert handler.bodies[1]["response_format"] == {"type": "text"}


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_gateway_fills_the_schema(gateway: OfflineGateway, sync: bool, shape: str) -> None:
    async with live_llm(gateway.url) as llm:
        response = await invoke(llm, sync, PROMPT, response_format=SHAPES[shape])
    jsonschema.validate(json.loads(response.content), SHAPES["inner"]["json_schema"]["schema"])
    if shape == "class":
        assert isinstance(response.parsed, City)
    assert gateway.requests[0]["body"]["response_format"] == SHAPES["inner"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_streamed_structured_answer_is_parsed_at_the_end(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url) as llm:
        deltas, response = await stream(llm, sync, PROMPT, response_format=City)
    assert "".join(deltas) == response.content
    assert isinstance(response.parsed, City)
    jsonschema.validate(json.loads(response.content), City.model_json_schema())
