"""Call-log benchmark, one run: what logging costs a call, and how fast 100,000 logged calls search.

    .venv/bin/python bench/bench_log.py            # the full run (about a minute)
    .venv/bin/python bench/bench_log.py --quick    # a smoke run: fewer items and rows

1. Overhead, on the instant responder (``bench/server.py``, latency 0: the client's own cost is all
   there is): ``abatch`` of the same prompts with the log off and on (a fresh file each round),
   rounds alternating, the best rate of each and the median CPU per item of this process. The logged
   rounds include writing every row (``flush()`` inside the timed part), and the CPU includes the
   writer thread's. Then the sync per-call median of ``invoke``, off and on.
2. Search: a log of 100,000 calls (recorded through the same sink ``_call.end`` uses, with varied
   prompts, answers, models and times; no network), then the searches a person makes: a common word,
   a rare word, a word with a model, a word with ``since``, a model alone, the newest page; the
   median of several runs each, through ``CallLog.search`` (flush and SQLite, no pandas).

Targets (issue 17 item 5, never loosened here): logging costs <= 5 % of a call (rate with the log
>= 0.95 of the rate without; CPU per item likewise), and every search of 100,000 rows < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import start_server, stop

_TEXT = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
    "papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu river mountain ocean "
    "forest desert valley city village harbor bridge castle garden library market museum school "
    "station theater tower capital country language history science poem story recipe summary"
)
WORDS = tuple(_TEXT.split(" "))


def _prompt(rng: random.Random, i: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(12)) + f" item{i}"


async def overhead(url: str, n: int, rounds: int, folder: Path) -> dict[str, float]:
    """``abatch`` of ``n`` prompts with the log off and on, alternating; best rates, median CPU."""
    from flotorch_nb import FlotorchLLM, calllog

    rng = random.Random(1)
    prompts = [_prompt(rng, i) for i in range(n)]
    async with FlotorchLLM("bench/model", "bench-key", url, cache=False) as llm:
        await llm.abatch(prompts[:64], concurrency=64, progress=False)  # open the connections

        async def once(logged: bool, round_: int) -> tuple[float, float]:
            log = calllog.enable(folder / f"overhead-{round_}.sqlite") if logged else None
            started, cpu = time.perf_counter(), time.process_time()
            result = await llm.abatch(prompts, concurrency=64, progress=False)
            if log is not None:
                log.flush()  # every row written: part of what logging costs
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            if log is not None:
                calllog.disable()
                assert len(log) == n, (len(log), n)
                log.close()
            assert not result.errors, result.summary_text()
            return n / elapsed, cpu / n

        best = {"off": 0.0, "on": 0.0}
        used: dict[str, list[float]] = {"off": [], "on": []}
        for round_ in range(rounds):
            for name in ("off", "on"):
                rate, per_item = await once(name == "on", round_)
                best[name] = max(best[name], rate)
                used[name].append(per_item)
    cpu = {name: statistics.median(values) * 1e6 for name, values in used.items()}
    return {
        "rate_off": best["off"],
        "rate_on": best["on"],
        "rate_ratio": best["on"] / best["off"],
        "cpu_off_us": cpu["off"],
        "cpu_on_us": cpu["on"],
        "cpu_ratio": cpu["off"] / cpu["on"],
    }


def sync_calls(url: str, calls: int, folder: Path) -> dict[str, float]:
    """Median ``invoke`` time with the log off and on (alternating blocks of calls)."""
    from flotorch_nb import FlotorchLLM, calllog

    times: dict[str, list[float]] = {"off": [], "on": []}
    messages = [{"role": "user", "content": "a short question about the river"}]
    with FlotorchLLM("bench/model", "bench-key", url, cache=False) as llm:
        llm.invoke(messages)
        for block in range(6):
            for name in ("off", "on"):
                log = calllog.enable(folder / f"sync-{block}.sqlite") if name == "on" else None
                for _ in range(calls // 6):
                    started = time.perf_counter()
                    llm.invoke(messages)
                    times[name].append(time.perf_counter() - started)
                if log is not None:
                    calllog.disable()
                    log.close()
    off, on = (statistics.median(times[k]) * 1000 for k in ("off", "on"))
    return {"sync_off_ms": off, "sync_on_ms": on, "sync_ratio": off / on}


def fill(path: Path, rows: int) -> dict[str, float]:
    """Log ``rows`` calls through the sink (no network): answers with usage, some errors, four
    models (and one with 1 % of the calls), times spread over the last 30 days. Returns the
    writer's rows per second."""
    from flotorch_nb import FlotorchLLM, RateLimitError, calllog
    from flotorch_nb._response import LLMResponse, Usage

    rng = random.Random(2)
    models = ["offline/assistant", "offline/concise", "gpt-4o-mini", "claude-haiku"]
    log = calllog.CallLog(path)
    log.open()
    llm = FlotorchLLM("offline/assistant", "bench-key", "http://127.0.0.1:9")
    now = time.time()
    started = time.perf_counter()
    for i in range(rows):
        model = "rare-model" if i % 100 == 7 else models[i % len(models)]  # 1 % of the calls
        call = llm._pipeline.prepare(
            [{"role": "user", "content": _prompt(rng, i)}], None, None, None, {"model": model}, stream=False
        )
        outcome: LLMResponse | BaseException
        if i % 50 == 49:
            outcome = RateLimitError("slow down", status_code=429, gateway_message="slow down")
        else:
            outcome = LLMResponse(
                content=_prompt(rng, rows + i),
                metadata={},
                model=model,
                usage=Usage(20, 15, 35),
                source="live",
                provenance={"request_hash": f"{i:064x}", "gateway": "http://127.0.0.1:9"},
            )
        log.record(call, outcome, 0.01, "live", 0)
        if i % 5000 == 4999:
            log.flush()
    log.flush()
    elapsed = time.perf_counter() - started
    # Spread the rows over 30 days, oldest first, as a month of work would have them.
    with log._file.lock:
        conn = log._file.get()
        conn.execute("UPDATE calls SET time = ? - (? - id) * ?", (now, rows, 30 * 86400 / rows))
    llm.close()
    log.close()
    return {"rows": float(rows), "rows_per_s": rows / elapsed}


