"""The embedded offline FloTorch gateway: OpenAI-compatible chat completions on 127.0.0.1, no key, no LLM.

``OfflineGateway`` serves deterministic local models so notebooks and tests run offline:
``offline/assistant`` (answers from the prompt, calls tools, fills JSON schemas), ``offline/echo``
(repeats the last user message), ``offline/concise`` (short answers, faster) and ``offline/verbose``
(longer answers, slower per token); see ``_models``. ``offline/scripted`` answers exactly what the
last user message scripts, as ``{"script": {...}}`` with any of ``content`` / ``chunks``,
``tool_calls``, ``finish_reason``, ``usage``, ``delay``, ``token_delay``, ``error`` (status, message)
and ``cut_after`` (see ``_scripted``): tests that pin the protocol use it instead of the assistant's
prose, which may change. Every answer says it is offline: the
``x-flotorch-gateway: offline`` header and a model name starting with ``offline/``. ``latency`` and
``token_delay`` model a real model's response time; ``Fault`` injects failures for client tests;
``request_counts()`` says how often each request arrived (by replay's request key); ``RateLimit``
is a hidden requests/tokens-per-minute budget per key, answered with 429s and ``x-ratelimit-*``
headers (``OfflineGateway(rate_limit=...)``, ``gw.rate_limit = ...``, ``POST /_offline/limits``).

Layout: pure core -> ASGI plumbing (``_asgi``) and the starlette app (``_app``) -> uvicorn thread
(``_server``) and CLI (``__main__``). The core: ``_validate`` (request in) -> ``_models`` (which model
answers what, and how fast) -> ``_wire`` (answer out); text answers from ``_assistant`` with its
knowledge (``_data``, ``_numbers``, ``_lists``) and voice (``_phrasing``); structured answers from
``_json_mode`` and ``_schema_fill`` (with its size limits; scalars in ``_schema_scalars``);
``_scripted`` (the scripted model); ``_tool_calls`` (which tools a prompt asks for, per turn);
``_judge`` (the grade of a judge prompt); ``_text`` (tokens, prompt facts), ``_faults``,
``_ratelimit`` (the hidden per-key limit), ``_record`` (what was received, and how often). What
the assistant knows and how it words things (facts, lists, snippets, example records, templates,
phrasebook, word lists) is data in ``data/*.toml``, read on first use by ``_data``.
"""

from __future__ import annotations

from ._app import create_app
from ._faults import Fault, FaultPlan
from ._models import DEFAULT_MODEL, OFFLINE_MODELS, PROFILES, ModelProfile
from ._ratelimit import RateLimit, RateLimiter
from ._record import RecordedRequest
from ._server import OfflineGateway

__all__ = [
    "DEFAULT_MODEL",
    "OFFLINE_MODELS",
    "PROFILES",
    "Fault",
    "FaultPlan",
    "ModelProfile",
    "OfflineGateway",
    "RateLimit",
    "RateLimiter",
    "RecordedRequest",
    "create_app",
]
