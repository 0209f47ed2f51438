"""``%%flotorch --tools f,g [--approve] [--max-steps N]`` and ``%%flotorch --agent NAME``: a tool loop
(or a pydantic-ai agent run) in a cell, its calls shown as tool cards.

- The names come from the notebook's namespace; an unknown name or one that is not a function (or an
  MCP toolset) is a ``UsageError`` before any request.
- While the loop runs, one display shows the cards so far and the model's text as it streams
  (``tools._cards.CardTracker``, the renderer the chat panel uses too; in terminal IPython the text
  and one line per call are printed instead); it is cleared when the cell's
  value arrives: the ``ToolRun``, which displays itself as plain sanitized HTML (cards, answer,
  footer) and text, so the saved notebook keeps the cards without any widget state.
- ``--approve`` asks a person before every call. In a Jupyter kernel that is an Approve / Deny widget
  (``approval``), which can only receive its click while the cell *awaits*: the extension registers
  ``await_approval_cells``, an IPython input transformer that turns such a cell into
  ``await ...awaited_cell(...)`` (top-level await), so the loop runs on the kernel's own loop and the
  kernel keeps dispatching comm messages; the next cells of a Run All wait as usual. Without a kernel
  (terminal IPython) the loop runs blocking on the bridge and asks on stdin.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from IPython.core.error import UsageError
from IPython.display import clear_output, display

from .. import _bridge
from .._errors import FlotorchError, InvalidRequestError
from .._pipeline._hooks import call_label
from .._text import utf8_safe
from ..tools import _approval
from ..tools._cards import CardData, CardTracker, answer_bundle, card_text, cards_html
from ..tools._loop import RunView, ToolCallRecord, ToolStep, arun
from .answer_cell import PREVIEW_INTERVAL_S, is_terminal, one_line_traceback, write_terminal
from .options import split_words
from .pacing import Pacer

__all__ = ["AgentRun", "await_approval_cells", "awaited_cell", "resolve_tools", "run_agent", "run_tools"]

_MAGIC_CALL = "get_ipython().run_cell_magic('flotorch', "


def resolve_tools(names: str, namespace: Mapping[str, Any]) -> list[Any]:
    """``--tools f,g``: the functions (or MCP toolsets) of those names, or a ``UsageError``."""
    found = []
    for name in (part.strip() for part in names.split(",")):
        if not name:
            raise UsageError(f"%%flotorch --tools {names!r}: an empty name; write --tools f,g")
        if name not in namespace:
            raise UsageError(f"%%flotorch --tools: no {name!r} in the notebook; define the function first")
        value = namespace[name]
        if not (callable(value) or getattr(value, "flotorch_toolset", False)):
            raise UsageError(f"%%flotorch --tools: {name} is a {type(value).__name__}, not a function")
        found.append(value)
    return found


class LivePreview:
    """The cell's live display: the cards so far and the current turn's text, redrawn as paced."""

    def __init__(self, *, stream: bool) -> None:
        # Cards change rarely and each change matters (a call waits for a person): drawn at once.
        self.tracker = CardTracker(self.draw, stream=stream, on_delta=self._paced)
        self._pacer = Pacer(PREVIEW_INTERVAL_S)
        self._handle = display(self._bundle(), raw=True, display_id=True)  # type: ignore[no-untyped-call]

    def _bundle(self) -> dict[str, str]:
        from .views import preview_bundle

        cards = self.tracker.cards(waiting=False)  # the Approve / Deny prompt below shows those
        text = preview_bundle(self.tracker.text, "markdown", status="running tools…")
        return {
            "text/plain": "\n".join([*(c.name for c in cards), text["text/plain"]]),
            "text/html": f'<div class="flotorch-tool-live">{cards_html(cards)}{text["text/html"]}</div>',
        }

    def _paced(self) -> None:
        if self._pacer.due():
            self.draw()

    def draw(self) -> None:
        with self._pacer.redraw():
            self._handle.update(self._bundle(), raw=True)


class TerminalView:
    """A terminal (no rich output): the text printed as it streams, a card's line as each call ends,
    both by ``answer_cell.write_terminal``: a tool's result cannot drive the terminal."""

    def __init__(self, *, stream: bool) -> None:
        self.stream = stream

    def delta(self, text: str) -> None:
        write_terminal(text)

    def step(self, step: ToolStep) -> None:
        if self.stream and (step.calls or step.response.content):
            sys.stdout.write("\n")

    def call_done(self, record: ToolCallRecord) -> None:
        write_terminal(card_text(CardData.of(record)) + "\n")


class _HandedOver:
    """A view whose every event runs on the waiting cell's thread (the loop runs on the bridge's)."""

    def __init__(self, view: RunView, caller: _bridge.Caller) -> None:
        self.stream = view.stream
        self._view, self._caller = view, caller

    def delta(self, text: str) -> None:
        self._caller.call(self._view.delta, text)

    def step(self, step: ToolStep) -> None:
        self._caller.call(self._view.step, step)

    def call_done(self, record: ToolCallRecord) -> None:
        self._caller.call(self._view.call_done, record)


@contextmanager
def cell_failures(shell: Any) -> Iterator[None]:
    """How a tool loop ends a cell when it fails, the same for the blocking and the awaited form and
    for a pydantic-ai agent: a request refused before any I/O (a function the loop cannot describe)
    is an option mistake, a ``UsageError`` without traceback; any other ``FlotorchError``
    (``MaxStepsError``, a gateway failure) fails the cell, shown as one line. The calls are labelled
    ``magic``."""
    with call_label("magic"):
        try:
            yield
        except InvalidRequestError as exc:
            raise UsageError(f"%%flotorch: {exc}") from None
        except FlotorchError as exc:
            one_line_traceback(exc, shell)
            raise


