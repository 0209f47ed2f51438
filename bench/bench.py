"""Measure flotorch_nb's client against raw aiohttp and raw httpx2 on a server far faster than all three.

    .venv/bin/python bench/bench.py              # the full run (about a minute)
    .venv/bin/python bench/bench.py --quick      # shorter rounds, for a smoke check
    .venv/bin/python bench/bench.py --latency 0.05

The server (``bench/server.py``) runs in its own process: a bare asyncio responder with canned
answers, whose CPU cost per request is measured and printed, so the figures are the clients'. A
second copy answers after ``--latency`` seconds (default 0.1, via ``call_later``) for the
many-calls-in-flight case. Raw clients send the same body, use the same connection limit and parse
the JSON answer; ``ours on httpx2`` is FlotorchLLM with an injected ``httpx2.AsyncClient`` with the
old pool limits: the async transport as it was before aiohttp. Rounds alternate between clients (a
busy machine drifts) and last a fixed time; the best round of each client is reported (noise on a
shared machine only ever slows a round down).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx2

from flotorch_nb import FlotorchLLM
from flotorch_nb._config import POOL_MAX_CONNECTIONS, POOL_MAX_KEEPALIVE
from flotorch_nb._transport._aio import MAX_CONNECTIONS

KEY = "bench-key"
MODEL = "bench/model"
MESSAGES = [{"role": "user", "content": "ping " * 20}]
ENDPOINT = "/api/openai/v1/chat/completions"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
BODY = json.dumps({"model": MODEL, "messages": MESSAGES}, separators=(",", ":")).encode()
STREAM_BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode()
LIMITS = httpx2.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
OLD_LIMITS = httpx2.Limits(max_connections=POOL_MAX_CONNECTIONS, max_keepalive_connections=POOL_MAX_KEEPALIVE)

Call = Callable[[], Awaitable[object]]


# -- the server ----------------------------------------------------------------------------------------
def start_server(
    latency: float = 0.0, *options: str, script: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``bench/server.py`` (or another ``script`` that prints ``PORT n`` once it listens) in its own
    process (``options``: its flags, e.g. ``--arrivals``); returns once it listens."""
    script = script or Path(__file__).with_name("server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--latency", str(latency), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the bench server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.strip()


def server_stats(url: str) -> tuple[int, float]:
    stats = httpx2.get(url + "/_stats", timeout=5).json()
    return int(stats["requests"]), float(stats["cpu_s"])


# -- async throughput ----------------------------------------------------------------------------------
async def _round(call: Call, concurrency: int, seconds: float) -> tuple[float, float]:
    """Requests per second with ``concurrency`` workers calling until ``seconds`` have passed, and
    this process's CPU seconds per request (what the rate would be bound by on an idle machine)."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started), (time.process_time() - cpu) / done


async def throughput(
    url: str, concurrency: int, seconds: float, rounds: int, old: bool
) -> tuple[dict[str, float], dict[str, float]]:
    """Best requests/s of each client over alternating rounds (``old``: also ours on httpx2), and
    each one's median CPU seconds per request."""
    full = url + ENDPOINT
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        httpx2.AsyncClient(limits=LIMITS, timeout=60) as raw_httpx,
        httpx2.AsyncClient(limits=OLD_LIMITS, timeout=60) as old_pool,
        FlotorchLLM(MODEL, KEY, url) as ours,
        FlotorchLLM(MODEL, KEY, url, async_http_client=old_pool) as ours_old,
    ):

        async def raw_aiohttp() -> object:
            async with session.post(full, data=BODY, headers=HEADERS) as response:
                return json.loads(await response.read())["choices"][0]["message"]["content"]

        async def raw_httpx2() -> object:
            response = await raw_httpx.post(full, content=BODY, headers=HEADERS)
            return response.json()["choices"][0]["message"]["content"]

        async def ours_call() -> object:
            return (await ours.ainvoke(MESSAGES)).content

        async def ours_old_call() -> object:
            return (await ours_old.ainvoke(MESSAGES)).content

        clients: dict[str, Call] = {"ours": ours_call, "aiohttp": raw_aiohttp, "httpx2": raw_httpx2}
        if old:
            clients["ours on httpx2"] = ours_old_call
        for call in clients.values():  # open the connections before timing
            await _round(call, concurrency, min(0.3, seconds))
        best = dict.fromkeys(clients, 0.0)
        cpu: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(rounds):
            for name, call in clients.items():
                rate, per_request = await _round(call, concurrency, seconds)
                best[name] = max(best[name], rate)
                cpu[name].append(per_request)
    return best, {name: statistics.median(values) for name, values in cpu.items()}


