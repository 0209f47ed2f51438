"""``EvalError``: an evaluation that cannot run as asked, refused before any request."""

from __future__ import annotations

from .._errors import InvalidRequestError

__all__ = ["EvalError"]


class EvalError(InvalidRequestError):
    """An evaluation that cannot run as asked: empty data, a missing column, an unknown scorer, bad
    ``epochs``, a result that cannot be compared as asked... Raised before any request is sent (an
    ``InvalidRequestError``, so also a ``ValueError``)."""
