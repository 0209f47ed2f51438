"""Python functions as tools: the schema from a signature and docstring, on every path that takes ``tools=``.

Each hint kind (``Literal``, enums, ``Optional``, defaults, lists, nested models, ``Annotated`` with a
``Field``) is checked in the schema the gateway receives; a callable the schema cannot describe is an
``InvalidRequestError`` with nothing sent.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Annotated, Any, Literal, Optional

import jsonschema
import pytest
from pydantic import BaseModel, Field

import flotorch_nb
from flotorch_nb import FlotorchLLM, InvalidRequestError
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.tools import Tool, as_tool


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str = "FR"


def forecast(
    place: Place,
    unit: Unit = Unit.CELSIUS,
    days: Annotated[int, Field(ge=1, le=7, description="How many days ahead.")] = 1,
    kinds: list[Literal["rain", "sun"]] | None = None,
    note: Optional[str] = None,  # noqa: UP045 - the spelling under test
) -> str:
    """Forecast the weather somewhere.

    Looks a few days ahead.

    Args:
        place: Where to look.
        unit: The temperature unit.
    """
    return "sunny"


def _parameters(tool: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = as_tool(tool).to_dict()["function"]["parameters"]
    return parameters


def test_name_and_description_come_from_the_function_and_its_docstring() -> None:
    function = as_tool(forecast).to_dict()["function"]
    assert function["name"] == "forecast"
    assert function["description"] == "Forecast the weather somewhere.\n\nLooks a few days ahead."


def test_each_hint_kind_makes_its_schema() -> None:
    schema = _parameters(forecast)
    jsonschema.Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert schema["required"] == ["place"]  # defaults make a parameter optional
    assert props["place"]["description"] == "Where to look."  # per-parameter docstring entry
    assert schema["$defs"]["Place"]["required"] == ["city"]  # nested model
    assert schema["$defs"]["Unit"]["enum"] == ["celsius", "fahrenheit"]  # enum
    assert props["unit"]["default"] == "celsius" and props["unit"]["description"] == "The temperature unit."
    assert (props["days"]["minimum"], props["days"]["maximum"]) == (1, 7)  # Annotated[..., Field(...)]
    assert props["days"]["description"] == "How many days ahead."
    rain_or_sun = {"enum": ["rain", "sun"], "type": "string"}
    assert props["kinds"]["anyOf"][0] == {"type": "array", "items": rain_or_sun}  # list of Literal
    assert props["note"]["anyOf"] == [{"type": "string"}, {"type": "null"}]  # Optional
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"place": {"city": "Paris"}, "kinds": ["rain"]})
    assert not validator.is_valid({"place": {"city": "Paris"}, "unit": "kelvin"})


def test_numpy_and_rest_docstrings_are_read_too() -> None:
    def numpy_style(city: str) -> str:
        """Look up a city.

        Parameters
        ----------
        city
            The city's name.
        """
        return city

    def rest_style(city: str) -> str:
        """Look up a city.

        :param city: The city's name.
        """
        return city

    for function in (numpy_style, rest_style):
        assert _parameters(function)["properties"]["city"]["description"] == "The city's name."


def test_the_decorator_renames_describes_and_marks_approval() -> None:
    @flotorch_nb.tool(name="lookup", description="Find it.", requires_approval=True)
    def find(query: str) -> str:
        """Ignored: the decorator's description wins."""
        return query

    assert isinstance(find, Tool) and find.requires_approval
    assert find.to_dict()["function"]["name"] == "lookup"
    assert find.to_dict()["function"]["description"] == "Find it."
    assert find("x") == "x"  # still a function

    @flotorch_nb.tool
    def plain(n: int) -> int:
        return n

    assert plain.name == "plain" and not plain.requires_approval


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (lambda x: x, "cannot be a tool name"),
        ("not callable", "neither a tool definition dict nor a function"),
    ],
)
def test_bad_items_are_refused(bad: Any, says: str) -> None:
    with pytest.raises(InvalidRequestError, match=says):
        as_tool(bad)


def _no_hint(city):  # type: ignore[no-untyped-def]
    return city


def _varargs(*cities: str) -> str:
    return ",".join(cities)


def _unschemable(when: asyncio.Event) -> str:
    return str(when)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (_no_hint, "has no type hint"),
        (_varargs, "named arguments only"),
        (_unschemable, "cannot be a JSON schema"),
    ],
)
def test_a_callable_the_schema_cannot_describe_is_refused_before_any_io(
    llm: FlotorchLLM, gateway: OfflineGateway, bad: Any, says: str
) -> None:
    with pytest.raises(InvalidRequestError, match=says):
        llm.invoke([{"role": "user", "content": "hi"}], tools=[bad])
    with pytest.raises(InvalidRequestError, match=says):
        llm.stream([{"role": "user", "content": "hi"}], tools=[bad])
    with pytest.raises(InvalidRequestError, match=says):
        llm.run([{"role": "user", "content": "hi"}], tools=[bad])
    assert gateway.requests == []


def _script(**script: Any) -> list[dict[str, Any]]:
    import json

    return [{"role": "user", "content": json.dumps({"script": script})}]


def test_every_path_sends_the_functions_schema(llm: FlotorchLLM, gateway: OfflineGateway) -> None:
    """invoke, ainvoke, stream, astream, batch and compare all convert through the call's preparation."""
    scripted = llm.copy(model_id="offline/scripted")
    messages = _script(content="ok")
    tools: list[Any] = [forecast, {"type": "function", "function": {"name": "raw", "parameters": {}}}]

    async def the_async_ones() -> None:
        await scripted.ainvoke(messages, tools=tools)
        stream = scripted.astream(messages, tools=tools)
        async for _ in stream:
            pass

    scripted.invoke(messages, tools=tools)
    for _ in scripted.stream(messages, tools=tools):
        pass
    asyncio.run(the_async_ones())
    scripted.batch([messages], tools=tools, progress=False)
    scripted.compare(messages, ["offline/scripted"], tools=tools)
    sent = [request.body["tools"] for request in gateway.requests]
    assert len(sent) == 6
    for tools_sent in sent:
        assert tools_sent == [as_tool(forecast).to_dict(), tools[1]]
