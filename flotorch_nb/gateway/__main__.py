"""``python -m flotorch_nb.gateway`` / ``flotorch-gateway``: serve the offline gateway until SIGINT/SIGTERM.

Prints one banner line with the real URL (also for ``--port 0``) so scripts can wait for it, and
exits with status 0 on SIGINT or SIGTERM after a graceful shutdown. The API key is never printed.
Request bodies are never kept (a server runs for hours); counts per request are, at
``GET /_offline/requests/counts``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from ._app import create_app
from ._models import OFFLINE_MODELS
from ._ratelimit import RateLimit, RateLimiter
from ._server import base_url, bind_socket, make_server
from ._wire import between_or

BANNER = (
    "FloTorch OFFLINE gateway (deterministic local models, no real LLM) listening on {url} — models: {models}"
)


def _seconds(text: str) -> float:
    seconds = between_or(float(text))
    if seconds is None:
        raise argparse.ArgumentTypeError("must be a finite number of seconds >= 0")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flotorch-gateway",
        description="Serve FloTorch's OpenAI-compatible chat API offline, with deterministic local models.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free one (default: 8765)"
    )
    for option, what in (
        ("--token-delay", "seconds between streamed chunks"),
        ("--latency", "seconds to wait before the first byte of every answer, like a real model"),
    ):
        parser.add_argument(option, type=_seconds, default=0.0, metavar="S", help=f"{what} (default: 0)")
    parser.add_argument(
        "--api-key", default=None, metavar="K", help="accept only this Bearer key (default: any)"
    )
    parser.add_argument("--rpm", type=int, default=None, help="hidden requests per window per key")
    parser.add_argument("--tpm", type=int, default=None, help="hidden tokens per window per key")
    parser.add_argument(
        "--rate-window", type=_seconds, default=60.0, metavar="S", help="the limits' window (default: 60)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (default: warning)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        limit = (
            RateLimit(args.rpm, args.tpm, args.rate_window)
            if args.rpm is not None or args.tpm is not None
            else None
        )
    except ValueError as exc:
        print(f"flotorch-gateway: {exc}", file=sys.stderr)
        return 2
    app = create_app(
        api_key=args.api_key,
        token_delay=args.token_delay,
        latency=args.latency,
        limiter=RateLimiter(limit),
    )
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"flotorch-gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    from uvicorn.config import LOGGING_CONFIG

    server = make_server(app, log_level=args.log_level, log_config=LOGGING_CONFIG)

    def stop(signum: int, frame: FrameType | None) -> None:
        # First signal: graceful shutdown; a second SIGINT abandons open connections.
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    url = base_url(args.host, sock.getsockname()[1])
    _say(BANNER.format(url=url, models=", ".join(OFFLINE_MODELS)))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _say(line: str) -> None:
    try:
        print(line, flush=True)
    except UnicodeEncodeError:  # a non-UTF-8 console: keep the line, lose the dash
        print(line.replace("—", "-"), flush=True)


if __name__ == "__main__":
    sys.exit(main())
