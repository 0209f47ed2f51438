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

This module is pure: no IPython, no widgets, no knowledge of ``LLMResponse`` (the footer takes plain
values). markdown-it-py and nh3 are imported on first use so ``import flotorch_nb`` stays cheap.
"""

from __future__ import annotations

import functools
import html
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import nh3
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["answer_html", "escape_text", "footer_html", "footer_text", "render_markdown"]

# The tags markdown-it (commonmark + tables + strikethrough) can produce; nothing else survives.
_ALLOWED_TAGS = frozenset(
    {
        "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)  # fmt: skip
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


def escape_text(text: str) -> str:
    """Escape plain text (a user's message, a model id, an error line) for use inside HTML."""
    if not isinstance(text, str):
        raise TypeError(f"escape_text() needs a str, not {type(text).__name__}")
    return html.escape(text, quote=True)


def render_markdown(text: str) -> str:
    """Render untrusted Markdown (model output) as a sanitized HTML fragment.

    Raw HTML in ``text`` is displayed literally; fenced code keeps its ``language-*`` class.
    """
    if not isinstance(text, str):
        raise TypeError(f"render_markdown() needs a str, not {type(text).__name__}")
    md = _markdown()
    env: dict[str, Any] = {}
    tokens = md.parse(text, env)
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


def footer_text(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    total_tokens: int,
    usage_known: bool = True,
    latency_s: float | None = None,
    gateway_latency_ms: float | None = None,
    offline: bool = False,
    note: str | None = None,
) -> str:
    """One line for the end of an answer.

    Example: ``OFFLINE gateway · offline/assistant · in 12 · out 34 · total 46 tokens · 210 ms``.
    ``note`` is a short mark shown first (the chat panel's ``STOPPED`` / ``ERROR``).
    """
    parts = _footer_parts(
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens,
        usage_known=usage_known,
        latency_s=latency_s,
        gateway_latency_ms=gateway_latency_ms,
        note=note,
    )
    if offline:
        parts.insert(0, "OFFLINE gateway")
    if note:
        parts.insert(0, note)
    return " · ".join(parts)


def footer_html(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    total_tokens: int,
    usage_known: bool = True,
    latency_s: float | None = None,
    gateway_latency_ms: float | None = None,
    offline: bool = False,
    note: str | None = None,
) -> str:
    """The footer as HTML: ``<div class="flotorch-footer">`` with an "OFFLINE gateway" badge if offline.

    Inline styles only (this HTML is ours, never model output): a notebook page has no stylesheet of
    ours, and the saved notebook must look the same without the package installed.
    """
    parts = _footer_parts(
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens,
        usage_known=usage_known,
        latency_s=latency_s,
        gateway_latency_ms=gateway_latency_ms,
        note=note,
    )
    pieces = [escape_text(part) for part in parts]
    if offline:
        pieces.insert(0, _OFFLINE_BADGE)
    if note:
        pieces.insert(
            0, f'<strong class="flotorch-footer-note" style="color:#b91c1c">{escape_text(note)}</strong>'
        )
    # Joined like footer_text, so the footer's visible text (textContent) is exactly footer_text.
    return (
        '<div class="flotorch-footer" style="font-size:0.85em;color:#6b7280;margin-top:4px">'
        f"{' · '.join(pieces)}</div>"
    )


def _footer_parts(
    *,
    model: str,
    input_tokens: int,
    output_tokens: int,
    total_tokens: int,
    usage_known: bool,
    latency_s: float | None,
    gateway_latency_ms: float | None,
    note: str | None,
) -> list[str]:
    """Validate the footer values and format them as the pieces of the line, badge excluded."""
    if note is not None and not isinstance(note, str):
        raise TypeError(f"note must be a str, not {type(note).__name__}")
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, not {type(model).__name__}")
    counts = {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": total_tokens}
    for name, value in counts.items():
        # bool is an int subclass; True tokens is a caller's bug, not a count.
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    parts = [model or "unknown model"]
    if usage_known:
        parts.append(f"in {input_tokens} · out {output_tokens} · total {total_tokens} tokens")
    else:
        parts.append("tokens unknown")
    if latency_s is not None:
        latency = _format_duration(_check_duration("latency_s", latency_s))
        if gateway_latency_ms is not None:
            gateway = _format_duration(_check_duration("gateway_latency_ms", gateway_latency_ms) / 1000)
            latency = f"{latency} (gateway {gateway})"
        parts.append(latency)
    elif gateway_latency_ms is not None:
        gateway = _format_duration(_check_duration("gateway_latency_ms", gateway_latency_ms) / 1000)
        parts.append(f"gateway {gateway}")
    return parts


def _check_duration(name: str, value: float) -> float:
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
