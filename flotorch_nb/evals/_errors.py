"""``EvalError``: an evaluation that cannot run as asked, refused before any request."""

from __future__ import annotations

from typing import Any

from .._config import check_whole
from .._errors import InvalidRequestError

__all__ = ["EvalError", "whole"]


class EvalError(InvalidRequestError):
    """An evaluation that cannot run as asked: empty data, a missing column, an unknown scorer, bad
    ``epochs``, a result that cannot be compared as asked... Raised before any request is sent (an
    ``InvalidRequestError``, so also a ``ValueError``)."""


def whole(value: Any, name: str, minimum: int) -> int:
    """``value`` when it is a whole number >= ``minimum``, else an ``EvalError`` naming ``name``: the
    package's one rule for a count (``_config.check_whole``) for ``epochs``, a judge's ``votes``..."""
    return check_whole(value, name, minimum, EvalError)
