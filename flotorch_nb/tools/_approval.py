"""Who decides whether a tool call runs: the pure policy of ``approve=``, and asking on a terminal.

``approve=`` is one of:

- ``None`` / ``False``: nobody is asked, except for a tool made with ``requires_approval=True``, which
  is then denied (nobody can approve it);
- ``True``: a person is asked before every call;
- a set (or frozenset, list, tuple) of tool names: a person is asked before the calls of those tools
  (and of tools that require approval); the others run;
- a function of the ``ToolCall`` (sync or async) returning True (run it), False (deny it) or a string:
  the reason for the denial, sent back to the model as the call's result.

``decision`` is that rule as a pure function; the loop asks the person through an *asker*, an async
function of the ``ToolCall`` returning the same True / False / reason. Askers are the surface's: a
widget with Approve / Deny in a notebook (``flotorch_nb.notebook.approval``), or ``ask_stdin`` here
for a terminal (and for a blocking ``llm.run`` in a notebook, where the kernel shows the prompt as an
input box: a blocking cell cannot receive a widget's click). A denied call never runs.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Literal

from .._errors import InvalidRequestError
from .._response import ToolCall
from .._text import one_line, terminal_safe

__all__ = [
    "ASK",
    "Asker",
    "Verdict",
    "ask_stdin",
    "check_approve",
    "decision",
    "default_asker",
    "describe_call",
    "needs_person",
    "verdict_of",
]

#: What decides a call: True runs it, False or a reason (sent to the model) denies it.
Verdict = bool | str
#: A person's answer, asked by a surface (a notebook widget, a terminal prompt).
Asker = Callable[[ToolCall], Awaitable[Verdict]]
#: ``decision`` says a person must be asked.
ASK: Literal["ask"] = "ask"
DENIED_BY_USER = "the user denied this call"


def check_approve(approve: object) -> None:
    """``approve=`` is one of the accepted shapes (see the module docstring); else ``InvalidRequestError``."""
    if approve is None or isinstance(approve, bool) or callable(approve):
        return
    if isinstance(approve, str | bytes) or not isinstance(approve, Collection):
        raise InvalidRequestError(
            f"approve={approve!r}: pass True (ask before every call), a set of tool names, or a "
            "function of the ToolCall returning True, False or a reason"
        )
    strange = [name for name in approve if not isinstance(name, str)]
    if strange:
        raise InvalidRequestError(f"approve= names tools by their names (strings), got {strange[0]!r}")


def needs_person(approve: object) -> bool:
    """Whether this ``approve=`` may have to ask a person (True or a set of names)."""
    return approve is True or (
        not callable(approve) and isinstance(approve, Collection) and not isinstance(approve, str)
    )


def decision(approve: object, name: str, requires_approval: bool) -> str | None:
    """The policy for one call of tool ``name``: None (run it without asking), ``ASK`` (ask a person),
    ``"call"`` (ask the ``approve`` function), or the reason of a denial already known (a tool that
    requires approval with nobody to give it)."""
    if callable(approve) and not isinstance(approve, bool):
        return "call"
    person = needs_person(approve)
    if approve is True or (person and (requires_approval or name in approve)):  # type: ignore[operator]
        return ASK
    if requires_approval:
        return f"{name} requires approval and no approve= was given"
    return None


def verdict_of(answer: object) -> Verdict:
    """An approver's answer as a verdict: True runs; a non-empty string is a denial's reason; anything
    else falsy or False denies without one (``DENIED_BY_USER``)."""
    if answer is True:
        return True
    if isinstance(answer, str):
        return answer.strip() or False
    return bool(answer) if not isinstance(answer, bool) else False


async def call_approver(approve: Callable[[ToolCall], Any], call: ToolCall) -> Verdict:
    """Ask an ``approve=`` function (awaiting it if it is async)."""
    answer = approve(call)
    if inspect.isawaitable(answer):
        answer = await answer
    return verdict_of(answer)


def describe_call(call: ToolCall, limit: int = 300) -> str:
    """``name(arguments)`` on one line, the arguments cut at ``limit`` characters: what a prompt shows.

    The model wrote both: their control characters are shown as symbols (``_text.terminal_safe``), so
    that an escape sequence cannot hide or rewrite, on the terminal, the call a person approves."""
    return terminal_safe(f"{call.name} {one_line(call.arguments or '{}', limit)}")


def read_answer(text: str) -> Verdict:
    """A typed answer: y/yes approve; n/no/empty deny; anything else denies with that reason."""
    answer = text.strip()
    if answer.lower() in ("y", "yes"):
        return True
    if answer.lower() in ("", "n", "no"):
        return False
    return answer


_prompt_lock = threading.Lock()


def ask_stdin_now(call: ToolCall, read: Callable[[str], str] = input) -> Verdict:
    """Ask on standard input, blocking: ``Run get_weather {"city": "Paris"}? [y/n or a reason to deny]``.
    No input to read (EOF, a frontend without stdin) denies, saying so."""
    with _prompt_lock:  # calls of one turn run concurrently; their prompts come one at a time
        try:
            text = read(f"Run {describe_call(call)}? [y/n, or a reason to deny] ")
        except (EOFError, OSError, RuntimeError) as exc:
            return f"nobody could be asked ({type(exc).__name__}: no input available)"
        except Exception as exc:  # ipykernel's StdinNotImplementedError (nbclient, no stdin)
            return f"nobody could be asked ({type(exc).__name__})"
    return read_answer(text)


async def ask_stdin(call: ToolCall) -> Verdict:
    """``ask_stdin_now`` in a worker thread, so the event loop stays free while the person types."""
    read = input  # looked up now: a test (or a frontend) may have replaced builtins.input
    return await asyncio.to_thread(ask_stdin_now, call, read)


#: Makes the asker of a run awaited in a Jupyter kernel; set by the notebook layer when it loads
#: (``%load_ext flotorch_nb``: the Approve / Deny widget), so this core never imports it.
_kernel_asker: list[Callable[[], Asker]] = []


def use_in_kernel(factory: Callable[[], Asker]) -> None:
    """Ask with ``factory()``'s asker when a run is awaited on a Jupyter kernel's loop."""
    _kernel_asker[:] = [factory]


def default_asker() -> Asker:
    """Who asks a person when no asker was given: in a Jupyter kernel, awaited on the kernel's own
    loop (``await llm.arun(...)``), the notebook layer's widget (once the extension is loaded);
    otherwise (a terminal, or a blocking ``llm.run`` whose cell cannot receive a click) a prompt on
    standard input."""
    if _kernel_asker and _awaited_in_kernel():
        return _kernel_asker[0]()
    return ask_stdin


def _awaited_in_kernel() -> bool:
    if "ipykernel" not in sys.modules or threading.current_thread() is not threading.main_thread():
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None
