"""Make every notebook runnable anywhere: with no gateway configured, use the embedded offline one.

``%load_ext flotorch_nb`` calls ``ensure_gateway()``. When neither ``FLOTORCH_API_KEY`` nor
``FLOTORCH_BASE_URL`` is set and nothing is being replayed, it starts ``OfflineGateway`` on a free
loopback port (one per process, kept for the life of the kernel) and points the ``FLOTORCH_*``
environment at it, so ``%%flotorch``, the chat panel and a plain ``FlotorchLLM()`` all work on a
laptop, in CI or on Binder with no account. The key it sets is a non-secret placeholder.

Whenever the offline gateway answers (started here, by a launcher, or replayed from recordings of
offline models) it also sets ``FLOTORCH_COMPARE_MODELS`` to the offline family, fastest to slowest,
so ``%%flotorch --compare`` and notebook code that reads the variable compare three models that
differ as real ones do, without naming offline models (a notebook must run unchanged on FloTorch).

It returns one line saying which gateway is in use, so nobody mistakes the deterministic offline
models for a real LLM, and never any part of a key. ``is_offline`` is the one rule for "does this
configuration talk to an offline gateway?", shared by that banner and ``%flotorch config``; it also
knows the gateway ``python -m flotorch_nb.lab`` started outside the kernel
(``FLOTORCH_OFFLINE_GATEWAY``). Pure of IPython: usable from scripts and tests; ``stop_gateway()``
undoes it (tests).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from .. import _config
from .._config import display_url
from .._response import OFFLINE_MODEL_PREFIX

if TYPE_CHECKING:
    from ..gateway import OfflineGateway

__all__ = [
    "ENV_OFFLINE_GATEWAY",
    "OFFLINE_API_KEY",
    "OFFLINE_MODEL_ID",
    "ensure_gateway",
    "gateway_url",
    "is_offline",
    "stop_gateway",
]

#: Not a secret: a placeholder the offline gateway accepts (it accepts any key). Distinctive, since
#: error messages are scrubbed of the key and a plain word like "offline" would be scrubbed too.
OFFLINE_API_KEY = "flotorch-offline-placeholder"
OFFLINE_MODEL_ID = "offline/assistant"
#: What ``%%flotorch --compare`` compares on the offline gateway (``FLOTORCH_COMPARE_MODELS``).
OFFLINE_COMPARE_MODELS = "offline/concise,offline/assistant,offline/verbose"
#: The embedded gateway answers like a small real model: a short wait, then tokens one by one, scaled
#: per model (``offline/concise`` quicker, ``offline/verbose`` slower), so streaming can be seen and a
#: comparison's timings differ plausibly; short enough that a notebook still runs in seconds.
OFFLINE_LATENCY_S = 0.05
OFFLINE_TOKEN_DELAY_S = 0.002
#: Set by a launcher that started an offline gateway outside the kernel (``python -m flotorch_nb.lab``)
#: to that gateway's URL, so the kernel can say it is offline although it did not start it.
ENV_OFFLINE_GATEWAY = _config.ENV_OFFLINE_GATEWAY

_lock = threading.Lock()
_gateway: OfflineGateway | None = None
# The environment variables ensure_gateway() set, with the values it set, so stop_gateway() can
# undo exactly that and nothing the user changed since.
_env_set: dict[str, str] = {}


def gateway_url() -> str | None:
    """The URL of this process's embedded gateway, or None if it was not started."""
    gateway = _gateway
    return gateway.url if gateway is not None else None


def is_offline(base_url: str | None, model_id: str | None) -> bool:
    """Whether calls to ``base_url`` with ``model_id`` are answered by an offline gateway: the one
    started in this process, the one a launcher named in ``FLOTORCH_OFFLINE_GATEWAY``, or any gateway
    asked for an ``offline/`` model (only the offline gateway serves those: ``binder/start``)."""
    if model_id and model_id.startswith(OFFLINE_MODEL_PREFIX):
        return True
    if not base_url:
        return False
    known = (gateway_url(), os.environ.get(ENV_OFFLINE_GATEWAY))
    return base_url.rstrip("/") in {url.rstrip("/") for url in known if url}


