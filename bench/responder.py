"""A fast loopback chat-completions responder for benchmarks: fixed answer, fixed latency, keep-alive.

Plain asyncio (no framework) so the server is not what a client benchmark measures. Run it in its own
process: ``python bench/responder.py --port 0 --latency 0.1`` prints ``READY <port>``. It counts
requests and logs arrival times (``GET /_stats``), so a rate limit can be checked at the server.
(The transport branch writes a responder of its own in bench/; this one can be replaced by it.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

BODY = json.dumps(
    {
        "id": "bench",
        "object": "chat.completion",
        "model": "bench/model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
ARRIVALS: list[float] = []


class Responder(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            if head.startswith(b"GET /_stats"):
                stats = json.dumps({"count": len(ARRIVALS), "arrivals": ARRIVALS}).encode()
                self.transport.write(  # type: ignore[attr-defined]
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(stats)).encode()
                    + b"\r\n\r\n"
                    + stats
                )
                continue
            ARRIVALS.append(time.monotonic())
            loop = asyncio.get_running_loop()
            loop.call_later(self.latency, self._answer)

    def _answer(self) -> None:
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.write(ANSWER)  # type: ignore[attr-defined]


async def serve(port: int, latency: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Responder(latency), "127.0.0.1", port, backlog=4096)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.latency))
