"""The benchmark's server: a bare HTTP/1.1 responder, so that what ``bench.py`` measures is the client.

    python bench/server.py [--latency 0.1] [--arrivals] [--no-uvloop]

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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

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
            self.send(_answer(json.dumps(stats).encode(), b"application/json"), 0.0)
            return
        Responder.answered += 1
        if Responder.arrivals is not None:
            Responder.arrivals.append(time.monotonic())
        streamed = data.find(b'"stream":', body, stop) >= 0  # only stream requests carry it
        self.send(STREAM if streamed else PLAIN, self.latency)

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
    args = parser.parse_args()
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
