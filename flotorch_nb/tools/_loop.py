"""The tool loop: ask the model, run the functions it calls, send back their results, until it answers.

Every model turn is a normal ``ainvoke`` of the client, so hooks, gates and budgets, the answer cache,
record/replay and provenance apply to each step; there is no second send loop here. What this adds:

- the arguments the model sent are validated by the tool's pydantic model; a validation error or an
  exception raised by the tool goes back to the model as that call's result (and stays on the step),
  so the model can recover;
- the calls of one turn run concurrently (``parallel=True``): async functions are awaited, sync ones
  run in a thread (``asyncio.to_thread``) so the event loop stays free;
- ``approve=`` decides which calls run (``_approval``): True asks a person before every call, a set
  of names before those tools' calls, a function of the ``ToolCall`` decides itself (True, False, or
  a reason sent back to the model as the denial). A person is asked through ``ask`` (a notebook
  widget, a terminal prompt: ``_approval.default_asker``). A denied call never runs.
- ``view`` (a ``RunView``) is told what happens as it happens: the text as it streams (each turn is
  then an ``astream`` instead of an ``ainvoke``), the calls a turn asks for, each call's outcome.
  The notebook draws its tool cards from it.
- ``.cost`` sums every step's cost at the process's price table (``pricing.default_prices``): None
  when any step's cost is unknown, as a comparison's.
- ``max_steps`` model turns at most: then ``MaxStepsError`` with the run so far. A cancelled ``arun``
  raises ``ToolRunCancelled``, an interrupted ``run`` ``ToolRunInterrupted``; both carry the steps
  that finished (``.run``), as batches do.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from .._config import check_whole
from .._errors import FlotorchError, InvalidRequestError
from .._response import LLMResponse, ToolCall, Usage
from . import _approval
from ._approval import Asker
from ._cards import result_text
from ._schema import Tool, as_tool, expand, wire_tools

__all__ = [
    "Approve",
    "MaxStepsError",
    "QuietView",
    "RunView",
    "ToolCallRecord",
    "ToolRun",
    "ToolRunCancelled",
    "ToolRunInterrupted",
    "ToolStep",
    "arun",
]

#: ``approve=``: True, a set of tool names, or a function deciding each call (see ``_approval``).
Approve = Callable[[ToolCall], Any] | bool | Sequence[str] | frozenset[str] | set[str] | None


class _Stream(Protocol):
    response: LLMResponse

    def __aiter__(self) -> AsyncIterator[str]: ...


class Invoker(Protocol):
    """What the loop needs of a client: its ``ainvoke`` (and ``astream`` when a view shows the text)."""

    async def ainvoke(
        self, messages: list[dict[str, Any]], tools: list[Any] | None = None, **kwargs: Any
    ) -> LLMResponse: ...


class RunView(Protocol):
    """What a surface is told while a run goes on, on the loop's event loop (a view that draws
    elsewhere hands the call over itself). ``QuietView`` does nothing; ``_cards.CardTracker`` keeps
    the tool cards."""

    #: Stream each model turn (``astream``) and report its text through ``delta``.
    stream: bool

    def delta(self, text: str) -> None:
        """A piece of the current model turn's text."""

    def step(self, step: ToolStep) -> None:
        """A model turn ended; ``step.calls`` are about to run (none: the run has its answer)."""

    def call_done(self, record: ToolCallRecord) -> None:
        """One call has its result, error or denial."""


class QuietView:
    """A ``RunView`` that is told everything and shows nothing (no streaming)."""

    stream = False

    def delta(self, text: str) -> None:
        pass

    def step(self, step: ToolStep) -> None:
        pass

    def call_done(self, record: ToolCallRecord) -> None:
        pass


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
    #: Dollars at the price table of the run (None: unknown, or no price table in use).
    cost: Decimal | None = None