def searches(path: Path, repeat: int) -> dict[str, float]:
    """Median milliseconds of each search a person makes over the filled log."""
    from datetime import timedelta

    from flotorch_nb import calllog

    log = calllog.CallLog(path)
    cases: dict[str, dict[str, Any]] = {
        "common word, newest 100": {"query": "river"},
        "two words": {"query": "river castle"},
        "rare word (one row)": {"query": "item77777"},
        "word + model": {"query": "poem", "model": "claude-haiku"},
        "word + rare model (1 %)": {"query": "river", "model": "rare-model"},
        "word + unknown model": {"query": "river", "model": "never-used"},
        "word + last 24 h": {"query": "poem", "since": timedelta(days=1)},
        "model + last 7 days": {"model": "gpt-4o-mini", "since": timedelta(days=7)},
        "newest 100, no filter": {},
        "no match": {"query": "nothingmatchesthis"},
    }
    found: dict[str, float] = {}
    for name, options in cases.items():
        log.search(**options)  # warm the page cache once
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            log.search(**options)
            times.append((time.perf_counter() - started) * 1000)
        found[name] = statistics.median(times)
    log.close()
    return found


def report_overhead(folder: Path, items: int, rounds: int, calls: int) -> None:
    """Part 1: logging's cost per call, printed."""
    proc, url = start_server(0.0)
    try:
        cost = asyncio.run(overhead(url, items, rounds, folder))
        sync = sync_calls(url, calls, folder)
    finally:
        stop(proc)
    print(
        f"abatch {items} @64, instant server: log off {cost['rate_off']:.0f}/s, "
        f"on {cost['rate_on']:.0f}/s -> {cost['rate_ratio']:.3f} "
        f"(target >= 0.95: {_met(cost['rate_ratio'])})"
    )
    print(
        f"  CPU per item: off {cost['cpu_off_us']:.1f} us, on {cost['cpu_on_us']:.1f} us (writer "
        f"included) -> {cost['cpu_ratio']:.3f} (target >= 0.95: {_met(cost['cpu_ratio'])})"
    )
    print(
        f"sync invoke median: off {sync['sync_off_ms']:.3f} ms, on {sync['sync_on_ms']:.3f} ms "
        f"-> {sync['sync_ratio']:.3f} (target >= 0.95: {_met(sync['sync_ratio'])})"
    )


def _met(ratio: float) -> str:
    return "yes" if ratio >= 0.95 else "NO"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer items and rows")
    parser.add_argument("--rows", type=int, default=None, help="rows in the search log (100,000)")
    parser.add_argument("--search-only", action="store_true", help="skip the overhead part")
    args = parser.parse_args()
    items, rounds, calls = (2000, 2, 120) if args.quick else (5000, 5, 1200)
    rows = args.rows or (20_000 if args.quick else 100_000)
    load = os.getloadavg()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; load average {load[0]:.2f}/{load[1]:.2f}")
    with tempfile.TemporaryDirectory(prefix="flotorch-bench-log-") as tmp:
        folder = Path(tmp)
        if not args.search_only:
            report_overhead(folder, items, rounds, calls)
        path = folder / "search.sqlite"
        filled = fill(path, rows)
        size = sum(p.stat().st_size for p in folder.glob("search.sqlite*")) / 2**20
        print(f"log of {rows:,} calls: written at {filled['rows_per_s']:.0f} rows/s, {size:.1f} MiB")
        for name, ms in searches(path, 3 if args.quick else 7).items():
            print(f"  search {name:<26} {ms:7.2f} ms (target < 100 ms: {'yes' if ms < 100 else 'NO'})")


if __name__ == "__main__":
    main()
