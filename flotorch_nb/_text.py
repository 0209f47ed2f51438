"""Rules about text that crosses one of our boundaries, each stated once.

- ``non_empty``: a model id, a key, a name a person typed must be a non-empty string. The client
  (``FlotorchLLM.with_model``), the notebook session and the chat panel all ask the same question, so
  they share the answer and its wording. The message never repeats the value: it may be a key.
- ``utf8_safe``: text that came in (a prompt built from ``os.listdir()`` of a badly encoded file name,
  a model answer decoded from a ``\\udcff`` JSON escape) can hold *lone surrogates*: valid in a Python
  ``str``, impossible in UTF-8. Every display, notebook file and Markdown export is UTF-8, so one such
  character makes them fail with ``UnicodeEncodeError`` long after the text arrived. Replacing them
  with U+FFFD, as every UTF-8 decoder does with bytes it cannot read, keeps the text showable.
- ``one_line``: text shown in a table cell, an error or a preview row is one line of at most so many
  characters, its whitespace runs collapsed, its control characters shown (``terminal_safe``) and
  its end marked with "…" when it was cut.
- ``terminal_safe``: text we print to a terminal (an answer as it streams, a tool's result, an error,
  an approval prompt) came from a model, a tool or a gateway; its control characters would be obeyed
  (``ESC[2J`` clears the screen, ``ESC]0;...BEL`` sets the title, ``ESC[8m`` hides what follows,
  ``\r`` and ``\b`` write over it), so they are shown as symbols instead, as ``cat -v`` would.

Pure and cheap to import (``import flotorch_nb`` must stay light).
"""

from __future__ import annotations

import re

from ._errors import ConfigurationError, FlotorchError

__all__ = ["non_empty", "one_line", "terminal_safe", "utf8_safe"]

_SURROGATE = re.compile("[\ud800-\udfff]")
#: What a terminal acts on: C0 but newline and tab, DEL, and C1 (U+009B alone is a CSI to some).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def non_empty(value: object, what: str, error: type[FlotorchError] = ConfigurationError) -> str:
    """``value`` stripped, if it is a string with something in it; else ``error`` naming ``what``."""
    if not isinstance(value, str) or not value.strip():
        raise error(f"{what} must be a non-empty string")
    return value.strip()


def one_line(text: str, limit: int) -> str:
    """``text`` with its whitespace runs as single spaces, cut to ``limit`` characters ("…" last).

    An excerpt is for showing (an error message, a table cell, a preview row), so its control
    characters are shown too (``terminal_safe``): an answer's escape sequence cannot drive the
    terminal that prints the excerpt."""
    flat = terminal_safe(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def utf8_safe(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (a surrogate *pair* becomes its character).

    Returns ``text`` itself when there is nothing to replace (the usual case: one regex scan).
    """
    if _SURROGATE.search(text) is None:
        return text
    # UTF-16 with surrogatepass joins pairs and keeps lone halves; decoding with "replace" turns only
    # the halves that cannot form a character into U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def terminal_safe(text: str) -> str:
    """``text`` as ``utf8_safe`` makes it, its control characters but newline and tab made visible.

    C0 characters and DEL become their Unicode control pictures (ESC is ``␛``, BEL ``␇``, a lone CR
    ``␍``), C1 characters, which have none, their ``\\x9b`` escape; a CR before a newline is dropped
    (Windows line ends are line ends). Returns ``text`` itself when there is nothing to show.
    """
    text = utf8_safe(text)
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_visible, text.replace("\r\n", "\n"))


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else f"\\x{code:02x}"