async def server_capacity(url: str, seconds: float) -> float:
    """The server's CPU seconds per request under the load of raw aiohttp at 256 in flight (a server's
    capacity is what it does when saturated)."""
    full = url + ENDPOINT
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS)) as session:

        async def raw_aiohttp() -> object:
            async with session.post(full, data=BODY, headers=HEADERS) as response:
                return await response.read()

        await _round(raw_aiohttp, 256, 0.2)
        served0, cpu0 = server_stats(url)
        await _round(raw_aiohttp, 256, seconds)
        served1, cpu1 = server_stats(url)
    return (cpu1 - cpu0) / max(1, served1 - served0)


# -- one call at a time --------------------------------------------------------------------------------
def _interleaved(ours: Callable[[], object], raw: Callable[[], object], n: int) -> tuple[float, float]:
    """Median seconds of each, alternating which goes first so neither always follows the other."""
    ours_t, raw_t = [], []
    for i in range(n):
        pair = [(ours, ours_t), (raw, raw_t)]
        for fn, times in pair if i % 2 else pair[::-1]:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(ours_t), statistics.median(raw_t)


def per_call(url: str, n: int) -> tuple[float, float]:
    """Median seconds per sync invoke vs a raw pooled httpx2 POST."""
    full = url + ENDPOINT
    with FlotorchLLM(MODEL, KEY, url) as llm, httpx2.Client(limits=LIMITS, timeout=60) as raw:

        def raw_call() -> object:
            return raw.post(full, content=BODY, headers=HEADERS).json()["choices"][0]["message"]["content"]

        _interleaved(lambda: llm.invoke(MESSAGES), raw_call, 20)  # warm both pools
        return _interleaved(lambda: llm.invoke(MESSAGES), raw_call, n)


def first_chunk_sync(url: str, n: int) -> tuple[float, float]:
    """Median seconds to the first streamed text: ``llm.stream`` vs raw httpx2 + EventSource."""
    full = url + ENDPOINT
    with FlotorchLLM(MODEL, KEY, url) as llm, httpx2.Client(limits=LIMITS, timeout=60) as raw:

        def ours() -> object:
            with llm.stream(MESSAGES) as chat:
                return next(iter(chat))

        def raw_first() -> object:
            with raw.stream("POST", full, content=STREAM_BODY, headers=HEADERS) as response:
                for event in httpx2.EventSource(response):
                    if delta := json.loads(event.data)["choices"][0]["delta"].get("content"):
                        return delta
            return None

        _interleaved(ours, raw_first, 10)
        return _interleaved(ours, raw_first, n)


async def first_chunk_async(url: str, n: int) -> tuple[float, float]:
    """Median seconds to the first streamed text: ``llm.astream`` vs raw aiohttp splitting lines."""
    full = url + ENDPOINT
    async with FlotorchLLM(MODEL, KEY, url) as llm, aiohttp.ClientSession() as session:

        async def ours() -> object:
            async with llm.astream(MESSAGES) as chat:
                async for delta in chat:
                    return delta
            return None

        async def raw_first() -> object:
            async with session.post(full, data=STREAM_BODY, headers=HEADERS) as response:
                pending = b""
                async for data in response.content.iter_any():  # what has arrived, as ours reads
                    *lines, pending = (pending + data).split(b"\n")
                    for line in lines:
                        event = json.loads(line[6:]) if line.startswith(b"data: {") else None
                        if event and (delta := event["choices"][0]["delta"].get("content")):
                            return delta
            return None

        ours_t, raw_t = [], []
        for i in range(n + 10):
            pair = [(ours, ours_t), (raw_first, raw_t)]
            for fn, times in pair if i % 2 else pair[::-1]:
                t0 = time.perf_counter()
                await fn()
                if i >= 10:  # the first ten warm the pools
                    times.append(time.perf_counter() - t0)
        return statistics.median(ours_t), statistics.median(raw_t)


