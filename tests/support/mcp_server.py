"""A real MCP server built with the SDK's ``MCPServer`` (FastMCP in mcp 1.x), for tests/tools/test_mcp.py.

``python mcp_server.py`` serves two tools over stdio: ``add`` and ``explode`` (which raises).
``--exit`` exits at once, ``--hang`` never starts serving, ``--http PORT`` serves streamable HTTP on
127.0.0.1. This module holds no tests.
"""

from __future__ import annotations

import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("flotorch-test")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two whole numbers."""
    return f"{a} + {b} = {a + b}"


@server.tool()
def explode(reason: str) -> str:
    """Always fails, with the reason given."""
    raise RuntimeError(f"exploded: {reason}")


if __name__ == "__main__":
    if "--exit" in sys.argv:
        print("refusing to start", file=sys.stderr)
        sys.exit(3)
    if "--hang" in sys.argv:
        time.sleep(3600)
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        server.run("streamable-http", host="127.0.0.1", port=port)
    else:
        server.run()
