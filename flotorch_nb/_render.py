"""Model output -> safe HTML, and the per-answer footer.

Everything a notebook surface shows as HTML (the magics' answers, ``LLMResponse._repr_mimebundle_``,
the chat panel) is built here, so there is one place to audit. Model output is untrusted: in a live
JupyterLab page kernel outputs are trusted, and an ``onerror`` handler in an HTML output or an
``ipywidgets.HTML`` value *executes*. Hence two layers:

1. markdown-it-py with ``html=False``: raw HTML in the model's Markdown is shown as text, never parsed.
2. nh3 (ammonia) over the result with a short allow-list: only the tags and attributes Markdown itself
   produces, links limited to http/https/mailto (relative URLs dropped), ``rel="noopener noreferrer
   nofollow"``, no ``style``, no SVG/MathML, no event handlers.

Images are never emitted. A Markdown image becomes a link labelled ``image: <alt>``. An ``<img>`` is
fetched as soon as it is rendered, without a click, so a model steered by a prompt injection could
leak the conversation through the image URL's query string (the classic "markdown image exfiltration"
attack on chat UIs), and a saved notebook would repeat the request every time it is opened. A link
needs a deliberate click.

Everything shown also passes ``_text.utf8_safe``: a lone surrogate in model output or a prompt would
otherwise make the display (and the saved notebook, which is UTF-8) fail.

This module is pure: no IPython, no widgets, no knowledge of ``LLMResponse`` (the ``Footer`` holds
plain values). markdown-it-py and nh3 are imported on first use so ``import flotorch_nb`` stays cheap.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from ._text import terminal_safe, utf8_safe

if TYPE_CHECKING:
    import nh3
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = [
    "Footer",
    "answer_html",
    "escape_text",
    "footer_html",
    "footer_text",
    "html_table",
    "render_markdown",
    "text_table",
]

# The tags markdown-it (commonmark + tables + strikethrough) can produce; nothing else survives.
_ALLOWED_TAGS = frozenset(
    {
        "a",
        "blockquote",
        "br",
        "code",
        "del",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "strong",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "code": {"class"}}
# Table alignment arrives as ``style="text-align:..."``; styles are banned, so it is carried by the
# old ``align`` attribute instead, restricted to its three values.
_ALIGN_VALUES = {"left", "right", "center"}
_TAG_ATTRIBUTE_VALUES = {"th": {"align": _ALIGN_VALUES}, "td": {"align": _ALIGN_VALUES}}
# Dropped with their content, not just unwrapped: their text is code or markup, not prose.
_CLEAN_CONTENT_TAGS = frozenset(
    {"script", "style", "iframe", "object", "embed", "svg", "math", "template", "noscript", "textarea"}
)
_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_LINK_REL = "noopener noreferrer nofollow"
_OFFLINE_BADGE = (
    '<span class="flotorch-offline-badge" title="Answered by the embedded offline gateway, not a model"'
    ' style="background:#b45309;color:#fff;border-radius:3px;padding:0 4px;font-weight:600">'
    "OFFLINE gateway</span>"
)
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#.-]{1,40}")


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows of text (the first the header) as a fixed-width table, two spaces between columns.

    Cells hold model output, error lines and tool results, and a terminal shows this text as it is:
    each cell is ``terminal_safe`` first, so an escape sequence can neither drive the terminal nor
    throw the columns out of line (an ESC counts one character and shows none)."""
    shown = [[terminal_safe(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in shown)
    return "\n".join(lines)


def html_table(rows: Sequence[Sequence[str]], css: str) -> str:
    """Rows of text (the first the header) as an HTML table of class ``css``, every cell escaped and
    left-aligned (the text twin is ``text_table``)."""
    head = "".join(f"<th style='text-align:left'>{escape_text(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{escape_text(c)}</td>" for c in row) + "</tr>"
        for row in rows[1:]
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def escape_text(text: str) -> str:
    """Escape plain text (a user's message, a model id, an error line) for use inside HTML."""
    if not isinstance(text, str):
        raise TypeError(f"escape_text() needs a str, not {type(text).__name__}")
    return html.escape(utf8_safe(text), quote=True)


def render_markdown(text: str) -> str:
    """Render untrusted Markdown (model output) as a sanitized HTML fragment.

    Raw HTML in ``text`` is displayed literally; fenced code keeps its ``language-*`` class.
    """
    if not isinstance(text, str):
        raise TypeError(f"render_markdown() needs a str, not {type(text).__name__}")
    md = _markdown()
    env: dict[str, Any] = {}
    tokens = md.parse(utf8_safe(text), env)
    _move_alignment_out_of_style(tokens)
    return _cleaner().clean(md.renderer.render(tokens, md.options, env))


def answer_html(content_md: str, footer: str) -> str:
    """Wrap a rendered answer and its footer in ``<div class="flotorch-answer">``.

    ``content_md`` is the model's Markdown (rendered and sanitized here); ``footer`` must be the
    output of :func:`footer_html` (trusted HTML built from escaped values), or ``""``.
    """
    if not isinstance(footer, str):
        raise TypeError(f"answer_html() needs the footer as a str, not {type(footer).__name__}")
    return f'<div class="flotorch-answer">{render_markdown(content_md)}{footer}</div>'


@dataclass(frozen=True, slots=True)
class Footer:
    """What the line under an answer says: one typed value, built by ``LLMResponse.footer()`` or
    ``LedgerEntry.footer()`` and shown by ``footer_text`` / ``footer_html``, so the magics, the chat
    panel, exports and ``LLMResponse``'s own display always agree.

    Checked when built (a wrong type is a caller's bug, found where it was made). ``usage_known``
    False with ``total_tokens`` > 0 means the total is an estimate (a stopped stream, a gateway that
    sent no usage); with 0 it means "unknown". ``note`` is a short mark shown first (``STOPPED``).
    ``cost`` is shown last, only while a price table is in use (``pricing.shown_cost``): dollars
    (``$0.0012``), or ``"unknown"`` for a model without a price ("cost unknown", never a guess);
    ``None`` shows nothing.
    """

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    usage_known: bool = True
    latency_s: float | None = None
    gateway_latency_ms: float | None = None
    offline: bool = False
    note: str | None = None
    cost: Decimal | Literal["unknown"] | None = None

    def __post_init__(self) -> None:
        if not (self.cost is None or self.cost == "unknown" or isinstance(self.cost, Decimal)):
            raise TypeError(f"cost must be a Decimal, 'unknown' or None, not {self.cost!r}")
        if self.note is not None and not isinstance(self.note, str):
            raise TypeError(f"note must be a str, not {type(self.note).__name__}")
        if not isinstance(self.model, str):
            raise TypeError(f"model must be a str, not {type(self.model).__name__}")
        for name in ("input_tokens", "output_tokens", "total_tokens"):
            value = getattr(self, name)
            # bool is an int subclass; True tokens is a caller's bug, not a count.
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.latency_s is not None:
            _check_duration("latency_s", self.latency_s)
        if self.gateway_latency_ms is not None:
            _check_duration("gateway_latency_ms", self.gateway_latency_ms)

    def with_note(self, note: str | None) -> Footer:
        """The same footer with another mark (``None`` removes it)."""
        return replace(self, note=note)

    def parts(self) -> list[str]:
        """The pieces of the line, badge and note excluded (``footer_text`` joins them with ``·``)."""
        parts = [self.model or "unknown model"]
        if self.usage_known:
            parts.append(
                f"in {self.input_tokens} · out {self.output_tokens} · total {self.total_tokens} tokens"
            )
        elif self.total_tokens:
            parts.append(f"about {self.total_tokens} tokens (estimated)")
        else:
            parts.append("tokens unknown")
        gateway = (
            _format_duration(self.gateway_latency_ms / 1000) if self.gateway_latency_ms is not None else None
        )
        if self.latency_s is not None:
            latency = _format_duration(self.latency_s)
            parts.append(f"{latency} (gateway {gateway})" if gateway else latency)
        elif gateway:
            parts.append(f"gateway {gateway}")
        if self.cost is not None:
            from .pricing import format_cost

            parts.append(format_cost(None if self.cost == "unknown" else self.cost))
        return parts


def footer_text(footer: Footer) -> str:
    """One line for the end of an answer.

    Example: ``OFFLINE gateway · offline/assistant · in 12 · out 34 · total 46 tokens · 210 ms``.
    """
    parts = [utf8_safe(part) for part in footer.parts()]
    if footer.offline:
        parts.insert(0, "OFFLINE gateway")
    if footer.note:
        parts.insert(0, utf8_safe(footer.note))
    return " · ".join(parts)


def footer_html(footer: Footer) -> str:
    """The footer as HTML: ``<div class="flotorch-footer">`` with an "OFFLINE gateway" badge if offline.

    Inline styles only (this HTML is ours, never model output): a notebook page has no stylesheet of
    ours, and the saved notebook must look the same without the package installed.
    """
    pieces = [escape_text(part) for part in footer.parts()]
    if footer.offline:
        pieces.insert(0, _OFFLINE_BADGE)
    if footer.note:
        note = escape_text(footer.note)
        pieces.insert(0, f'<strong class="flotorch-footer-note" style="color:#b91c1c">{note}</strong>')
    # Joined like footer_text, so the footer's visible text (textContent) is exactly footer_text.
    return (
        '<div class="flotorch-footer" style="font-size:0.85em;color:#6b7280;margin-top:4px">'
        f"{' · '.join(pieces)}</div>"
    )


def _check_duration(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _format_duration(seconds: float) -> str:
    """Milliseconds below a second (where the digits matter), seconds with two decimals above."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@functools.cache
def _markdown() -> MarkdownIt:
    """The one parser: commonmark + tables + strikethrough, raw HTML off, no linkify, no images."""
    from markdown_it import MarkdownIt

    # breaks=True: models write poems, addresses and short lists with single newlines; CommonMark
    # would join those lines into one paragraph.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _render_image_as_link)
    return md


@functools.cache
def _cleaner() -> nh3.Cleaner:
    import nh3

    return nh3.Cleaner(
        tags=set(_ALLOWED_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes=_ALLOWED_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        tag_attribute_values=_TAG_ATTRIBUTE_VALUES,
        strip_comments=True,
        link_rel=_LINK_REL,
        url_schemes=set(_URL_SCHEMES),
        url_relative="deny",
    )


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    """Keep ``class`` only as a single ``language-*`` name on ``<code>`` (fenced code blocks).

    Must never raise: nh3 reports a raising filter through ``sys.unraisablehook``.
    """
    if attribute == "class":
        return value if tag == "code" and _LANGUAGE_CLASS.fullmatch(value) else None
    return value


def _move_alignment_out_of_style(tokens: list[Token]) -> None:
    """Turn markdown-it's ``style="text-align:X"`` on table cells into ``align="X"``."""
    for token in tokens:
        if token.type in ("th_open", "td_open") and token.attrs:
            style = str(token.attrs.pop("style", ""))
            align = style.removeprefix("text-align:")
            if align in _ALIGN_VALUES:
                token.attrs["align"] = align


def _render_image_as_link(self: Any, tokens: list[Token], idx: int, options: Any, env: Any) -> str:
    """Render ``![alt](url)`` as ``<a href="url">image: alt</a>`` (see the module docstring for why)."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    src = str(token.attrGet("src") or "")
    return f'<a href="{escape_text(src)}">image: {escape_text(alt)}</a>'