def ensure_gateway() -> str:
    """Start the offline gateway if no gateway is configured; return the one-line banner to show.

    Idempotent: a second call while the gateway runs starts nothing and returns the same banner.
    """
    global _gateway
    env = os.environ
    with _lock:
        replay = env.get(_config.ENV_REPLAY)
        if replay:
            if not env.get(_config.ENV_MODEL_ID):
                _set_env(_config.ENV_MODEL_ID, OFFLINE_MODEL_ID)
            if env[_config.ENV_MODEL_ID].startswith(OFFLINE_MODEL_PREFIX):  # recorded offline
                _offer_compare_models()
            return (
                f"flotorch_nb: replaying recorded answers from {replay} (FLOTORCH_REPLAY: no network, "
                f"no key; model {env[_config.ENV_MODEL_ID]})"
            )
        if _gateway is not None and env.get(_config.ENV_BASE_URL) == _gateway.url:
            return _offline_banner(_gateway.url)
        if env.get(_config.ENV_API_KEY) or env.get(_config.ENV_BASE_URL):
            if is_offline(env.get(_config.ENV_BASE_URL), env.get(_config.ENV_MODEL_ID)):
                _offer_compare_models()  # a launcher's offline gateway
            return _configured_banner()
        gateway = _start()
        _gateway = gateway
        _set_env(_config.ENV_BASE_URL, gateway.url)
        _set_env(_config.ENV_API_KEY, OFFLINE_API_KEY)
        if not env.get(_config.ENV_MODEL_ID):
            _set_env(_config.ENV_MODEL_ID, OFFLINE_MODEL_ID)
        _offer_compare_models()
        return _offline_banner(gateway.url)


def stop_gateway() -> None:
    """Stop the embedded gateway and remove the variables ``ensure_gateway`` set (if unchanged)."""
    global _gateway
    with _lock:
        gateway, _gateway = _gateway, None
        for name, value in _env_set.items():
            if os.environ.get(name) == value:
                del os.environ[name]
        _env_set.clear()
    if gateway is not None:
        gateway.stop()


def _start() -> OfflineGateway:
    from ..gateway import OfflineGateway

    # api_key=None: any key is accepted, so a key entered later with `%flotorch login` still works
    # here. The server thread is a daemon: it ends with the kernel, and no exit hook can delay a
    # kernel shutdown by waiting for open connections.
    return OfflineGateway(api_key=None, latency=OFFLINE_LATENCY_S, token_delay=OFFLINE_TOKEN_DELAY_S).start()


def _offer_compare_models() -> None:
    if not os.environ.get(_config.ENV_COMPARE_MODELS):
        _set_env(_config.ENV_COMPARE_MODELS, OFFLINE_COMPARE_MODELS)


def _set_env(name: str, value: str) -> None:
    os.environ[name] = value
    _env_set[name] = value


def _record_suffix() -> str:
    record = os.environ.get(_config.ENV_RECORD)
    return f"; recording answers to {record}" if record else ""


def _offline_banner(url: str) -> str:
    return (
        f"flotorch_nb: no FLOTORCH_API_KEY/FLOTORCH_BASE_URL set — using the OFFLINE gateway at {url} "
        f"(deterministic local models, not a real LLM){_record_suffix()}"
    )


def _configured_banner() -> str:
    env = os.environ
    base_url, model = env.get(_config.ENV_BASE_URL), env.get(_config.ENV_MODEL_ID)
    if not env.get(_config.ENV_API_KEY):
        return (
            f"flotorch_nb: FLOTORCH_BASE_URL is {display_url(base_url or '')} but FLOTORCH_API_KEY is not "
            "set — run %flotorch login (or set FLOTORCH_API_KEY) before asking"
        )
    if not base_url:
        return (
            "flotorch_nb: FLOTORCH_API_KEY is set but FLOTORCH_BASE_URL is not — run "
            "%flotorch base_url https://... (or set FLOTORCH_BASE_URL) before asking"
        )
    model_text = f"model {model}" if model else "no model set: use %flotorch model NAME or -m NAME"
    if is_offline(base_url, model):
        # Set up by `python -m flotorch_nb.lab` or binder/start: still not a real model.
        return (
            f"flotorch_nb: using the OFFLINE gateway at {display_url(base_url)} ({model_text}; deterministic "
            f"local models, not a real LLM){_record_suffix()}"
        )
    return f"flotorch_nb: using FloTorch gateway at {display_url(base_url)} ({model_text}){_record_suffix()}"
