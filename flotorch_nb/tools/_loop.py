"""The tool loop: ask the model, run the functions it calls, send back their results, until it answers.

Every model turn is a normal ``ainvoke`` of the client, so hooks, gates and budgets, the answer cache,
record/replay and provenance apply to each step; there is no second send loop here. What this adds:

- the arguments the model sent are validated by the tool's pydantic model; a validation error or an
  exception raised by the tool goes back to the model as that call's result (and stays on the step),
  so the model can recover;
- the calls of one turn run concurrently (``parallel=True``): async functions are awaited, sync ones
  run in a thread (``asyncio.to_thread``) so the event loop stays free;
- ``approve=`` is a function of the ``ToolCall`` asked before every call: True runs it, False or a
  reason (sent back to the model as the denial) does not; a denied call never runs. A tool made with
  ``requires_approval=True`` is denied when there is no such function. ``approve=True`` or a set of
  names (asking a person: a notebook widget or a terminal prompt) is not in this version and is
  refused up front.
- ``max_steps`` model turns at most: then ``MaxStepsError`` with the run so far. A cancelled ``arun``
  raises ``ToolRunCancelled``, an interrupted ``run`` ``ToolRunInterrupted``; both carry the steps
  that finished (``.run``), as batches do.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._errors import FlotorchError, InvalidRequestError
from .._response import LLMResponse, ToolCall, Usage
from ._schema import Tool, as_tool, expand, wire_tools

__all__ = [
    "Approve",
    "MaxStepsError",
    "ToolCallRecord",
    "ToolRun",
    "ToolRunCancelled",
    "ToolRunInterrupted",
    "ToolStep",
    "arun",
]

#: ``approve=``: the function that decides each call (True, False, or a reason for the denial).
Approve = Callable[[ToolCall], Any] | bool | None


class Invoker(Protocol):
    """What the loop needs of a client: its ``ainvoke``."""

    async def ainvoke(
        self, messages: list[dict[str, Any]], tools: list[Any] | None = None, **kwargs: Any
    ) -> LLMResponse: ...


@dataclass(slots=True)
class ToolCallRecord:
    """One function call of a step: what the model asked, what came back, how long it took."""

    id: str
    name: str
    arguments: str
    result: Any = None
    #: The text sent back instead of a result: bad arguments, the tool's exception, a denial.
    error: str | None = None
    duration_s: float = 0.0
    #: None when no approval was asked, else whether the call was approved.
    approved: bool | None = None

    @property
    def denied(self) -> bool:
        return self.approved is False

    def message(self) -> dict[str, Any]:
        """The ``tool`` message that carries this call's outcome back to the model."""
        return {"role": "tool", "tool_call_id": self.id, "content": _text(self)}


@dataclass(slots=True)
class ToolStep:
    """One model turn: its answer and the calls it asked for (none on the final turn)."""

    response: LLMResponse
    calls: list[ToolCallRecord] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class ToolRun:
    """A whole tool loop: the steps, the conversation to continue, and the usage of every step."""

    steps: list[ToolStep]
    messages: list[dict[str, Any]]

    @property
    def response(self) -> LLMResponse | None:
        """The last model turn's answer (the final one when the run finished)."""
        return self.steps[-1].response if self.steps else None

    @property
    def content(self) -> str:
        """The final answer's text."""
        return self.response.content if self.response is not None else ""

    @property
    def usage(self) -> Usage:
        """Tokens of every step together (a step whose gateway sent no usage counts as zero)."""
        used = [s.response.usage for s in self.steps if s.response.usage is not None]
        return Usage(
            sum(u.input_tokens for u in used),
            sum(u.output_tokens for u in used),
            sum(u.total_tokens for u in used),
        )

    @property
    def calls(self) -> list[ToolCallRecord]:
        """Every function call of the run, in order."""
        return [call for step in self.steps for call in step.calls]

    def __repr__(self) -> str:
        return f"ToolRun(steps={len(self.steps)}, calls={len(self.calls)}, content={self.content[:60]!r})"


class MaxStepsError(FlotorchError):
    """The model still asked for tools after ``max_steps`` turns; ``.run`` holds every step so far
    (its ``.messages`` end with the last results: pass them to ``run`` again to go on)."""

    def __init__(self, run: ToolRun, max_steps: int) -> None:
        super().__init__(f"the model still called tools after max_steps={max_steps} turns (see .run)")
        self.run = run


class ToolRunCancelled(asyncio.CancelledError):
    """``arun()``'s task was cancelled; ``.run`` holds the steps that finished."""

    def __init__(self, run: ToolRun) -> None:
        super().__init__(f"tool run cancelled after {len(run.steps)} step(s) (see .run)")
        self.run = run


class ToolRunInterrupted(KeyboardInterrupt):
    """``run()`` was interrupted (Ctrl-C, a kernel interrupt); ``.run`` holds the steps that finished."""

    def __init__(self, run: ToolRun) -> None:
        super().__init__(f"tool run interrupted after {len(run.steps)} step(s) (see .run)")
        self.run = run


