"""The transport seam: everything between a prepared ``Call`` and the bytes of a reply.

``_boundary`` is the pure half every side shares (``Call``, the reply and pool protocols, redirects,
status/timeout/closed errors); ``_httpx`` puts httpx2 behind it (the sync pool, injected clients,
record/replay); ``_aio`` puts aiohttp behind it (the default async pool, imported by the first async
call); ``_pools`` holds one client's pools per event loop and closes them when their loop ends.
Nothing outside this package imports httpx2 or aiohttp for a request.
"""

from __future__ import annotations

from ._boundary import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    USER_AGENT,
    AsyncPool,
    AsyncReply,
    Call,
    Reply,
    closed_error,
    connection_error,
    cut_error,
    deadline_error,
    headers_for,
    is_event_stream,
    rate_headers,
    redirect_target,
    request_id,
    response_info,
    scrub,
    status_failure,
    timeout_error,
)

__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "USER_AGENT",
    "AsyncPool",
    "AsyncReply",
    "Call",
    "Reply",
    "closed_error",
    "connection_error",
    "cut_error",
    "deadline_error",
    "headers_for",
    "is_event_stream",
    "rate_headers",
    "redirect_target",
    "request_id",
    "response_info",
    "scrub",
    "status_failure",
    "timeout_error",
]