@dataclass(slots=True, eq=False)
class ToolRun:
    """A whole tool loop: the steps, the conversation to continue, and the usage of every step."""

    steps: list[ToolStep]
    messages: list[dict[str, Any]]
    #: Whether a price table was in use (``.cost`` then means something; footers show it).
    priced: bool = False

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
    def cost(self) -> Decimal | None:
        """Dollars of every step together; None when a step's cost is unknown (no price for its model,
        no token counts) or no price table is in use."""
        costs = [step.cost for step in self.steps]
        if not self.priced or not costs or any(c is None for c in costs):
            return None
        return sum((c for c in costs if c is not None), Decimal(0))

    @property
    def calls(self) -> list[ToolCallRecord]:
        """Every function call of the run, in order."""
        return [call for step in self.steps for call in step.calls]

    @property
    def provenance(self) -> list[dict[str, Any]]:
        """The provenance record of every model turn, in order."""
        return [s.response.provenance for s in self.steps if s.response.provenance is not None]

    def __repr__(self) -> str:
        return f"ToolRun(steps={len(self.steps)}, calls={len(self.calls)}, content={self.content[:60]!r})"

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """The tool cards and the answer (sanitized HTML and plain text); the turns' provenance as the
        output's metadata, as every answer saves it."""
        from .._records import output_metadata
        from ._cards import run_bundle

        return run_bundle(self), output_metadata(self.provenance)


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
    check_whole(max_steps, "max_steps", 1, InvalidRequestError)
    if not isinstance(parallel, bool):
        raise InvalidRequestError(f"parallel must be True or False, got {parallel!r}")
    _approval.check_approve(approve)
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
    ask: Asker | None = None,
    view: RunView | None = None,
    **params: Any,
) -> ToolRun:
    """Run the loop on ``client`` (see the module docstring); the ``ToolRun`` once the model answers.

    ``ask`` asks a person when ``approve`` says so (default: ``_approval.default_asker()``); ``view``
    is told what happens as it happens."""
    from ..pricing import default_prices

    registry = check(tools, max_steps, approve, parallel)
    wire = wire_tools(list(tools))
    if not isinstance(messages, list):
        raise InvalidRequestError(f"messages must be a list of message dicts, got {type(messages).__name__}")
    prices = default_prices()  # a malformed price file is a configuration error, raised before any I/O
    if ask is None and _approval.needs_person(approve):
        ask = _approval.default_asker()
    view = view if view is not None else QuietView()
    model = params.get("model") or getattr(client, "model_id", None)
    run = ToolRun([], list(messages), priced=len(prices) > 0)
    try:
        for _ in range(max_steps):
            response = await _turn(client, run.messages, wire, params, view)
            step = ToolStep(
                response, [ToolCallRecord(c.id, c.name, c.arguments) for c in response.tool_calls]
            )
            step.cost = prices.cost(model, response.usage, response.model)
            run.steps.append(step)
            run.messages.append(response.assistant_message())
            view.step(step)
            if not step.calls:
                return run
            calls = [_call(registry, record, approve, ask, view) for record in step.calls]
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


async def _turn(
    client: Invoker, messages: list[dict[str, Any]], wire: list[Any], params: Mapping[str, Any], view: RunView
) -> LLMResponse:
    """One model turn: an ``ainvoke``, or an ``astream`` whose text the view sees as it arrives."""
    if not view.stream:
        return await client.ainvoke(messages, wire, **params)
    astream: Callable[..., AbstractAsyncContextManager[_Stream]] = getattr(client, "astream")  # noqa: B009
    async with astream(messages, wire, **params) as chat:
        async for delta in chat:
            view.delta(delta)
        return chat.response


def _drop_unfinished(run: ToolRun) -> None:
    """Cut a cancelled run back to its last whole exchange, so ``.messages`` can be sent again."""
    if run.steps and run.steps[-1].calls and run.messages[-1].get("role") == "assistant":
        run.steps.pop()
        run.messages.pop()


async def _call(
    registry: Mapping[str, Tool],
    record: ToolCallRecord,
    approve: Approve,
    ask: Asker | None,
    view: RunView,
) -> None:
    """Validate, approve and run one call, filling ``record``; nothing here escapes but cancellation."""
    started = time.perf_counter()
    try:
        await _fill(registry, record, approve, ask)
    finally:
        record.duration_s = time.perf_counter() - started
    view.call_done(record)


async def _fill(
    registry: Mapping[str, Tool], record: ToolCallRecord, approve: Approve, ask: Asker | None
) -> None:
    tool = registry.get(record.name)
    if tool is None:
        known = ", ".join(registry) or "none"
        record.error = f"there is no tool named {record.name!r}; the tools are: {known}"
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
    rule = _approval.decision(approve, tool.name, tool.requires_approval)
    if rule is not None:
        call = ToolCall(record.id, record.name, record.arguments)
        if rule == "call":
            verdict = await _approval.call_approver(approve, call)  # type: ignore[arg-type]
        elif rule == _approval.ASK:
            assert ask is not None
            verdict = _approval.verdict_of(await ask(call))
        else:
            verdict = rule  # a denial decided by the policy alone
        record.approved = verdict is True
        if verdict is not True:
            record.error = f"denied: {verdict or _approval.DENIED_BY_USER}"
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


def _text(record: ToolCallRecord) -> str:
    """A call's outcome as the text a ``tool`` message carries (JSON for anything not a string)."""
    return f"Error: {record.error}" if record.error is not None else result_text(record.result)
