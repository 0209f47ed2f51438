"""What ``%%flotorch`` shows: MIME bundles for previews and answers, the JSON rule, and
``FormattedResponse``, the value a ``-f text/code/json`` cell ends with.

Kept apart from ``magics.py`` so the shapes can be tested without a shell and the magic stays
about control flow. Everything that becomes HTML goes through ``_render`` (model Markdown rendered
and sanitized, everything else escaped): in JupyterLab an HTML output's event handlers execute,
and a saved notebook is trusted again when reopened. Plain text is inert and always included, so
an answer survives any viewer, ``nbconvert --to markdown`` and CI logs; it passes
``_text.terminal_safe``, because terminal IPython prints it as ``Out[n]``: an answer's control
characters are shown as symbols there, never obeyed (the answer itself keeps them).

JSON (``-f json``, ``--schema``) is shown as ``application/json`` only if it is standard JSON
(RFC 8259): Python's ``json`` reads ``NaN`` and ``Infinity``, which no JSON file may hold, so the
saved output would disagree with ``resp.parsed`` (the kernel writes them as strings or refuses). Such
an answer is refused with a ``ResponseError`` that says so, rather than shown as something it is not.
(Conversation transcripts live in ``conversation``.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, NoReturn

from .. import _render
from .._errors import ResponseError
from .._response import LLMResponse
from .._text import terminal_safe, utf8_safe

__all__ = [
    "FormattedResponse",
    "answer_bundle",
    "extract_code",
    "json_bundle",
    "parse_json_answer",
    "preview_bundle",
    "standard_json",
]

# Plain text keeps its line breaks and spacing without being parsed; a div (our own markup, styled
# inline) rather than <pre>, which is reserved for the sanitized Markdown's code blocks.
_PRE = '<div class="flotorch-text" style="white-space:pre-wrap;font-family:monospace">'


class FormattedResponse(LLMResponse):
    """An ``LLMResponse`` that displays itself the way ``%%flotorch -f FORMAT`` showed it.

    Every ``%%flotorch`` cell ends with one of these as its value (``Out[n]``, ``_``, ``-o VAR``), so
    the cell's ``execute_result`` *is* its one final rendering: a plain bundle that survives save,
    reopen and export, whose footer has the cost while prices are in use, and whose output metadata
    holds the answer's provenance (so the saved ``.ipynb`` says where the answer came from). Apart
    from that bundle it is the response the gateway gave: every field (``metadata``, ``usage``,
    ``parsed``...) is the original's, ``str()`` is the content (what ``{Out[n]}`` quotes), and a
    ``dataclasses.replace`` copy, whose bundle would describe another answer, displays as a plain
    ``LLMResponse`` again.
    """

    __slots__ = ("_bundle", "_metadata")
    _bundle: dict[str, Any]
    _metadata: dict[str, Any]

    @classmethod
    def of(
        cls, resp: LLMResponse, bundle: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> FormattedResponse:
        """A copy of ``resp`` (fields shared, as ``copy.copy`` would) that displays as ``bundle``,
        with ``metadata`` as its output's metadata."""
        new = object.__new__(cls)
        for f in fields(LLMResponse):  # every field, also any that ``__init__`` would not take
            object.__setattr__(new, f.name, getattr(resp, f.name))
        new._bundle = dict(bundle)
        new._metadata = dict(metadata or {})
        return new

    @property
    def bundle(self) -> dict[str, Any]:
        """What this answer displays (sanitized HTML, plain text, JSON if any)."""
        bundle = getattr(self, "_bundle", None)
        return self.mimebundle() if bundle is None else dict(bundle)

    # IPython takes (data, metadata) from _repr_mimebundle_ as readily as data alone; the metadata
    # is how the provenance reaches the saved notebook, so the return type widens on purpose.
    def _repr_mimebundle_(  # type: ignore[override]
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The bundle the magic built for this answer, and its provenance as the output's metadata."""
        if getattr(self, "_bundle", None) is None:  # a dataclasses.replace copy: another answer
            return self.mimebundle(), {}
        return dict(self._bundle), dict(self._metadata)


def preview_bundle(text: str, fmt: str, *, status: str = "streaming…") -> dict[str, str]:
    """The streaming preview: what has arrived so far, and a status line (``streaming…``)."""
    if fmt == "markdown":
        body = _render.render_markdown(text) if text else ""
    else:
        body = f"{_PRE}{_render.escape_text(text)}</div>"
    line = (
        '<div class="flotorch-footer" style="font-size:0.85em;color:#6b7280">'
        f"{_render.escape_text(status)}</div>"
    )
    return {
        "text/plain": terminal_safe(f"{text}\n[{status}]"),
        "text/html": f'<div class="flotorch-streaming">{body}{line}</div>',
    }


def answer_bundle(
    resp: LLMResponse, fmt: str, *, code: str | None = None, footer: _render.Footer | None = None
) -> dict[str, str]:
    """The final answer for ``markdown`` (rendered, sanitized), ``text`` (preformatted, never parsed)
    or ``code`` (one fenced block), with ``footer`` (default: the response's own)."""
    footer = footer if footer is not None else resp.footer()
    if fmt == "markdown":
        return resp.mimebundle(footer)
    footer_html, footer_text = _render.footer_html(footer), _render.footer_text(footer)
    if fmt == "code":
        assert code is not None
        # A fence longer than any run of tildes in the code, so the code can never close it.
        fence = "~" * max(3, 1 + max((len(run) for run in re.findall("~+", code)), default=0))
        html = _render.answer_html(f"{fence}{code_language(resp.content)}\n{code}\n{fence}", footer_html)
        return {"text/plain": terminal_safe(f"{code}\n\n{footer_text}"), "text/html": html}
    html = f'<div class="flotorch-answer">{_PRE}{_render.escape_text(resp.content)}</div>{footer_html}</div>'
    return {"text/plain": terminal_safe(f"{resp.content}\n\n{footer_text}"), "text/html": html}


def json_bundle(value: Any, resp: LLMResponse, footer: _render.Footer | None = None) -> dict[str, Any]:
    """A JSON value (``standard_json``'s) as ``application/json`` (JupyterLab's tree view) plus the
    pretty text and footer."""
    footer = footer if footer is not None else resp.footer()
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    html = (
        f'<div class="flotorch-answer">{_PRE}{_render.escape_text(pretty)}</div>'
        f"{_render.footer_html(footer)}</div>"
    )
    return {
        "application/json": value if isinstance(value, dict | list) else {"value": value},
        "text/html": html,
        "text/plain": terminal_safe(f"{pretty}\n\n{_render.footer_text(footer)}"),
    }


def _not_standard(constant: str) -> NoReturn:
    raise ValueError(constant)


def standard_json(value: Any) -> Any:
    """``value`` if it can be saved as standard JSON, text made UTF-8-safe; else a ``ResponseError``.

    The one rule for what a cell may show (and a notebook file store) as ``application/json``.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ResponseError(_NAN_MESSAGE) from None
    safe = utf8_safe(text)
    return value if safe is text else json.loads(safe)


_NAN_MESSAGE = (
    "-f json: the answer holds NaN or Infinity, which standard JSON (RFC 8259) cannot hold, so it "
    "cannot be shown or saved as JSON; ask the model for null or a string instead, or use -f text"
)


def parse_json_answer(content: str) -> Any:
    """The answer as standard JSON: the whole text, else its first fenced block; ``ResponseError``
    if neither parses, or if the JSON holds ``NaN`` / ``Infinity`` (see the module docstring)."""
    candidates = [content]
    fenced = extract_code(content, fallback=False)
    if fenced is not None:
        candidates.append(fenced)
    for candidate in candidates:
        try:
            return standard_json(json.loads(candidate, parse_constant=_not_standard))
        except (json.JSONDecodeError, RecursionError):  # nested too deeply is "not usable JSON" too
            continue
        except ValueError:  # NaN, Infinity or -Infinity
            raise ResponseError(_NAN_MESSAGE) from None
    snippet = " ".join(content.split())[:120]
    raise ResponseError(
        f"-f json: the answer is not JSON ({snippet!r}); ask the model for JSON only, or use "
        "-f markdown to see the answer as it is"
    )


def _fences(text: str) -> list[Any]:
    from markdown_it import MarkdownIt

    # The same CommonMark rules the renderer uses, so "the first code block" is what the user sees.
    return [t for t in MarkdownIt("commonmark").parse(text) if t.type in ("fence", "code_block")]


def extract_code(text: str, *, fallback: bool = True) -> str | None:
    """The first fenced (or indented) code block of a Markdown answer, without its fences.

    Without any block the whole answer is returned when ``fallback`` (models often answer with bare
    code when asked for code), else None.
    """
    blocks = _fences(text)
    if blocks:
        return str(blocks[0].content).rstrip("\n")
    return text.strip() if fallback else None


def code_language(text: str) -> str:
    """The info string (language) of the first fenced block, or ``""``."""
    blocks = _fences(text)
    if not blocks or blocks[0].type != "fence":
        return ""
    return str(blocks[0].info).split(" ")[0].strip()
