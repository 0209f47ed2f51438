"""Batch benchmark, one run: throughput against a 100 ms loopback responder, rpm, memory, Dask.

    .venv/bin/python bench/bench_batch.py            # everything (about 5 minutes)
    .venv/bin/python bench/bench_batch.py --quick    # 30-s rpm run, 20,000 items for memory
    .venv/bin/python bench/bench_batch.py --instant  # only abatch vs ainvoke+gather (median of pairs)

The responder is ``bench/server.py``, the same one ``bench.py`` uses (its own process, uvloop when
installed, ``--arrivals`` to log when each request arrived).

Targets (from the issue; never loosened here): on the instant responder, abatch at least 0.9x the
rate of the same prompts by ainvoke under asyncio.gather, at 64 and 256 in flight; abatch of 2,000
prompts at concurrency 64 >= 0.9 of the ideal 640 req/s; 5,000 at 256 >= 0.75 of 2,560 req/s;
rpm=600 for two minutes never more than
600 in any 60-s window (measured at the server) and >= 95 % of it sustained; a 100,000-item batch
grows peak RSS by <= 150 MiB; Dask with two workers vs one process, reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import start_server, stop

LATENCY = 0.1


def start_responder(latency: float = LATENCY, *options: str) -> tuple[subprocess.Popen[str], str]:
    """``bench/server.py`` answering after ``latency`` seconds."""
    return start_server(latency, *options)


def stats(url: str) -> dict[str, Any]:
    import httpx2

    return httpx2.get(f"{url}/_stats", timeout=30).json()  # type: ignore[no-any-return]


def prompts(n: int) -> list[str]:
    return [f"prompt {i}" for i in range(n)]


async def ours(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """``abatch`` of ``n`` prompts: items per second, and this process's CPU seconds per item."""
    from flotorch_nb import FlotorchLLM

    async with FlotorchLLM("bench/model", "bench-key", url, cache=False) as llm:
        await llm.abatch(prompts(concurrency), concurrency=concurrency, progress=False)  # warm the pool
        started, cpu = time.perf_counter(), time.process_time()
        result = await llm.abatch(prompts(n), concurrency=concurrency, progress=False)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert not result.errors, result.summary_text()
    return n / elapsed, cpu / n


