"""``EvalError``: an evaluation that cannot run as asked, refused before any request."""

from __future__ import annotations

from typing import Any

from .._errors import InvalidRequestError

__all__ = ["EvalError", "whole"]


class EvalError(InvalidRequestError):
    """An evaluation that cannot run as asked: empty data, a missing column, an unknown scorer, bad
    ``epochs``, a result that cannot be compared as asked... Raised before any request is sent (an
    ``InvalidRequestError``, so also a ``ValueError``)."""


def whole(value: Any, name: str, minimum: int) -> int:
    """``value`` when it is a whole number >= ``minimum`` (``True`` and ``2.0`` are not), else an
    ``EvalError`` naming ``name``: the one rule for ``epochs``, a judge's ``votes``, ``scale``..."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EvalError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value
