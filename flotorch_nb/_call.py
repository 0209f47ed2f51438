"""One call's life around its send loop, as plain functions both shells share: prepared (validated and
encoded into a ``Call`` before any I/O), begun (``before_request`` hooks, the clock) and ended
(``after_call`` hooks, exactly once, whatever the outcome). ``llm.py`` keeps only the loops."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from . import _config
from ._config import Settings
from ._errors import HookError
from ._hooks import CallRequest, CallResult, Hooks, Outcome
from ._request import build_body, encode_body
from ._response import LLMResponse, Source
from ._transport import Call, headers_for
from .schema import normalize_response_format

__all__ = ["Begun", "begin", "end", "prepare"]

logger = logging.getLogger("flotorch_nb")

#: What ``begin`` hands back for ``end``: the hooks' request (None when no hook wants it), the start.
Begun = tuple[CallRequest | None, float]


def prepare(
    settings: Settings,
    messages: object,
    tools: object,
    response_format: object,
    extra_body: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
    *,
    stream: bool,
) -> Call:
    """Validate and encode a call (``kwargs`` may carry ``model`` and ``timeout`` for this call)."""
    if kwargs:
        timeout = kwargs.pop("timeout", None)
        model = kwargs.pop("model", None)
    else:  # the common call: no parameters at all
        timeout = model = None
    if model is None:  # model="" is a mistake to report, not a reason to fall back silently
        model = settings.model_id
    wire_format, model_class = (
        normalize_response_format(response_format) if response_format is not None else (None, None)
    )
    body = build_body(
        model,
        messages,
        tools=tools,
        response_format=wire_format,
        extra_body=extra_body,
        stream=stream,
        params=kwargs,
    )
    return Call(
        url=settings.url,
        body=body,
        content=encode_body(body),
        headers=headers_for(settings.api_key),  # built per call: a dict kept on the client would show
        key=settings.api_key,
        timeout=_config.check_timeout(timeout, "timeout") if timeout is not None else settings.timeout,
        model=model,
        stream=stream,
        model_class=model_class,
    )


def begin(hooks: Hooks, call: Call) -> Begun:
    """Run the ``before_request`` hooks (which may refuse the call); start the call's clock."""
    request = None
    if hooks.before_request or hooks.after_call:
        request = hooks.request(call.model, call.body, stream=call.stream)
        hooks.run_before(request)
    return request, time.perf_counter()


def end(
    hooks: Hooks,
    begun: Begun,
    outcome: LLMResponse | BaseException,
    failed_source: Source,
    partial_chars: int = 0,
) -> None:
    """Run the ``after_call`` hooks once for a finished call (answer, failure or stop).

    After a failure the failure is what the caller must see: a hook that raises then is logged and
    noted on the failure instead of replacing it. ``failed_source`` is where an answer would have
    come from (a failure has no answer to say so).
    """
    request, started = begun
    if request is None or not hooks.after_call:
        return
    if isinstance(outcome, BaseException):
        from asyncio import CancelledError  # only now: `import flotorch_nb` does without asyncio

        response = getattr(outcome, "response", None)
        state: Outcome = "error" if isinstance(outcome, Exception) else "stopped"
        if isinstance(outcome, CancelledError | GeneratorExit | KeyboardInterrupt):
            state = "stopped"
        result = CallResult(
            request,
            state,
            response if isinstance(response, LLMResponse) else None,
            outcome,
            time.perf_counter() - started,
            failed_source,
            partial_chars,
        )
        try:
            hooks.run_after(result)
        except HookError as hook_error:
            logger.warning("%s", hook_error)
            outcome.add_note(f"also: {hook_error}")
        return
    hooks.run_after(CallResult(request, "ok", outcome, None, time.perf_counter() - started, outcome.source))
