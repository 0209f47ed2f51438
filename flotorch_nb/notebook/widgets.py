"""``ChatPanel``: a chat with a FloTorch model inside a notebook, built from stock ipywidgets.

The panel is a plain class composing widgets (as the ipywidgets "Variable Inspector" example does), not
a DOMWidget subclass, so it needs no frontend extension beyond ipywidgets itself. Requests run as
asyncio tasks on the kernel's running loop (the "Widget Asynchronous" example): the notebook stays
usable while a reply streams in, and Stop simply cancels the task, which closes the HTTP stream.

What it looks like (the widgets, their CSS hooks, sanitized drawing) is ``panel_view.PanelView``;
this module is what it does. Errors raised in widget callbacks are otherwise invisible, so every
callback is guarded and shows its error inside the panel (``.flotorch-chat-error``).

Usage and budget: the panel's client carries the session ledger's hooks (a client you pass gets them
too), so every reply is checked against ``%flotorch budget`` before it is sent and counted in
``%flotorch usage``, a stopped or failed one with what it cost.

Static transcript: widget views need live widget state, which JupyterLab does not save by default; a
saved or exported notebook would show "Error displaying widget" instead of the conversation. So when
displayed, the panel also displays a collapsed ``<details>`` copy of the transcript (sanitized HTML plus
``text/plain``, each answer's provenance in the output's metadata) under a display id, and updates it
after every turn: the notebook file always holds the conversation as plain outputs any viewer shows.

Docking (``panel.dock()``, ``ChatPanel(dock=True)``) shows the same live panel in JupyterLab's side
area through jupyterlab-sidecar (``dock.dock``), so it stays in view while the notebook scrolls; the
cell then shows only a line saying so and the static copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import InvalidRequestError
from .._text import non_empty, utf8_safe
from . import chat
from .chat import ChatBusyError, EnterToSend, error_line
from .conversation import Conversation, Turn
from .pacing import Throttle
from .panel_view import PanelView, TurnView, status_html
from .session import get_session

if TYPE_CHECKING:
    from IPython.display import DisplayHandle

    from ..llm import FlotorchLLM

__all__ = ["ChatBusyError", "ChatPanel"]

RENDER_INTERVAL_S = 0.05
#: What a cell shows in place of a docked panel (the static transcript copy still follows it).
DOCKED_NOTE = {
    "text/plain": "FloTorch chat: docked in JupyterLab's side area",
    "text/html": '<div class="flotorch-chat-docked" style="font-size:0.9em;color:#4b5563">'
    "FloTorch chat: docked in JupyterLab's side area →</div>",
}
ENTER_GRACE_S = 0.3  # see chat.EnterToSend


class ChatPanel(PanelView):
    r"""An interactive chat: transcript, input, Send/Stop/Clear/Export, model picker and system prompt.

    ``ChatPanel()`` uses the notebook session's client (``FLOTORCH_*`` settings); pass ``llm`` to use
    your own. ``model`` is the first choice of the model picker (default: the client's model) and
    ``models`` adds more; ``stream=False`` waits for whole answers; ``params`` are sent with every
    request (``temperature``, ``max_tokens``, ``extra_body``...). Display it as the last expression of
    a cell.

    ``tools`` (functions, ``@tool``\ s, MCP toolsets) lets the model call them in every turn, each call
    shown as a tool card in the transcript (``max_steps`` model turns at most); ``approve`` (True, a
    set of tool names, or a function: see ``llm.run``) asks with Approve / Deny buttons in the turn.
    ``agent``, a pydantic-ai ``Agent``, answers instead of the model, its tool calls shown the same way.
    The totals count every step of a turn.
    """

    def __init__(
        self,
        llm: FlotorchLLM | None = None,
        *,
        model: str | None = None,
        models: Sequence[str] | None = None,
        system_prompt: str | None = None,
        stream: bool = True,
        params: Mapping[str, Any] | None = None,
        dock: bool = False,
        tools: Sequence[Any] | None = None,
        approve: Any = None,
        max_steps: int = 10,
        agent: Any = None,
    ) -> None:
        if llm is not None and not (hasattr(llm, "astream") and hasattr(llm, "ainvoke")):
            raise TypeError(f"llm must be a FlotorchLLM, not {type(llm).__name__}")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise InvalidRequestError(f"system_prompt must be a string, not {type(system_prompt).__name__}")
        if not isinstance(stream, bool):
            raise InvalidRequestError(f"stream must be True or False, not {stream!r}")
        if isinstance(models, str):
            raise InvalidRequestError("models must be a list of model ids, not one string")
        if params is not None and (not isinstance(params, Mapping) or {"model", "messages"} & set(params)):
            raise InvalidRequestError("params must be a mapping of request options other than model/messages")
        self._tools, self._approve, self._max_steps, self._agent = _check_tools(
            tools, approve, max_steps, agent
        )
        #: Whether turns show tool cards (and approval prompts): with tools or an agent.
        self.runs_tools = tools is not None or agent is not None
        self._agent_history: list[Any] = []
        self._llm = get_session().watch(llm) if llm is not None else None
        self._stream = stream
        self.params: dict[str, Any] = dict(params or {})
        default = non_empty(model, "model") if model is not None else self.client.model_id
        self.conversation = Conversation()
        self._task: asyncio.Task[Turn] | None = None
        self._stopping = False  # stop() asked the running task to end; a send() now waits for it
        self._handles: list[DisplayHandle] = []
        self._enter = EnterToSend(self._send_from_ui, ENTER_GRACE_S)
        self._build(default, system_prompt or "")
        self._show_totals()
        self._wire()
        self.models = [default, *(models or ())]  # validated by the setter
        self._sidecar: Any = None
        if dock:
            self.dock()

    def _wire(self) -> None:
        self.input.on_msg(self._guard(self._on_input_msg))
        self.input.observe(self._guard(lambda change: self._enter.value_changed(str(change["new"]))), "value")
        actions = [self._send_from_ui, self._stop_from_ui, self.clear, self._export_from_ui]
        for button, action in zip(self.buttons, actions, strict=True):
            button.on_click(self._guard(lambda _button, action=action: action()))

    def _guard(self, callback: Callable[..., Any]) -> Callable[..., None]:
        """Wrap a widget callback so its exception shows in the panel (it would otherwise vanish)."""

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                self._show_error(error_line(exc))

        return guarded

    def _ipython_display_(self) -> None:
        """Show the live panel (or, docked, a line saying where it is), then the static transcript
        copy that outlives widget state, with the answers' provenance in its metadata."""
        from IPython.display import display

        self._show_totals()
        if self.docked:
            display(DOCKED_NOTE, raw=True)
        else:
            display(self.root)
        handle = display(
            self.conversation.transcript_bundle(),
            raw=True,
            metadata=self.conversation.transcript_metadata(),
            display_id=True,
        )
        if handle is not None:
            self._handles.append(handle)

    # -- docking ---------------------------------------------------------------------------------
    @property
    def docked(self) -> bool:
        """Whether the panel is open in JupyterLab's side area."""
        return self._sidecar is not None

    def dock(self, title: str = "FloTorch chat", *, anchor: str = "right") -> None:
        """Open the panel in JupyterLab's side area (jupyterlab-sidecar), where it stays in view while
        the notebook scrolls; it keeps working as in a cell. Docking again moves it (``anchor``: see
        ``dock.ANCHORS``). Needs JupyterLab; elsewhere the side panel is simply not shown."""
        from .dock import dock

        sidecar = dock(self.root, title, anchor=anchor)  # checks the anchor before anything moves
        self.undock()
        self._sidecar = sidecar

    def undock(self) -> None:
        """Close the side panel (the panel itself lives on: display it again in a cell)."""
        if self._sidecar is not None:
            from .dock import undock

            sidecar, self._sidecar = self._sidecar, None
            undock(sidecar)

    def __repr__(self) -> str:
        return f"ChatPanel(model={self.model!r}, turns={len(self.conversation.turns)}, stream={self._stream})"

    # -- public API ------------------------------------------------------------------------------
    @property
    def client(self) -> FlotorchLLM:
        """The client requests go through (the session's unless one was given)."""
        return self._llm if self._llm is not None else get_session().client()

    @property
    def model(self) -> str:
        """The model the next question goes to (the picker's value)."""
        return str(self.model_picker.value)

    @model.setter
    def model(self, value: str) -> None:
        value = non_empty(value, "model")
        if value not in self.model_picker.options:
            self.models = [*self.model_picker.options, value]
        self.model_picker.value = value

    @property
    def models(self) -> list[str]:
        """The model picker's choices; assign a list to change them."""
        return list(self.model_picker.options)

    @models.setter
    def models(self, values: Sequence[str]) -> None:
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise InvalidRequestError(f"models must be a list of model ids, not {values!r}")
        choices = list(dict.fromkeys(non_empty(m, "each of models") for m in values))
        if not choices:
            raise InvalidRequestError("models must name at least one model")
        current = self.model
        self.model_picker.options = choices
        self.model_picker.value = current if current in choices else choices[0]

    @property
    def task(self) -> asyncio.Task[Turn] | None:
        """The running (or last) request task."""
        return self._task

    @property
    def busy(self) -> bool:
        """True while a reply is running."""
        return self._task is not None and not self._task.done()

    def send(self, text: str | None = None) -> asyncio.Task[Turn]:
        """Ask ``text`` (default: the input box) and return the task that runs the request.

        Needs a running event loop (a notebook cell, a widget callback, or ``async`` code). Refusals
        (empty text, a reply still running) are shown in the panel and raised; right after ``stop()``
        the new turn starts once the stopped one has ended. A spent budget fails the turn itself
        (the client's hook refuses it before anything is sent).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "ChatPanel.send() needs a running asyncio event loop: use the panel inside Jupyter "
                "(or call it from async code and await panel.wait())"
            ) from None
        try:
            from_input = text is None
            text = self.input.value if text is None else text
            if not isinstance(text, str):
                raise InvalidRequestError(f"the message must be a string, not {type(text).__name__}")
            if not text.strip():
                raise InvalidRequestError("nothing to send: the message is empty")
            stopping = self._task if self.busy and self._stopping else None
            if self.busy and stopping is None:
                raise ChatBusyError("a reply is still running: wait for it or press Stop")
            client = self.client
        except Exception as exc:
            self._show_error(error_line(exc), busy=isinstance(exc, ChatBusyError))
            raise
        self._show_error(None)
        text = utf8_safe(text)  # what came in must stay showable and exportable (UTF-8)
        self.conversation.system = utf8_safe(self.system.value) or None
        messages = self.conversation.messages(text, self.conversation.system)
        turn = self.conversation.start(text, self.model)
        view = self._add_view(turn)
        if from_input:
            self.input.value = ""
        self._stopping = False
        self._task = loop.create_task(self._run(client, turn, view, messages, stopping))
        self._task.add_done_callback(functools.partial(self._task_done, view))
        self._sync_buttons()
        self._show_totals()
        return self._task

    def stop(self) -> bool:
        """Cancel the running reply (the partial text is kept, marked stopped); False if none runs."""
        if not self.busy:
            return False
        assert self._task is not None
        self._task.cancel()
        self._stopping = True
        self._set_status("Stopping…")
        return True

    async def wait(self, timeout: float | None = 120.0) -> Turn | None:
        """Wait for the current or last reply; its ``Turn`` (None if nothing ran or it was cancelled)."""
        task = self._task
        if task is None:
            return None
        # asyncio.wait never raises the task's own cancellation into the caller.
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            raise TimeoutError(f"the reply did not finish within {timeout} s (panel.stop() cancels it)")
        return None if task.cancelled() else task.result()

    def clear(self) -> None:
        """Stop any running reply and forget the conversation (the token totals stay)."""
        self.stop()
        self.conversation.clear()
        self.transcript.children = ()
        self._show_error(None)
        self._set_status("Cleared")
        self._show_totals()
        self._refresh_static()

    def export_markdown(self, path: str | Path | None = None) -> str:
        """The conversation as Markdown; also written to ``path`` (UTF-8) if one is given."""
        text = self.conversation.to_markdown(system_prompt=self.system.value or None)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    # -- the request task ------------------------------------------------------------------------
    async def _run(
        self,
        client: FlotorchLLM,
        turn: Turn,
        view: TurnView,
        messages: list[dict[str, Any]],
        stopping: asyncio.Task[Turn] | None,
    ) -> Turn:
        if stopping is not None:  # sent right after stop(): let the stopped turn end first
            self._set_status("Waiting for the stopped reply to end…")
            await asyncio.wait({stopping})
        self._set_status(f"{turn.model} is answering…")
        render = Throttle(view.render, RENDER_INTERVAL_S)
        status = "Stopped — the partial reply is kept and not sent as history"
        try:
            if self.runs_tools:
                status = await self._run_tools(client, view, messages)
            else:
                response = await chat.run_turn(
                    client, turn, messages, stream=self._stream, params=self.params, on_delta=render
                )
                status = f"Answered in {response.latency_s:.2f} s"
        except Exception:
            self._show_error(turn.error)
            status = "Failed — this turn is not sent as history"
        finally:  # also for CancelledError (Stop), which goes on to cancel the task
            render.cancel()
            self.conversation.count(turn)
            self._settle(view, status)
        return turn

    async def _run_tools(self, client: FlotorchLLM, view: TurnView, messages: list[dict[str, Any]]) -> str:
        """A turn with tools or an agent (``tool_turn``); the status line it ends with."""
        from . import tool_turn

        if self._agent is not None:
            result = await tool_turn.run_agent_turn(self._agent, view, self._agent_history)
            self._agent_history = list(result.all_messages())
            return f"Answered ({len(view.turn.cards)} tool calls)"
        run = await tool_turn.run_tool_turn(
            client,
            view,
            messages,
            tools=self._tools,
            approve=self._approve,
            max_steps=self._max_steps,
            stream=self._stream,
            params=self.params,
        )
        return f"Answered in {len(run.steps)} steps ({len(run.calls)} tool calls)"

    def _task_done(self, view: TurnView, task: asyncio.Task[Turn]) -> None:
        """Settle the panel after a task, also one cancelled before it ever ran (Stop right after send)."""
        if view.turn.status == "running":
            view.turn.end("stopped")
            self._settle(view, "Stopped before the request was sent")
        self._sync_buttons()

    def _settle(self, view: TurnView, status: str | None = None) -> None:
        """Show a turn's end (unless Clear took it away meanwhile) and bring the rest up to date."""
        if view.turn in self.conversation.turns:
            if status is not None:
                self._set_status(status)
            view.render()
        if self._busy_shown:  # "still running" is no longer true
            self._show_error(None)
        self._sync_buttons()
        self._show_totals()
        self._refresh_static()

    # -- UI callbacks (wrapped by _guard) -----------------------------------------------------------
    def _on_input_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """Enter in the box: the Text view sends ``{"event": "submit"}`` (see ``EnterToSend``)."""
        if isinstance(content, dict) and content.get("event") == "submit":
            self._enter.submitted()

    def _send_from_ui(self) -> None:
        if not self.input.value.strip():
            return  # Enter in an empty box: nothing to say
        with contextlib.suppress(Exception):  # send() has shown it in the panel already
            self.send()

    def _stop_from_ui(self) -> None:
        if not self.stop():
            self._set_status("Nothing to stop")

    def _export_from_ui(self) -> None:
        path = chat.export_path(Path.cwd())
        self.export_markdown(path)
        self._set_status(f"Exported to {path}")

    # -- small helpers ---------------------------------------------------------------------------
    def _show_totals(self) -> None:
        # The session's part also moves without us (%%flotorch, other panels): redrawn at every chance.
        self.totals.value = status_html(chat.totals_line(self.conversation.totals, get_session()))

    def _sync_buttons(self) -> None:
        # A task settling itself is not "running" any more, though it has not returned yet.
        task = self._task
        self._show_buttons(task is not None and not task.done() and task is not _current_task())

    def _refresh_static(self) -> None:
        if not self._handles:
            return
        bundle = self.conversation.transcript_bundle()
        metadata = self.conversation.transcript_metadata()
        for handle in self._handles:
            handle.update(bundle, raw=True, metadata=metadata)


def _check_tools(tools: Any, approve: Any, max_steps: Any, agent: Any) -> tuple[Any, Any, int, Any]:
    """The panel's tool options, checked before any widget exists (the loop's own rules)."""
    if tools is not None and agent is not None:
        raise InvalidRequestError("ChatPanel: give tools= or agent=, not both (an agent has its own tools)")
    if agent is not None and not callable(getattr(agent, "run", None)):
        raise InvalidRequestError(f"agent must be a pydantic-ai Agent, not {type(agent).__name__}")
    if tools is not None:
        from ..tools import check

        check(tools, max_steps, approve, True)
        return list(tools), approve, max_steps, None
    if approve is not None:
        raise InvalidRequestError("ChatPanel: approve= goes with tools=[...]")
    return None, None, 10, agent


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None
