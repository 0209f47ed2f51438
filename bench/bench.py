"""Measure flotorch_nb's client against a raw pooled httpx2 client on the same local server, in one run.

    .venv/bin/python bench/bench.py            # full run (about a minute)
    .venv/bin/python bench/bench.py --quick    # smaller samples, for a smoke check

The server is the embedded offline gateway in its own process (so client and server do not share a
GIL). Both clients get the same connection-pool limits, build the same request body, and parse the
JSON answer, so the ratios measure what our client adds: validation, error mapping, retries
bookkeeping and the LLMResponse. Measurements interleave the two clients to cancel drift on a busy
machine. Targets (from the issue): per call <= 1.2x raw, async throughput >= 0.85x raw, time to first
streamed chunk <= 1.3x raw, ``import flotorch_nb`` <= 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx2

from flotorch_nb import FlotorchLLM
from flotorch_nb._config import POOL_MAX_CONNECTIONS, POOL_MAX_KEEPALIVE

KEY = "bench-key"
MODEL = "offline/echo"
MESSAGES = [{"role": "user", "content": "ping " * 20}]
ENDPOINT = "/api/openai/v1/chat/completions"
LIMITS = httpx2.Limits(max_connections=POOL_MAX_CONNECTIONS, max_keepalive_connections=POOL_MAX_KEEPALIVE)
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gateway() -> tuple[subprocess.Popen[bytes], str]:
    """The offline gateway as a child process; returns it once /health answers (bounded wait)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flotorch_nb.gateway", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx2.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the offline gateway did not start within 20 s")


def raw_body(stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "extra_body": {}}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return json.dumps(body).encode()


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(ours: Callable[[], object], raw: Callable[[], object], n: int) -> tuple[float, float]:
    """Median seconds of each, alternating which goes first so neither always follows the other."""
    ours_t, raw_t = [], []
    for i in range(n):
        if i % 2:
            ours_t.append(_timed(ours))
            raw_t.append(_timed(raw))
        else:
            raw_t.append(_timed(raw))
            ours_t.append(_timed(ours))
    return statistics.median(ours_t), statistics.median(raw_t)


def per_call(url: str, n: int) -> tuple[float, float]:
    """Median seconds per sync call: ours vs raw (interleaved)."""
    full = url + ENDPOINT
    with FlotorchLLM(MODEL, KEY, url) as llm, httpx2.Client(limits=LIMITS, timeout=60) as raw:

        def ours_call() -> object:
            return llm.invoke(MESSAGES).content

        def raw_call() -> object:
            response = raw.post(full, content=raw_body(), headers=HEADERS)
            return response.json()["choices"][0]["message"]["content"]

        _interleaved(ours_call, raw_call, 20)  # warm both pools
        return _interleaved(ours_call, raw_call, n)


async def _throughput(call: Callable[[], Any], total: int, concurrency: int) -> float:
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            await call()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t0)


async def async_rps(url: str, total: int, concurrency: int, rounds: int) -> tuple[float, float]:
    """Requests per second at ``concurrency`` in flight: ours vs raw, best of alternating rounds."""
    full = url + ENDPOINT
    async with FlotorchLLM(MODEL, KEY, url) as llm, httpx2.AsyncClient(limits=LIMITS, timeout=60) as raw:

        async def ours_call() -> None:
            await llm.ainvoke(MESSAGES)

        async def raw_call() -> None:
            r = await raw.post(full, content=raw_body(), headers=HEADERS)
            r.json()["choices"][0]["message"]["content"]

        await _throughput(ours_call, concurrency * 2, concurrency)
        await _throughput(raw_call, concurrency * 2, concurrency)
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(await _throughput(ours_call, total, concurrency))
            theirs.append(await _throughput(raw_call, total, concurrency))
    return statistics.median(ours), statistics.median(theirs)


def first_chunk(url: str, n: int) -> tuple[float, float]:
    """Median seconds from request to the first streamed text: ours vs raw SSE (interleaved)."""
    full = url + ENDPOINT
    with FlotorchLLM(MODEL, KEY, url) as llm, httpx2.Client(limits=LIMITS, timeout=60) as raw:

        def ours_first() -> object:
            with llm.stream(MESSAGES) as stream:
                return next(iter(stream))

        def raw_first() -> object:
            with raw.stream("POST", full, content=raw_body(stream=True), headers=HEADERS) as response:
                for event in httpx2.EventSource(response):
                    delta = json.loads(event.data)["choices"][0]["delta"].get("content")
                    if delta:
                        return delta
            return None

        _interleaved(ours_first, raw_first, 10)
        return _interleaved(ours_first, raw_first, n)


def import_ms(runs: int) -> tuple[float, float]:
    """Median ms of ``import flotorch_nb`` (cumulative, from -X importtime) and of import + first client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    imports, with_client = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import flotorch_nb"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stderr
        line = next(ln for ln in out.splitlines() if ln.rstrip().endswith("| flotorch_nb"))
        imports.append(int(line.split("|")[1]) / 1000)
        code = (
            "import time; t=time.perf_counter(); import flotorch_nb; "
            "c=flotorch_nb.FlotorchLLM('m','k','http://127.0.0.1:9'); c._sync_client(); "
            "print((time.perf_counter()-t)*1000)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        with_client.append(float(done.stdout))
    return statistics.median(imports), statistics.median(with_client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples (smoke check)")
    args = parser.parse_args()
    n, total, rounds, runs = (50, 640, 2, 3) if args.quick else (400, 3200, 5, 9)

    proc, url = start_gateway()
    try:
        rows = []
        ours, raw = per_call(url, n)
        rows.append(
            (
                "sync per-call median",
                f"{ours * 1e3:.3f} ms",
                f"{raw * 1e3:.3f} ms",
                ours / raw,
                "<= 1.20",
                ours / raw <= 1.2,
            )
        )
        ours, raw = asyncio.run(async_rps(url, total, 64, rounds))
        rows.append(
            (
                "async req/s @64 concurrent",
                f"{ours:.0f}/s",
                f"{raw:.0f}/s",
                ours / raw,
                ">= 0.85",
                ours / raw >= 0.85,
            )
        )
        ours, raw = first_chunk(url, n // 2)
        rows.append(
            (
                "stream time to first chunk",
                f"{ours * 1e3:.3f} ms",
                f"{raw * 1e3:.3f} ms",
                ours / raw,
                "<= 1.30",
                ours / raw <= 1.3,
            )
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    imp, imp_client = import_ms(runs)

    print(
        f"flotorch_nb vs raw pooled httpx2 {httpx2.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, server: offline gateway (separate process)"
    )
    print(f"{'measure':30} {'ours':>12} {'raw httpx2':>12} {'ratio':>7} {'target':>8}  met")
    for name, ours_s, raw_s, ratio, target, ok in rows:
        print(f"{name:30} {ours_s:>12} {raw_s:>12} {ratio:>7.3f} {target:>8}  {'yes' if ok else 'NO'}")
    met = "yes" if imp <= 150 else "NO"
    print(f"{'import flotorch_nb':30} {imp:>9.1f} ms {'':>12} {'':>7} {'<= 150':>8}  {met}")
    print(f"{'import + first pooled client':30} {imp_client:>9.1f} ms  (httpx2 itself is imported lazily)")


if __name__ == "__main__":
    main()
