"""Evaluation benchmark (issue 16 item 9): ``evaluate`` against a plain batch of the same calls.

    python bench/bench_eval.py [--samples 1000] [--concurrency 64] [--latency 0.1] [--quick]

1,000 samples x 3 models with one deterministic scorer (``exact_match``) and a 3-vote judge is
3,000 answers + 9,000 judge calls = 12,000 calls. The same responder (``bench/server.py``, run here
with a canned answer that is also a valid judge grade, so no call fails or is re-asked) answers a
plain ``llm.batch`` of 12,000 prompts at the same concurrency. Reported: both wall times and their
ratio (the target: evaluate within 1.15x of the batch), the CPU seconds this process spent on each
(the steadier figure when other work shares the machine: at 100 ms a run is latency-bound only while
the client keeps up), the calls the responder answered for each, and the peak RSS growth of this
process during the evaluation (target: under 200 MiB). The evaluation runs first, so the peak it
reaches is its own. Figures are the coordinator's to measure on a quiet machine; ``--quick`` (100
samples) only shows that it runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import start_server, stop

GRADE = json.dumps({"grade": "correct", "explanation": "pong"})


def serve(latency: float) -> None:
    """``bench/server.py``'s responder, answering every request with ``GRADE`` as the content."""
    import server

    completion = dict(server.COMPLETION)
    completion["choices"] = [
        {"index": 0, "message": {"role": "assistant", "content": GRADE}, "finish_reason": "stop"}
    ]
    server.PLAIN = server._answer(json.dumps(completion).encode(), b"application/json")
    sys.argv = [sys.argv[0], "--latency", str(latency)]
    server.main()


def answered(url: str) -> int:
    import httpx2

    return int(httpx2.get(f"{url}/_stats", timeout=30).json()["requests"])


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(samples: int, concurrency: int, latency: float) -> dict[str, Any]:
    from flotorch_nb import FlotorchLLM
    from flotorch_nb.evals import evaluate, scorers

    proc, url = start_server(latency, "--serve", script=Path(__file__))
    try:
        models = ["bench/a", "bench/b", "bench/c"]
        data = [{"q": f"question {i}", "key": "pong"} for i in range(samples)]
        with FlotorchLLM("bench/a", "bench-key", url, cache=False) as llm:
            llm.batch([f"warm {i}" for i in range(concurrency)], concurrency=concurrency, progress=False)
            before_rss, before = rss_mib(), answered(url)
            started, cpu = time.perf_counter(), time.process_time()
            result = evaluate(
                data,
                template="{q}",
                target="key",
                models=models,
                scorers=[scorers.exact_match(), scorers.judge("ok?", model="bench/j", votes=3)],
                client=llm,
                concurrency=concurrency,
                progress=False,
            )
            eval_s, eval_cpu = time.perf_counter() - started, time.process_time() - cpu
            eval_calls, peak = answered(url) - before, rss_mib() - before_rss
            prompts = [f"plain {i}" for i in range(eval_calls)]
            before = answered(url)
            started, cpu = time.perf_counter(), time.process_time()
            plain = llm.batch(prompts, concurrency=concurrency, progress=False)
            batch_s, batch_cpu = time.perf_counter() - started, time.process_time() - cpu
            batch_calls = answered(url) - before
    finally:
        stop(proc)
    assert not plain.errors and result.answered == len(result.records)
    return {
        "samples": samples,
        "models": len(models),
        "calls": eval_calls,
        "judge_errors": result.judge_usage["judge"].errors,
        "evaluate_s": round(eval_s, 2),
        "batch_s": round(batch_s, 2),
        "batch_calls": batch_calls,
        "ratio": round(eval_s / batch_s, 3),
        "evaluate_cpu_s": round(eval_cpu, 2),
        "batch_cpu_s": round(batch_cpu, 2),
        "peak_rss_growth_mib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="100 samples: shows that it runs")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.latency)
        return
    samples = 100 if args.quick else args.samples
    figures = run(samples, args.concurrency, args.latency)
    print(json.dumps(figures))
    print(
        f"evaluate {figures['calls']} calls in {figures['evaluate_s']} s, "
        f"plain batch {figures['batch_s']} s: "
        f"ratio {figures['ratio']} (target <= 1.15); CPU {figures['evaluate_cpu_s']} s vs "
        f"{figures['batch_cpu_s']} s; peak RSS growth {figures['peak_rss_growth_mib']} MiB (target < 200)"
    )


if __name__ == "__main__":
    main()
