"""Test support for batch, cache and Dask tests: the offline gateway with latency, faults and counts.

``Shaped`` wraps the gateway's ASGI app: it counts every chat request it receives by canonical
request key (the replay/cache key), can hold each one for ``latency`` seconds (noticing a client that
hangs up meanwhile), and can answer every ``fail_every``-th request with 429 or 503 instead.
(The gateway is gaining ``latency=`` and ``request_counts()`` of its own; this stays test-local.)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from flotorch_nb import (
    BatchResult,
    FlotorchLLM,
    RetryPolicy,
)
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.replay import canonical_request, request_key
from tests.support.client import KEY

__all__ = ["Shaped", "body_key", "run_batch", "shaped_gateway"]


def body_key(path: str, body: dict[str, Any]) -> str:
    """The cache/replay key of a request body as the client sends it (stream flags left out)."""
    kept = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    return request_key(canonical_request(kept, path))


class Shaped:
    """ASGI middleware around the gateway app; see the module docstring."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.latency = 0.0
        self.fail_every = 0
        self.fail_statuses = (429, 503)
        self.retry_after = "0"
        self._lock = threading.Lock()
        self.seen = 0
        self.received: Counter[str] = Counter()
        self.arrivals: list[float] = []
        self.failed = 0
        self.disconnected = 0

    def reset(self) -> None:
        with self._lock:
            self.latency, self.fail_every, self.seen, self.failed, self.disconnected = 0.0, 0, 0, 0, 0
            self.received.clear()
            self.arrivals.clear()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        with self._lock:
            self.seen += 1
            number = self.seen
            self.arrivals.append(time.monotonic())
            with suppress(ValueError):
                self.received[body_key(scope["path"], json.loads(raw))] += 1
        if self.latency:
            sleeper = asyncio.ensure_future(asyncio.sleep(self.latency))
            hangup = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({sleeper, hangup}, return_when=asyncio.FIRST_COMPLETED)
            if hangup in done:
                sleeper.cancel()
                with self._lock:
                    self.disconnected += 1
                return
            hangup.cancel()
        if self.fail_every and number % self.fail_every == 0:
            status = self.fail_statuses[(number // self.fail_every) % len(self.fail_statuses)]
            with self._lock:
                self.failed += 1
            payload = json.dumps({"error": {"message": f"injected {status}", "type": "test"}}).encode()
            headers = [(b"content-type", b"application/json"), (b"retry-after", self.retry_after.encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@contextmanager
def shaped_gateway() -> Iterator[tuple[OfflineGateway, Shaped]]:
    """A started offline gateway whose app is wrapped in ``Shaped``."""
    gateway = OfflineGateway(record=True)
    shaped = Shaped(gateway.app)
    gateway.app = shaped  # type: ignore[assignment]  # served as it is: any ASGI app will do
    with gateway:
        yield gateway, shaped


async def run_batch(llm: FlotorchLLM, sync: bool, inputs: Any, **options: Any) -> BatchResult:
    """``llm.batch`` (in a thread) or ``llm.abatch``, without a progress bar unless asked for."""
    options.setdefault("progress", False)
    if sync:
        return await asyncio.to_thread(llm.batch, inputs, **options)
    return await llm.abatch(inputs, **options)


def make_llm(gw: OfflineGateway, model: str = "offline/echo", retries: int = 2, **kw: Any) -> FlotorchLLM:
    retry = RetryPolicy(max_retries=retries, base_delay=0, max_delay=0)
    return FlotorchLLM(model, KEY, gw.url, retry=retry, **kw)


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best
