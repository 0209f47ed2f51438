"""Structured output: the seed's ``convert_pydantic_to_custom_json_schema`` and what ``response_format``
may be given as.

Users pass whichever shape they have at hand: the seed's wrapper (``{"response_format": {...}}``), the
inner ``{"type": "json_schema", ...}`` dict, or a pydantic model class. They all become one wire shape,
and a class additionally gives a validated ``resp.parsed`` (validating the answer is the answer's side,
``_response.parse_structured``, re-exported here). pydantic is imported only when a class is
involved, so plain calls never pay its import cost.

A class's JSON schema is built once (``_schema_of``): pydantic takes about a millisecond to build it,
and every call with ``response_format=<class>`` needs it — a batch, a judge's votes and each validation
re-ask would otherwise rebuild the same schema thousands of times.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import InvalidRequestError
from ._response import parse_structured as parse_structured  # the answer's half, kept importable here

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "convert_pydantic_to_custom_json_schema",
    "is_model_class",
    "normalize_response_format",
    "parse_structured",
]

#: Each class's JSON schema, kept as JSON text: every caller gets a fresh copy (``json.loads``, some
#: microseconds) that it may change without changing anyone else's. Weak keys: a class made on the fly
#: (``create_model``, a judge's score class) is not kept alive by having been asked for once.
_SCHEMAS: weakref.WeakKeyDictionary[type[Any], str] = weakref.WeakKeyDictionary()


def _schema_of(model_class: type[BaseModel]) -> dict[str, Any]:
    """``model_class.model_json_schema()``, built once per class; a new copy each time."""
    text = _SCHEMAS.get(model_class)
    if text is None:
        # A schema pydantic cannot build yet (an unresolved forward reference) raises here and is not
        # kept, so the class is asked again once it has been rebuilt.
        text = _SCHEMAS[model_class] = json.dumps(model_class.model_json_schema())
    schema: dict[str, Any] = json.loads(text)
    return schema


def convert_pydantic_to_custom_json_schema(model_class: type[BaseModel]) -> dict[str, Any]:
    """The seed's helper: a pydantic class as FloTorch's ``{"response_format": {...json_schema...}}``.

    The result is shaped exactly as the released SDK's, so it can be passed as
    ``response_format=...`` (the wrapper) or unpacked as ``**convert_pydantic_to_custom_json_schema(M)``.
    """
    if not is_model_class(model_class):
        raise InvalidRequestError(f"expected a pydantic BaseModel class, got {model_class!r}")
    schema = _schema_of(model_class)
    return {
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "schema": {**schema, "additionalProperties": False},
                "name": schema.get("title", model_class.__name__),
                "strict": True,
            },
        }
    }


def is_model_class(value: object) -> bool:
    """Whether ``value`` is a pydantic model class (by its methods: importing pydantic costs 80 ms)."""
    if not isinstance(value, type):
        return False
    # A class that has pydantic's method is enough; importing pydantic to check would cost 80 ms.
    return callable(getattr(value, "model_json_schema", None)) and hasattr(value, "model_validate_json")


def normalize_response_format(response_format: object) -> tuple[dict[str, Any] | None, type[Any] | None]:
    """Return ``(wire_format, model_class)`` for any accepted shape; refuse anything else before I/O."""
    if response_format is None:
        return None, None
    if is_model_class(response_format):
        assert isinstance(response_format, type)
        wrapper = convert_pydantic_to_custom_json_schema(response_format)
        return wrapper["response_format"], response_format
    if isinstance(response_format, Mapping):
        inner = response_format.get("response_format", response_format)
        if isinstance(inner, Mapping) and inner.get("type") in ("json_schema", "json_object", "text"):
            if inner["type"] == "json_schema":
                spec = inner.get("json_schema")
                if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
                    raise InvalidRequestError(
                        "response_format of type 'json_schema' needs "
                        "json_schema={'name': ..., 'schema': {...}}"
                    )
            return dict(inner), None
    raise InvalidRequestError(
        "response_format must be a pydantic model class, convert_pydantic_to_custom_json_schema(Model), "
        "or {'type': 'json_schema', 'json_schema': {...}}; "
        f"got {response_format!r:.120}"
    )
