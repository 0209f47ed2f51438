"""One ``%%flotorch`` answer in its cell: how it arrives, the value the cell ends with, how it fails.

- Streaming, in a rich frontend (JupyterLab, classic, VS Code): one preview display of the answer so
  far, redrawn as ``pacing.Pacer`` allows, so a long answer costs close to linear time in its length;
  it is cleared (``wait=True``) when the cell's value arrives. In terminal IPython, which can only
  print text, the pieces are printed as they come (``write_terminal``), with no preview, status line
  or control codes: the answer's own control characters are shown as symbols (``_text.terminal_safe``).
- The cell's value (``cell_value``): a ``FormattedResponse``, the ``LLMResponse`` shown in the cell's
  ``-f`` format with the turn's footer (cost included while prices are in use) and the answer's
  provenance in the output metadata; it is the cell's one final output.
- Failure (``one_line_traceback``): the typed error still fails the cell (nbclient and nbmake see
  it), shown by IPython as one line instead of frames of library code.

``magics.py`` keeps the option handling and the control flow.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.displaypub import CapturingDisplayPublisher, DisplayPublisher
from IPython.display import clear_output, display

from .._text import terminal_safe
from . import views
from .chat import error_line
from .conversation import Turn
from .pacing import Pacer

__all__ = ["ask", "cell_value", "is_terminal", "one_line_traceback", "write_terminal"]

#: The shortest pause between redraws of the streaming preview: smooth to read, cheap for the frontend.
PREVIEW_INTERVAL_S = 0.05


def is_terminal(shell: Any) -> bool:
    """True where output can only be text: terminal IPython (also while ``capture_output`` or
    ``%%capture`` swaps its publisher), or any shell with IPython's stock publishers. Their
    ``clear_output`` writes ``ESC[2K\\r`` to stdout, which a captured, piped or logged output keeps
    as garbage, so only a rich frontend (ipykernel's publisher, or a test's) gets previews cleared."""
    if type(shell.display_pub) in (DisplayPublisher, CapturingDisplayPublisher):
        return True
    return any(cls.__name__ == "TerminalInteractiveShell" for cls in type(shell).__mro__)


def _plain_text(shell: Any) -> bool:
    """Whether escape codes would end up as text: a terminal whose stdout is not a TTY."""
    isatty = getattr(sys.stdout, "isatty", None)
    return is_terminal(shell) and not (callable(isatty) and isatty())


def write_terminal(text: str) -> None:
    """Print ``text`` (a model's, a tool's) to a terminal now, unable to drive it: its control
    characters but newline and tab shown as symbols (``_text.terminal_safe``)."""
    sys.stdout.write(terminal_safe(text))
    sys.stdout.flush()


def ask(
    shell: Any,
    client: Any,
    turn: Turn,
    messages: list[dict[str, Any]],
    response_format: Any,
    params: dict[str, Any],
    fmt: str,
    *,
    stream: bool,
) -> Any:
    """The answer to ``messages``: streamed into the cell (``turn`` grows with it), or in one piece."""
    if not stream:
        return client.invoke(messages, response_format=response_format, **params)
    chat = client.stream(messages, response_format=response_format, **params)
    if is_terminal(shell):
        return _stream_text(chat, turn)
    return _stream_preview(chat, turn, fmt)


def _stream_text(chat: Any, turn: Turn) -> Any:
    """A terminal: print each piece as it arrives, nothing else."""
    try:
        with chat:
            for delta in chat:
                turn.append(delta)
                write_terminal(delta)
            return chat.response
    finally:
        sys.stdout.write("\n")
        sys.stdout.flush()


def _stream_preview(chat: Any, turn: Turn, fmt: str) -> Any:
    """A rich frontend: the answer so far in one display, redrawn as the ``Pacer`` allows."""
    handle = display(views.preview_bundle("", fmt), raw=True, display_id=True)  # type: ignore[no-untyped-call]
    pacer = Pacer(PREVIEW_INTERVAL_S)
    try:
        with chat:
            for delta in chat:
                turn.append(delta)
                if pacer.due():
                    with pacer.redraw():
                        handle.update(views.preview_bundle(turn.reply, fmt), raw=True)
            return chat.response
    except BaseException:
        if not turn.reply:  # refused or failed before any text: the error alone says it all
            clear_output()  # type: ignore[no-untyped-call]
            raise
        # Keep what arrived visible above the error (a cut stream, an interrupt).
        stopped = views.preview_bundle(turn.reply, fmt, status="stopped: see the error below")
        handle.update(stopped, raw=True)
        raise


def cell_value(
    shell: Any, resp: Any, fmt: str, *, streamed: bool, footer: Any = None, metadata: Any = None
) -> views.FormattedResponse:
    """Clear the preview and return the cell's value: the LLMResponse as a ``FormattedResponse``,
    which IPython then shows as the cell's one final rendering (its execute_result), in the cell's
    format, with ``footer`` (the turn's) and ``metadata`` (the answer's provenance)."""
    if streamed and not is_terminal(shell):
        # wait=True: the preview disappears only when the final output arrives, so no flicker.
        clear_output(wait=True)  # type: ignore[no-untyped-call]
    if fmt in ("markdown", "text"):
        bundle = views.answer_bundle(resp, fmt, footer=footer)
    elif fmt == "code":
        code = views.extract_code(resp.content) or ""
        if code:
            shell.set_next_input(code, replace=False)  # a new cell below, not a replacement
        bundle = views.answer_bundle(resp, "code", code=code, footer=footer)
    else:
        try:
            if resp.parsed is not None:  # --schema: the client validated it
                value = views.standard_json(resp.parsed.model_dump(mode="json"))
            else:
                value = resp.parsed = views.parse_json_answer(resp.content)
        except Exception:
            shown = views.answer_bundle(resp, "text", footer=footer)  # show what came back
            display(shown, raw=True, metadata=metadata)  # type: ignore[no-untyped-call]
            raise
        bundle = views.json_bundle(value, resp, footer)
    return views.FormattedResponse.of(resp, bundle, metadata)


def one_line_traceback(exc: BaseException, shell: Any) -> None:
    """Have IPython show ``exc`` as one line (``ServerError: HTTP 503 ...``) instead of frames of
    library code the user cannot act on. The cell still fails; ``%xmode Verbose`` shows the full
    traceback again."""

    def render() -> list[str]:
        tb = shell.InteractiveTB
        if getattr(tb, "mode", None) == "Verbose":
            return list(tb.structured_traceback(type(exc), exc, exc.__traceback__))
        name, _, message = error_line(exc).partition(": ")
        message = terminal_safe(message)  # the gateway's words: only our own colour code is obeyed
        if _plain_text(shell):
            return [f"{name}: {message}"]
        return [f"\x1b[0;31m{name}\x1b[0m: {message}"]

    exc._render_traceback_ = render  # type: ignore[attr-defined]