def run_tools(
    shell: Any,
    client: Any,
    messages: list[dict[str, Any]],
    tools: list[Any],
    *,
    approve: bool,
    max_steps: int,
    stream: bool,
    params: dict[str, Any],
) -> Any:
    """The blocking form: the loop on the bridge, the live preview drawn from this thread, stdin asked
    for approval; the ``ToolRun`` (the preview cleared as it arrives)."""
    live = not is_terminal(shell)
    preview = LivePreview(stream=stream) if live else None
    view: RunView = preview.tracker if preview is not None else TerminalView(stream=stream)

    def main(caller: _bridge.Caller) -> Any:
        return arun(
            client,
            messages,
            tools,
            max_steps=max_steps,
            approve=True if approve else None,
            ask=_approval.ask_stdin,
            view=_HandedOver(view, caller),
            **params,
        )

    run = _bridge.run(main)
    if preview is not None:
        clear_output(wait=True)  # type: ignore[no-untyped-call]
    return run


async def run_tools_awaited(
    client: Any,
    messages: list[dict[str, Any]],
    tools: list[Any],
    *,
    max_steps: int,
    stream: bool,
    params: dict[str, Any],
) -> Any:
    """The awaited form (a kernel, ``--approve``): the loop on the kernel's loop, an Approve / Deny
    widget per call in the cell's output; the ``ToolRun``."""
    from .approval import widget_asker

    preview = LivePreview(stream=stream)
    run = await arun(
        client,
        messages,
        tools,
        max_steps=max_steps,
        approve=True,
        ask=preview.tracker.asking(widget_asker()),
        view=preview.tracker,
        **params,
    )
    clear_output(wait=True)  # type: ignore[no-untyped-call]
    return run


# -- the awaited cell -------------------------------------------------------------------------------
def await_approval_cells(lines: list[str]) -> list[str]:
    """IPython input transformer (``input_transformers_post``): in a Jupyter kernel, a
    ``%%flotorch ... --approve`` cell with ``--tools`` becomes an awaited call of ``awaited_cell``
    (see the module docstring). Every other cell, and any cell this cannot read, is left as it is."""
    if not lines or not lines[0].startswith(_MAGIC_CALL) or not _kernel_can_await():
        return lines
    try:
        call = ast.parse("".join(lines), mode="eval").body
        line, cell = (ast.literal_eval(arg) for arg in call.args[1:])  # type: ignore[attr-defined]
        words = split_words(line)
    except (SyntaxError, ValueError, TypeError, AttributeError):
        return lines
    if "--approve" not in words or not any(w == "--tools" or w.startswith("--tools=") for w in words):
        return lines
    target = "__import__('flotorch_nb.notebook.tool_cell', fromlist=['awaited_cell']).awaited_cell"
    return [f"await {target}(get_ipython(), {line!r}, {cell!r})\n"]


def _kernel_can_await() -> bool:
    from IPython import get_ipython

    shell = get_ipython()
    return getattr(shell, "kernel", None) is not None and bool(getattr(shell, "autoawait", False))


async def awaited_cell(shell: Any, line: str, cell: str) -> Any:
    """Run ``%%flotorch line`` on ``cell`` as an awaited cell (what ``await_approval_cells`` writes)."""
    magics = shell.magics_manager.registry["FlotorchMagics"]
    outcome = magics.flotorch_cell(line, cell, awaited=True)
    return await outcome if hasattr(outcome, "__await__") else outcome


# -- pydantic-ai agents -----------------------------------------------------------------------------
class AgentRun:
    """A pydantic-ai agent run shown with the tool cards: ``.result`` is the agent's own result."""

    def __init__(self, result: Any, cards: list[CardData], footer: Any) -> None:
        self.result = result
        self.cards = cards
        self.footer = footer

    @property
    def output(self) -> Any:
        """The agent's output (``result.output``)."""
        return self.result.output

    def __repr__(self) -> str:
        return f"AgentRun(calls={len(self.cards)}, output={str(self.output)[:60]!r})"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """The cards of every tool call, then the output (sanitized), then the footer."""
        return answer_bundle(self.cards, utf8_safe(str(self.output)), self.footer)


def run_agent(agent: Any, prompt: str, **kwargs: Any) -> AgentRun:
    """Run ``agent`` on ``prompt`` (blocking, on the bridge) -> ``AgentRun``."""
    from ..pydantic_ai import agent_cards, agent_footer

    result = _bridge.run(agent.run(prompt, **kwargs))
    return AgentRun(result, agent_cards(result.all_messages()), agent_footer(result))


def check_agent(name: str, namespace: Mapping[str, Any]) -> Any:
    """``--agent NAME``: a pydantic-ai ``Agent`` from the notebook, or a ``UsageError``."""
    agent = namespace.get(name)
    if agent is None:
        raise UsageError(f"%%flotorch --agent {name}: no such name in the notebook; define the agent first")
    if not callable(getattr(agent, "run", None)) or not hasattr(agent, "model"):
        raise UsageError(f"%%flotorch --agent {name} is a {type(agent).__name__}, not a pydantic-ai Agent")
    return agent
