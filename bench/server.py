"""The benchmark's server: a bare HTTP/1.1 responder, so that what ``bench.py`` measures is the client.

    python bench/server.py [--latency 0.1] [--arrivals] [--no-uvloop] [--rps R] [--tpm T] [--burst S]

It prints ``PORT <n>`` once it listens on 127.0.0.1 and then answers every POST with a canned
chat completion (or, for a body with ``"stream": true``, a canned SSE stream with usage and
``[DONE]``, chunked as a gateway sends it), keeping connections alive. A raw ``asyncio.Protocol``
and no framework: one ``find`` for the end of the head, one for Content-Length, one ``write`` of
pre-built bytes. ``--latency S`` delays each answer by S seconds with ``call_later`` (the loop never
blocks, so 256 requests in flight all wait the same S). ``GET /_stats`` answers
``{"requests": n, "connections": c, "cpu_s": s}`` (requests answered, connections accepted, CPU
seconds this process used), from which the benchmark computes the server's capacity; with
``--arrivals`` also ``"arrivals"``, the ``time.monotonic()`` of every request's arrival, so that
``bench_batch.py`` can check a rate limit where it matters, at the server. uvloop is used when it is
installed. Both benchmarks use this one responder.

Hidden limits (``bench_auto.py``): ``--rps R`` lets R requests a second through and ``--tpm T`` T
tokens a minute (each answer counts its usage, 45 tokens), each a bucket refilling steadily that
holds ``--burst`` seconds of it (1 s by default). A request beyond either is answered at once with a
429 and, as OpenAI-compatible gateways send them, ``retry-after`` (whole seconds), ``retry-after-ms``
and ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; every answer carries the
``x-ratelimit-*`` headers of the limits set (``--no-rate-headers``: none, only ``retry-after``).
``/_stats`` then also counts ``"limited"``, the 429s sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Any, ClassVar

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench/model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "pong " * 20},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 25, "completion_tokens": 20, "total_tokens": 45},
}


def _answer(body: bytes, content_type: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nx-request-id: req-bench\r\n\r\n"
        + body
    )


def _stream_answer() -> bytes:
    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "model": "bench/model",
            "choices": [choice],
        }

    events = [chunk({"role": "assistant"})]
    events += [chunk({"content": "pong "}) for _ in range(20)]
    events.append(chunk({}, "stop"))
    events.append(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": COMPLETION["usage"],
        }
    )
    datas = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(d), d) for d in datas) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
    return head + b"x-request-id: req-bench\r\n\r\n" + body


PLAIN = _answer(json.dumps(COMPLETION).encode(), b"application/json")
STREAM = _stream_answer()
TOKENS = COMPLETION["usage"]["total_tokens"]  # type: ignore[index]
LIMITED_BODY = json.dumps(
    {"error": {"message": "Rate limit reached; try again later", "type": "rate_limit_exceeded"}}
).encode()


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.3g}s" if minutes else f"{rest:.3g}s"


class Bucket:
    """A budget refilling steadily at ``rate`` a second, holding at most ``capacity``."""

    def __init__(self, name: str, rate: float, capacity: float) -> None:
        self.name, self.rate, self.capacity = name, rate, capacity
        self.level, self.at = capacity, time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0: it fits now)."""
        return max(0.0, (cost - self.level) / self.rate)

    def headers(self) -> bytes:
        reset = (self.capacity - self.level) / self.rate
        return (
            f"x-ratelimit-limit-{self.name}: {int(self.capacity)}\r\n"
            f"x-ratelimit-remaining-{self.name}: {max(0, int(self.level))}\r\n"
            f"x-ratelimit-reset-{self.name}: {duration(reset)}\r\n"
        ).encode()