async def batch_vs_gather(url: str, n: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """``abatch`` of ``n`` prompts against the same prompts sent by ``ainvoke`` under
    ``asyncio.gather`` (a semaphore of ``concurrency``), on one client and one server, in ``rounds``
    interleaved pairs (which one goes first alternates, so neither always meets a warmer or a
    busier machine). Each pair gives a ratio of rates; the median ratio is the figure (other work on
    a shared machine slows single rounds, not the middle of several pairs)."""
    from flotorch_nb import FlotorchLLM, LLMResponse

    async with FlotorchLLM("bench/model", "bench-key", url, cache=False) as llm:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> LLMResponse:
            async with semaphore:
                return await llm.ainvoke([{"role": "user", "content": prompt}])

        async def gathered() -> tuple[float, float]:
            # What people write: gather returns every response, as abatch keeps every answer (a
            # loop that dropped each response would compare keeping n answers with keeping none).
            started, cpu = time.perf_counter(), time.process_time()
            answers = await asyncio.gather(*(one(p) for p in prompts(n)))
            assert len(answers) == n
            return n / (time.perf_counter() - started), (time.process_time() - cpu) / n

        async def batched() -> tuple[float, float]:
            started, cpu = time.perf_counter(), time.process_time()
            result = await llm.abatch(prompts(n), concurrency=concurrency, progress=False)
            assert not result.errors, result.summary_text()
            return n / (time.perf_counter() - started), (time.process_time() - cpu) / n

        await gathered()  # open the connections before timing
        await batched()
        ratios: list[float] = []
        cpu_ratios: list[float] = []
        rates: dict[str, list[float]] = {"abatch": [], "ainvoke+gather": []}
        for round_ in range(rounds):
            pair = [("abatch", batched), ("ainvoke+gather", gathered)]
            measured = {name: await run() for name, run in (pair if round_ % 2 == 0 else pair[::-1])}
            (b_rate, b_cpu), (g_rate, g_cpu) = measured["abatch"], measured["ainvoke+gather"]
            rates["abatch"].append(b_rate)
            rates["ainvoke+gather"].append(g_rate)
            ratios.append(b_rate / g_rate)
            cpu_ratios.append(g_cpu / b_cpu)
    return {
        "abatch": statistics.median(rates["abatch"]),
        "ainvoke+gather": statistics.median(rates["ainvoke+gather"]),
        "ratio": statistics.median(ratios),
        "ratios": sorted(ratios),
        # CPU per item moves far less with the machine's other load than a rate does.
        "cpu_ratio": statistics.median(cpu_ratios),
    }


async def raw_httpx(url: str, n: int, concurrency: int) -> float:
    import httpx2

    body = {"model": "bench/model", "messages": [{"role": "user", "content": "x"}]}
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=60) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with semaphore:
                r = await client.post(f"{url}/api/openai/v1/chat/completions", json=body)
                r.json()

        await asyncio.gather(*(one(i) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)


async def raw_aiohttp(url: str, n: int, concurrency: int) -> float | None:
    try:
        import aiohttp
    except ImportError:
        return None
    body = {"model": "bench/model", "messages": [{"role": "user", "content": "x"}]}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with semaphore, session.post(f"{url}/api/openai/v1/chat/completions", json=body) as r:
                await r.json()

        await asyncio.gather(*(one(i) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - started)


def most_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def rpm_run(seconds: float) -> dict[str, Any]:
    from flotorch_nb import FlotorchLLM

    proc, url = start_responder(0.01, "--arrivals")
    try:
        n = int(600 * seconds / 60) + 20
        with FlotorchLLM("bench/model", "bench-key", url, cache=False) as llm:
            task_started = time.monotonic()

            async def run() -> None:
                task = asyncio.ensure_future(llm.abatch(prompts(n), concurrency=16, rpm=600, progress=False))
                await asyncio.sleep(seconds)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

            asyncio.run(run())
        arrivals = sorted(stats(url)["arrivals"])
        arrivals = [t for t in arrivals if t >= arrivals[0]]
        duration = time.monotonic() - task_started
        return {
            "sent": len(arrivals),
            "most_in_any_60s": most_in_window(arrivals, 60.0),
            "sustained_per_min": len(arrivals) / duration * 60,
        }
    finally:
        stop(proc)


def memory_run(n: int) -> float:
    """Peak RSS growth (MiB) of one batch of n items, in a fresh process."""
    code = f"""
import resource, sys
from flotorch_nb import FlotorchLLM
prompts = [f"prompt {{i}}" for i in range({n})]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with FlotorchLLM("bench/model", "bench-key", sys.argv[1], cache=False) as llm:
    result = llm.batch(prompts, concurrency=64, progress=False)
assert len(result.ok) == {n}
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    proc, url = start_responder(0.0)
    try:
        out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        stop(proc)


def dask_run(n: int) -> dict[str, float]:
    import dask.dataframe as dd
    import pandas as pd

    from flotorch_nb import FlotorchLLM
    from flotorch_nb.dask import local_cluster, map_dataframe

    proc, url = start_responder(LATENCY)
    os.environ.update(FLOTORCH_API_KEY="bench-key", FLOTORCH_BASE_URL=url, FLOTORCH_MODEL_ID="bench/model")
    frame = pd.DataFrame({"q": prompts(n)})
    try:
        with FlotorchLLM(cache=False) as llm:
            started = time.perf_counter()
            llm.batch(frame, template="{q}", concurrency=64, progress=False)
            one = n / (time.perf_counter() - started)
        client = local_cluster(2)
        try:
            job = map_dataframe(dd.from_pandas(frame, npartitions=4), template="{q}", concurrency=32)
            started = time.perf_counter()
            job.compute()
            two = n / (time.perf_counter() - started)
        finally:
            client.close()
            client.cluster.close()
        return {"one_process_req_s": one, "dask_two_workers_req_s": two}
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--instant", action="store_true", help="only abatch vs ainvoke+gather on the instant server"
    )
    parser.add_argument("--rounds", type=int, help="interleaved pairs per concurrency (default 7; 3 quick)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    report: dict[str, Any] = {}
    rounds = args.rounds or (3 if args.quick else 7)
    proc, url = start_server(0.0)  # the instant responder: the client's own cost is all there is
    try:
        for concurrency in (64, 256):
            row = asyncio.run(batch_vs_gather(url, 2000 if args.quick else 5000, concurrency, rounds))
            row["target"] = 0.9
            row["met"] = row["ratio"] >= 0.9
            report[f"instant server @{concurrency}: abatch vs ainvoke+gather (median of {rounds} pairs)"] = (
                row
            )
    finally:
        stop(proc)
    if args.instant:
        _print(load_before, report)
        return
    proc, url = start_responder()
    try:
        for n, concurrency, share in ((2000, 64, 0.9), (5000, 256, 0.75)):
            ideal = concurrency / LATENCY
            rate, cpu = asyncio.run(ours(url, n, concurrency))
            row = {
                "ours": rate,
                "ours_cpu_us_per_item": cpu * 1e6,
                "raw_httpx2": asyncio.run(raw_httpx(url, n, concurrency)),
                "raw_aiohttp": asyncio.run(raw_aiohttp(url, n, concurrency)),
                "ideal": ideal,
                "target": share * ideal,
            }
            row["met"] = row["ours"] >= row["target"]
            report[f"abatch {n} @ {concurrency}"] = row
    finally:
        stop(proc)
    seconds = 30 if args.quick else 120
    report[f"rpm=600 for {seconds} s"] = rpm = rpm_run(seconds)
    rpm["met"] = rpm["most_in_any_60s"] <= 600 and rpm["sustained_per_min"] >= 570
    items = 20_000 if args.quick else 100_000
    grown = memory_run(items)
    report[f"memory {items} items"] = {"peak_rss_growth_mib": grown, "met": grown <= 150}
    report["dask 2000 items"] = dask_run(2000)
    _print(load_before, report)


def _print(load_before: tuple[float, float, float], report: dict[str, Any]) -> None:
    load_after = os.getloadavg()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in load_after)}"
    )
    print(json.dumps(_rounded(report), indent=2))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):  # ratios keep three places: 0.854 must not print as a "met" 0.9
        return round(value, 3 if abs(value) < 10 else 1)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