def check(tools: object, max_steps: object, approve: object, parallel: object) -> dict[str, Tool]:
    """The loop's own arguments checked before any I/O; the Python tools by name."""
    if not isinstance(tools, Sequence) or isinstance(tools, str | bytes) or not tools:
        raise InvalidRequestError("run() needs tools=[...]: functions (or tool dicts) the model may call")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise InvalidRequestError(f"max_steps must be a whole number >= 1, got {max_steps!r}")
    if not isinstance(parallel, bool):
        raise InvalidRequestError(f"parallel must be True or False, got {parallel!r}")
    if approve is not None and approve is not False and not callable(approve):
        raise InvalidRequestError(
            f"approve={approve!r} asks a person, which needs the notebook's prompt (not in this version); "
            "pass a function of the ToolCall returning True, False or a reason"
        )
    python = [
        as_tool(t, f"tools[{i}]") for i, t in enumerate(expand(list(tools))) if not isinstance(t, Mapping)
    ]
    return {t.name: t for t in python}


async def arun(
    client: Invoker,
    messages: list[dict[str, Any]],
    tools: Sequence[Any],
    *,
    max_steps: int = 10,
    approve: Approve = None,
    parallel: bool = True,
    **params: Any,
) -> ToolRun:
    """Run the loop on ``client`` (see the module docstring); the ``ToolRun`` once the model answers."""
    registry = check(tools, max_steps, approve, parallel)
    wire = wire_tools(list(tools))
    if not isinstance(messages, list):
        raise InvalidRequestError(f"messages must be a list of message dicts, got {type(messages).__name__}")
    run = ToolRun([], list(messages))
    try:
        for _ in range(max_steps):
            response = await client.ainvoke(run.messages, wire, **params)
            step = ToolStep(
                response, [ToolCallRecord(c.id, c.name, c.arguments) for c in response.tool_calls]
            )
            run.steps.append(step)
            run.messages.append(response.assistant_message())
            if not step.calls:
                return run
            calls = [_call(registry, record, approve) for record in step.calls]
            if parallel:
                await asyncio.gather(*calls)
            else:
                for one in calls:
                    await one
            run.messages.extend(record.message() for record in step.calls)
    except asyncio.CancelledError:
        _drop_unfinished(run)
        raise ToolRunCancelled(run) from None
    raise MaxStepsError(run, max_steps)


def _drop_unfinished(run: ToolRun) -> None:
    """Cut a cancelled run back to its last whole exchange, so ``.messages`` can be sent again."""
    if run.steps and run.steps[-1].calls and run.messages[-1].get("role") == "assistant":
        run.steps.pop()
        run.messages.pop()


async def _call(registry: Mapping[str, Tool], record: ToolCallRecord, approve: Approve) -> None:
    """Validate, approve and run one call, filling ``record``; nothing here escapes but cancellation."""
    started = time.perf_counter()
    try:
        tool = registry.get(record.name)
        if tool is None:
            record.error = (
                f"there is no tool named {record.name!r}; the tools are: {', '.join(registry) or 'none'}"
            )
            return
        import pydantic

        try:
            arguments = tool.arguments.model_validate_json(record.arguments or "{}")
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            record.error = f"invalid arguments for {record.name}: {problems}"
            return
        if _asks(approve, tool):
            verdict = await _verdict(approve, ToolCall(record.id, record.name, record.arguments))
            record.approved = verdict is True
            if verdict is not True:
                reason = verdict if isinstance(verdict, str) and verdict else "the user denied this call"
                record.error = f"denied: {reason}"
                return
        kwargs = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        kwargs.update(arguments.model_extra or {})  # an MCP tool's arguments: its server validates them
        try:
            if inspect.iscoroutinefunction(tool.function):
                record.result = await tool.function(**kwargs)
            else:
                record.result = await asyncio.to_thread(tool.function, **kwargs)
                if inspect.isawaitable(record.result):
                    record.result = await record.result
        except Exception as exc:  # the model hears about it and may recover
            record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.duration_s = time.perf_counter() - started


def _asks(approve: Approve, tool: Tool) -> bool:
    return callable(approve) or tool.requires_approval


async def _verdict(approve: Approve, call: ToolCall) -> bool | str:
    """The decision on one call; a function's answer may be awaited. Without a function, a tool
    that requires approval is denied: nobody can approve it in this layer."""
    if not callable(approve):
        return f"{call.name} requires approval and no approve= function was given"
    verdict = approve(call)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    if verdict is True or verdict is False or isinstance(verdict, str):
        return verdict
    return bool(verdict)


def _text(record: ToolCallRecord) -> str:
    """A call's outcome as the text a ``tool`` message carries (JSON for anything not a string)."""
    if record.error is not None:
        return f"Error: {record.error}"
    if isinstance(record.result, str):
        return record.result
    try:
        return json.dumps(_plain(record.result), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(record.result)


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value
