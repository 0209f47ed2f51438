"""Python functions as tools: the JSON schema a model sees, built from a function's signature.

The name is the function's, the description its docstring's summary, each parameter's description
its docstring entry (Google, NumPy or reST style, parsed by ``docstring_parser`` rather than by
hand), and the types its annotations, turned into a schema by pydantic (``Literal``, enums,
``Optional``, defaults, lists, nested models, ``Annotated[..., Field(...)]``). The same pydantic
model later validates the arguments the model sends (``_loop``). pydantic-ai's ``_function_schema``
and simonw/llm's ``Tool.function`` are the models.

A callable this cannot describe (no type hint, ``*args``, a type pydantic cannot put in a schema,
a name the API refuses) is an ``InvalidRequestError`` while the call is prepared, before any I/O.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from .._errors import InvalidRequestError

__all__ = ["Tool", "Toolset", "as_tool", "expand", "tool", "wire_tools"]

F = TypeVar("F", bound=Callable[..., Any])

#: The tool names OpenAI-compatible APIs accept.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Schemas of plain functions, made once per function (a batch prepares the same tools per item).
_MADE: weakref.WeakKeyDictionary[Any, Tool] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, eq=False)
class Tool:
    """A Python function the model may call: its wire schema and the pydantic model of its arguments."""

    function: Callable[..., Any]
    name: str
    description: str
    #: Ask ``approve=`` before every call of this tool even when it is not asked for every tool.
    requires_approval: bool
    arguments: type[Any] = field(repr=False)
    schema: dict[str, Any] = field(repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The decorated function still works as a function."""
        return self.function(*args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``tools=`` entry."""
        return {"type": "function", "function": dict(self.schema)}


class Toolset:
    """Several tools given as one item of ``tools=[...]`` (an MCP server's, ``flotorch_nb.mcp``).

    ``expand`` replaces it by its tools wherever ``tools=`` is read, so they are sent, validated,
    approved and called like the tools of Python functions.
    """

    #: What the request check looks for without importing this module.
    flotorch_toolset = True

    def __init__(self, tools: tuple[Tool, ...]) -> None:
        self.tools = tools


def expand(tools: list[Any]) -> list[Any]:
    """``tools`` with every ``Toolset`` replaced by its tools, in place."""
    if not any(isinstance(item, Toolset) for item in tools):
        return tools
    return [one for item in tools for one in (item.tools if isinstance(item, Toolset) else (item,))]


@overload
def tool(function: F, /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, requires_approval: bool = False
) -> Callable[[F], Tool]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Mark a function as a tool, optionally renaming it, describing it, or asking for approval.

    ``@tool`` or ``@tool(name=..., description=..., requires_approval=True)``. Optional: a plain
    function in ``tools=`` works too. The schema is built (and checked) here, at definition time.
    """

    def make(func: Callable[..., Any]) -> Tool:
        return _build(func, name, description, requires_approval)

    return make(function) if function is not None else make


def as_tool(item: object, where: str = "tools") -> Tool:
    """``item`` as a ``Tool``: already one, or a callable described now (once per function)."""
    if isinstance(item, Tool):
        return item
    if not callable(item):
        raise InvalidRequestError(f"{where} is neither a tool definition dict nor a function")
    try:
        made = _MADE.get(item)
    except TypeError:  # not weak-referenceable (a functools.partial of a builtin...)
        made = None
    if made is None:
        made = _build(item, None, None, False, where)
        with contextlib.suppress(TypeError):
            _MADE[item] = made
    return made


def wire_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """Every function among ``tools`` replaced by its ``tools=`` entry; dicts are left as they are.

    The one conversion, called while a call is prepared (``_request``), so invoke, streams, batches,
    comparisons and the tool loop all send the same schema.
    """
    return [
        item if isinstance(item, dict) else as_tool(item, f"tools[{i}]").to_dict()
        for i, item in enumerate(expand(tools))
    ]


def _build(
    func: Callable[..., Any],
    name: str | None,
    description: str | None,
    requires_approval: bool,
    where: str = "tool",
) -> Tool:
    import docstring_parser
    import pydantic

    name = name if name is not None else getattr(func, "__name__", type(func).__name__)
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            f"{where}: {name!r} cannot be a tool name (letters, digits, '_' and '-', at most 64); "
            "give one with @flotorch_nb.tool(name=...)"
        )
    try:
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise InvalidRequestError(f"{where}: the signature of {name!r} cannot be read: {exc}") from None
    doc = docstring_parser.parse(inspect.getdoc(func) or "")
    described = {p.arg_name: p.description for p in doc.params if p.description}
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise InvalidRequestError(
                f"{where}: {name}({param}) cannot be a tool parameter: the model sends named arguments only"
            )
        if param.name not in hints:
            raise InvalidRequestError(
                f"{where}: parameter {param.name!r} of {name!r} has no type hint; the schema needs one"
            )
        default = ... if param.default is param.empty else param.default
        about = described.get(param.name)  # left unset without one: an Annotated Field's stays
        info = pydantic.Field(default, description=about) if about else pydantic.Field(default)
        fields[param.name] = (hints[param.name], info)
    try:
        model = pydantic.create_model(f"{name}_arguments", **fields)
        schema = model.model_json_schema()
    except (pydantic.PydanticUserError, TypeError) as exc:
        raise InvalidRequestError(
            f"{where}: the parameters of {name!r} cannot be a JSON schema: {exc}"
        ) from None
    schema.pop("title", None)
    summary = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)
    text = description if description is not None else summary
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if text:
        function["description"] = text
    return Tool(func, name, text, requires_approval, model, function)
