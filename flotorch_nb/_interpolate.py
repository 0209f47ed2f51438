"""Fill ``{name}`` references in a prompt: a ``%%flotorch`` cell from the user's namespace, a batch
template (``llm.batch(df, template=...)``) from a row. One brace rule for both, so it lives in the core.

A prompt is prose that very often quotes code, so this is deliberately *not* ``str.format``:
``str.format`` raises on a lone ``{``, treats ``{a:b}`` as a format spec and ``{}`` as a positional
field, which would break prompts that contain dict literals, f-strings, JSON or LaTeX.  Instead
only *reference expressions* are touched, and anything else is left exactly as written:

- ``{name}``                      a variable (``{_}``, ``{_3}`` work too)
- ``{obj.attr}`` / ``{seq[0]}`` / ``{d['key']}``   attribute and index chains (int or quoted key)
- ``{In[3]}`` / ``{Out[3]}``      cell inputs / outputs (the namespace decides what they hold)
- ``{{name}}``                    escape: becomes the literal text ``{name}``

A reference that cannot be resolved (unknown name, missing key, failing property, ...) is left as
written, so code such as ``f"{x}"`` survives when ``x`` is undefined; ``--no-interpolate`` turns
the whole mechanism off.  Format specs and conversions (``{x:>10}``, ``{x!r}``) are not supported
on purpose: ``{a:b}`` is far more often a dict literal than a format request.

The idea (leave unknown keys intact) follows jupyter-ai-magics; the scanner is our own so that
literal braces never raise.  Pure: no IPython import; the caller passes any ``Mapping``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MISSING", "interpolate", "references", "resolve"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_INDEX = r"""\[(?:-?[0-9]+|'[^'\]\\]*'|"[^"\]\\]*")\]"""
_REF = rf"{_NAME}(?:\.{_NAME}|{_INDEX})*"
# The escape alternative comes first so that "{{x}}" is never read as "{" + "{x}" + "}".
_PATTERN = re.compile(rf"\{{\{{(?P<escaped>{_REF})\}}\}}|\{{(?P<ref>{_REF})\}}")
_STEP = re.compile(rf"\.(?P<attr>{_NAME})|\[(?P<index>[^\]]*)\]")

#: What ``resolve`` returns for a reference that has no value in the namespace.
MISSING = object()


def references(text: str) -> list[str]:
    """Return the reference expressions (not escapes) that ``interpolate`` would try to resolve."""
    return [m.group("ref") for m in _PATTERN.finditer(text) if m.group("ref") is not None]


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace each resolvable ``{ref}`` in ``text`` with ``str()`` of its value from ``namespace``.

    Never raises because of the prompt's contents: unresolvable references and every other brace
    are kept verbatim.
    """

    def substitute(match: re.Match[str]) -> str:
        escaped = match.group("escaped")
        if escaped is not None:
            return "{" + escaped + "}"
        value = resolve(match.group("ref"), namespace)
        return match.group(0) if value is MISSING else _to_text(value)

    return _PATTERN.sub(substitute, text)


def resolve(ref: str, namespace: Mapping[str, Any]) -> Any:
    """The value of one reference expression (as ``references`` returns it), or ``MISSING``."""
    head = re.match(_NAME, ref)
    assert head is not None  # guaranteed by _PATTERN
    try:
        value = namespace[head.group(0)]
        for step in _STEP.finditer(ref, head.end()):
            attr = step.group("attr")
            value = getattr(value, attr) if attr is not None else value[_index_key(step.group("index"))]
    # A user's property or __getitem__ can raise anything; an unresolved reference is not an
    # error (the text may simply be code), so it stays as written.
    except Exception:
        return MISSING
    return value


def _index_key(raw: str) -> int | str:
    if raw[:1] in {"'", '"'}:
        return raw[1:-1]
    return int(raw)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    # An LLMResponse (e.g. ``{Out[3]}`` or an ``-o`` variable) stands for its answer text; duck-typed
    # so this module stays free of the client's imports.
    content = getattr(value, "content", None)
    if isinstance(content, str) and type(value).__name__ == "LLMResponse":
        return content
    return str(value)