class Limits:
    """The hidden limits: requests a second and tokens a minute, as buckets (see the module docstring)."""

    buckets: ClassVar[list[tuple[Bucket, float]]] = []
    headers = True
    limited = 0

    @classmethod
    def set(cls, rps: float | None, tpm: float | None, burst: float, headers: bool) -> None:
        cls.headers = headers
        if rps:
            cls.buckets.append((Bucket("requests", rps, max(1.0, rps * burst)), 1.0))
        if tpm:
            cls.buckets.append((Bucket("tokens", tpm / 60, max(TOKENS, tpm / 60 * burst)), TOKENS))

    @classmethod
    def check(cls) -> bytes | None:
        """None: let it through (and count it); else the 429 to send."""
        now = time.monotonic()
        wait = 0.0
        for bucket, cost in cls.buckets:
            bucket.refill(now)
            wait = max(wait, bucket.wait(cost))
        if wait <= 0:
            for bucket, cost in cls.buckets:
                bucket.level -= cost
            return None
        cls.limited += 1
        head = (
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
            + f"retry-after: {max(1, math.ceil(wait))}\r\n".encode()
            + f"retry-after-ms: {math.ceil(wait * 1000)}\r\n".encode()
        )
        return head + cls._headers() + b"content-length: %d\r\n\r\n%s" % (len(LIMITED_BODY), LIMITED_BODY)

    @classmethod
    def _headers(cls) -> bytes:
        return b"".join(bucket.headers() for bucket, _ in cls.buckets) if cls.headers else b""

    @classmethod
    def stamp(cls, reply: bytes) -> bytes:
        """``reply`` with the limits' headers after its status line."""
        if not cls.buckets or not cls.headers:
            return reply
        line = reply.index(b"\r\n") + 2
        return reply[:line] + cls._headers() + reply[line:]


class Responder(asyncio.Protocol):
    """One connection: parse each request's head and body length, answer it; keep the connection."""

    answered = 0  # class-wide: all connections of the process
    connections = 0
    #: Arrival times of the requests answered, when ``--arrivals`` asked for them (else None).
    arrivals: list[float] | None = None

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = bytearray()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Responder.connections += 1

    def data_received(self, data: bytes) -> None:
        if self.buffer:  # the rest of a request that came in pieces
            self.buffer += data
            data, self.buffer = bytes(self.buffer), bytearray()
        start = 0
        while (end := data.find(b"\r\n\r\n", start)) >= 0:
            at = data.find(b"ength:", start, end)  # Content-Length, in either case
            length = int(data[at + 6 : data.find(b"\r\n", at, end + 2)]) if at >= 0 else 0
            if end + 4 + length > len(data):
                break
            self.answer(data, start, end + 4, end + 4 + length)
            start = end + 4 + length
        if start < len(data):
            self.buffer += data[start:]

    def answer(self, data: bytes, start: int, body: int, stop: int) -> None:
        """Answer the request in ``data[start:stop]`` (its body starts at ``body``)."""
        if data.startswith(b"GET /_stats", start):
            stats: dict[str, object] = {
                "requests": Responder.answered,
                "connections": Responder.connections,
                "cpu_s": time.process_time(),
            }
            if Responder.arrivals is not None:
                stats["arrivals"] = Responder.arrivals
            if Limits.buckets:
                stats["limited"] = Limits.limited
            self.send(_answer(json.dumps(stats).encode(), b"application/json"), 0.0)
            return
        if Limits.buckets and (refused := Limits.check()) is not None:
            self.send(refused, 0.0)  # a gateway refuses at once
            return
        Responder.answered += 1
        if Responder.arrivals is not None:
            Responder.arrivals.append(time.monotonic())
        streamed = data.find(b'"stream":', body, stop) >= 0  # only stream requests carry it
        reply = STREAM if streamed else PLAIN
        self.send(Limits.stamp(reply) if Limits.buckets else reply, self.latency)

    def send(self, reply: bytes, latency: float) -> None:
        assert self.transport is not None
        if latency:
            asyncio.get_running_loop().call_later(latency, self._write, reply)
        else:
            self.transport.write(reply)

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(latency: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Responder(latency), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    # Bounded: the benchmark terminates it, and it ends by itself if forgotten.
    await asyncio.sleep(600)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--arrivals", action="store_true", help="log each request's arrival time (GET /_stats shows them)"
    )
    parser.add_argument(
        "--no-uvloop", action="store_true", help="the stdlib event loop even if uvloop is here"
    )
    parser.add_argument("--rps", type=float, help="hidden limit: requests a second (429 beyond)")
    parser.add_argument("--tpm", type=float, help="hidden limit: tokens a minute (429 beyond)")
    parser.add_argument("--burst", type=float, default=1.0, help="seconds of each limit a bucket holds")
    parser.add_argument(
        "--no-rate-headers", action="store_true", help="no x-ratelimit-* headers (429s keep Retry-After)"
    )
    args = parser.parse_args()
    Limits.set(args.rps, args.tpm, args.burst, not args.no_rate_headers)
    if args.arrivals:
        Responder.arrivals = []
    runner = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
    print(f"LOOP {'uvloop' if runner is not asyncio.run else 'asyncio'}", file=sys.stderr, flush=True)
    runner(serve(args.latency))


if __name__ == "__main__":
    main()