def import_ms(url: str, runs: int) -> tuple[float, float]:
    """Median ms of ``import flotorch_nb`` (-X importtime) and of import + a first ainvoke (which
    imports aiohttp and opens the loop's pool)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    imports, first = [], []
    code = (
        "import time; t = time.perf_counter(); import asyncio, flotorch_nb\n"
        f"llm = flotorch_nb.FlotorchLLM({MODEL!r}, 'k', {url!r})\n"
        f"asyncio.run(llm.ainvoke({MESSAGES!r})); print((time.perf_counter() - t) * 1000)"
    )
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
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        first.append(float(done.stdout))
    return statistics.median(imports), statistics.median(first)


# -- the run -----------------------------------------------------------------------------------------------
def row(
    name: str, ours: str, ref: str, ratio: float | None = None, target: str = "", met: bool | None = None
) -> str:
    shown = f"{ratio:.2f}" if ratio is not None else ""
    verdict = "" if met is None else ("yes" if met else "NO")
    return f"{name:38} {ours:>10} {ref:>22} {shown:>6} {target:>18}  {verdict}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter rounds (a smoke check)")
    parser.add_argument("--latency", type=float, default=0.1, help="the slow server's delay (s)")
    args = parser.parse_args()
    seconds, rounds, n, runs = (0.4, 1, 60, 2) if args.quick else (1.0, 3, 300, 5)
    load_before = os.getloadavg()[0]
    rows: list[str] = []
    cpu_lines: list[str] = []
    fastest, cheapest = 0.0, float("inf")  # the best client rate and CPU per request seen
    instant, url = start_server()
    slow, slow_url = start_server(args.latency)
    try:
        server_cpu = asyncio.run(server_capacity(url, seconds))
        for conc in (64, 256):
            rate, cpu = asyncio.run(throughput(url, conc, seconds, rounds, old=True))
            fastest = max(fastest, *rate.values())
            ours, aio, old = rate["ours"], rate["aiohttp"], rate["ours on httpx2"]
            rows.append(
                row(
                    f"async @{conc} in flight vs raw aiohttp",
                    f"{ours:.0f}/s",
                    f"{aio:.0f}/s",
                    ours / aio,
                    ">= 0.60",
                    ours / aio >= 0.6,
                )
            )
            rows.append(
                row(
                    f"async @{conc} vs ours on httpx2 (before)",
                    "",
                    f"{old:.0f}/s",
                    ours / old,
                    ">= 2.00",
                    ours / old >= 2,
                )
            )
            rows.append(
                row(
                    f"  raw httpx2 @{conc}",
                    "",
                    f"{rate['httpx2']:.0f}/s",
                    rate["httpx2"] / aio,
                    "of raw aiohttp",
                )
            )
            cpu_lines.append(
                f"client CPU per request @{conc}: "
                + ", ".join(
                    f"{name} {cpu[name] * 1e6:.0f} us"
                    for name in ("ours", "aiohttp", "httpx2", "ours on httpx2")
                )
            )
            cheapest = min(cheapest, *cpu.values())
        ideal = 256 / args.latency
        slow_seconds = max(2 * seconds, 10 * args.latency)
        rate, _ = asyncio.run(throughput(slow_url, 256, slow_seconds, max(1, rounds - 1), old=False))
        for name in ("ours", "aiohttp", "httpx2"):
            label = f"{args.latency * 1000:g} ms latency @256: {name}"
            met = rate[name] / ideal >= 0.75 if name == "ours" else None
            target = ">= 0.75 of ideal" if name == "ours" else ""
            rows.append(
                row(label, f"{rate[name]:.0f}/s", f"ideal {ideal:.0f}/s", rate[name] / ideal, target, met)
            )
        ours_s, raw_s = per_call(url, n)
        rows.append(
            row(
                "sync per-call median vs raw httpx2",
                ms(ours_s),
                ms(raw_s),
                ours_s / raw_s,
                "<= 1.20",
                ours_s / raw_s <= 1.2,
            )
        )
        ours_s, raw_s = first_chunk_sync(url, n // 3)
        rows.append(
            row(
                "first streamed chunk, sync vs httpx2",
                ms(ours_s),
                ms(raw_s),
                ours_s / raw_s,
                "<= 1.30",
                ours_s / raw_s <= 1.3,
            )
        )
        ours_s, raw_s = asyncio.run(first_chunk_async(url, n // 3))
        rows.append(
            row(
                "first streamed chunk, async vs aiohttp", ms(ours_s), ms(raw_s), ours_s / raw_s, "(no target)"
            )
        )
        imp, first = import_ms(url, runs)
        rows.append(row("import flotorch_nb", f"{imp:.1f} ms", "", None, "<= 150 ms", imp <= 150))
        rows.append(row("import + first ainvoke (loads aiohttp)", f"{first:.0f} ms", ""))
    finally:
        said = stop(instant).split()
        stop(slow)
    loop_kind = said[said.index("LOOP") + 1] if "LOOP" in said else "asyncio"
    capacity = 1 / server_cpu
    print(
        f"flotorch_nb vs raw aiohttp {aiohttp.__version__} and raw httpx2 {httpx2.__version__}; Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_before:.1f} -> "
        f"{os.getloadavg()[0]:.1f} (other work on the machine slows every client alike)"
    )
    print(  # judged on CPU per request: unlike rates, it does not move with the machine's other load
        f"server: {loop_kind} responder in its own process, {server_cpu * 1e6:.1f} us CPU per request = "
        f"capacity {capacity:.0f} req/s ({capacity / fastest:.1f}x the fastest client's {fastest:.0f}/s); "
        f"{cheapest / server_cpu:.1f}x less CPU per request than the cheapest client "
        f"(target >= 10x: {'yes' if cheapest >= 10 * server_cpu else 'NO'})"
    )
    print(f"{'measure':38} {'ours':>10} {'reference':>22} {'ratio':>6} {'target':>18}  met")
    for line in rows:
        print(line)
    for line in cpu_lines:
        print(line)


if __name__ == "__main__":
    main()
