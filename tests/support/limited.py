"""A gateway with a hidden rate limit for the ``concurrency="auto"`` tests: ``bench/server.py`` (the
benchmark's bare responder, one implementation of the limits) started on a loopback port in its own
process with ``--rps``/``--tpm``, answering 429 with ``retry-after(-ms)`` and ``x-ratelimit-*``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2

SERVER = Path(__file__).resolve().parents[2] / "bench" / "server.py"

__all__ = ["limited_server", "server_stats"]


@contextmanager
def limited_server(latency: float, *options: str) -> Iterator[str]:
    """The base URL of ``bench/server.py --latency latency *options`` (stopped on exit)."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--latency", str(latency), "--no-uvloop", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), f"the limited server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_stats(url: str) -> dict[str, Any]:
    """What the server counted: ``requests`` answered, ``limited`` (429s sent)."""
    return httpx2.get(f"{url}/_stats", timeout=10).json()
