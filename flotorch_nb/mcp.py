"""MCP servers as tools: ``tools=[mcp_tools("python", "server.py")]`` or ``mcp_tools(url=...)``.

Built on the official ``mcp`` SDK (the ``mcp`` extra), imported only here. ``mcp_tools`` connects
once to list the server's tools and returns an ``McpTools``, a ``Toolset`` that ``tools=`` expands
into one ``Tool`` per server tool (its ``inputSchema`` sent as is), so the calls go through the same
``run`` loop, approval and error handling as Python functions.

Session lifetime: every listing and every call opens its own session (spawns the stdio server, or
connects to the URL), inside one ``anyio`` cancel scope with ``timeout``, and closes it before
returning. Nothing outlives a call, whichever event loop runs it (``run`` and ``arun`` may use
different ones), so no task or process is left behind; the cost is a server start per call, and a
stdio server keeps no state between calls.

Failures are typed: a server that cannot start, exits, hangs or breaks the protocol while listing is
an ``MCPServerError`` naming the command (or URL); during a call the same error, or the tool's own
error result (``is_error``), is raised inside the tool, so the loop sends it back to the model as
that call's result, as for a Python tool's exception.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from . import _bridge
from ._errors import FlotorchError, InvalidRequestError
from .tools._schema import Tool, Toolset

__all__ = ["MCPServerError", "MCPToolError", "McpTools", "amcp_tools", "mcp_tools"]

#: Seconds a listing or a call may take, server start included.
DEFAULT_TIMEOUT = 30.0


class MCPServerError(FlotorchError):
    """An MCP server could not be started, exited, hung past the timeout, or broke the protocol."""


class MCPToolError(FlotorchError):
    """An MCP tool answered with an error result (sent back to the model as the call's result)."""


@dataclass(frozen=True)
class _Server:
    """Where the server is: a stdio command or a streamable HTTP URL, and the timeout of each use."""

    command: str | None
    args: tuple[str, ...]
    env: dict[str, str] | None
    url: str | None
    timeout: float

    def __str__(self) -> str:
        if self.url is not None:
            return self.url
        return " ".join((self.command or "", *self.args))

    @contextlib.asynccontextmanager
    async def session(self, errlog: TextIO) -> AsyncIterator[Any]:
        """An initialized ``ClientSession``, closed (and a stdio server stopped) on exit."""
        from mcp import ClientSession

        async with self._streams(errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session

    def _streams(self, errlog: TextIO) -> contextlib.AbstractAsyncContextManager[Any]:
        if self.url is not None:
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(self.url)
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=self.command or "", args=list(self.args), env=self.env)
        return stdio_client(params, errlog=errlog)

    async def use(self, what: str, action: Any) -> Any:
        """``await action(session)`` on a fresh session within ``timeout``; failures as MCPServerError."""
        import anyio

        # The server's stderr goes to a file rather than the notebook's output; its end is quoted
        # when the server fails (a traceback there is usually the reason).
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
            try:
                with anyio.fail_after(self.timeout):
                    async with self.session(errlog) as session:
                        return await action(session)
            except FlotorchError:
                raise
            except TimeoutError:
                problem = f"did not {what} within {self.timeout:g}s"
            except Exception as exc:  # OSError, McpError, a closed stream, an ExceptionGroup of them
                problem = f"failed to {what}: {_describe(exc)}"
            raise MCPServerError(f"MCP server {self} {problem}{_tail(errlog)}")


def _tail(errlog: TextIO, size: int = 600) -> str:
    errlog.seek(0)
    text = errlog.read().strip()
    return f"; its stderr ends: {text[-size:]}" if text else ""


class McpTools(Toolset):
    """The tools of one MCP server, ready for ``tools=[...]`` (each is also in ``.tools``)."""

    def __init__(self, server: _Server, tools: Sequence[Tool]) -> None:
        super().__init__(tuple(tools))
        self.server = server

    def __repr__(self) -> str:
        return f"McpTools({str(self.server)!r}, tools={[t.name for t in self.tools]})"


def mcp_tools(
    command: str | None = None,
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> McpTools:
    """List an MCP server's tools: ``mcp_tools("python", "server.py")`` (stdio) or ``mcp_tools(url=...)``.

    Works from a notebook cell (the listing runs on the background loop). ``env`` is added to the
    server's environment; ``timeout`` bounds the listing and every later call, server start included.
    """
    server = _server(command, args, url, env, timeout)
    return _bridge.run(_list(server))


async def amcp_tools(
    command: str | None = None,
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> McpTools:
    """``mcp_tools`` for async code."""
    return await _list(_server(command, args, url, env, timeout))


def _server(
    command: str | None, args: tuple[str, ...], url: str | None, env: dict[str, str] | None, timeout: float
) -> _Server:
    if (command is None) == (url is None):
        raise InvalidRequestError(
            "mcp_tools needs a command (stdio server) or url= (streamable HTTP), not both"
        )
    if url is not None and args:
        raise InvalidRequestError("mcp_tools(url=...) takes no command arguments")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidRequestError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise InvalidRequestError("env must map names to strings")
    return _Server(command, tuple(map(str, args)), env, url, float(timeout))


async def _list(server: _Server) -> McpTools:
    async def listing(session: Any) -> list[Any]:
        found: list[Any] = []
        cursor = None
        while True:
            from mcp import types

            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            found.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return found

    listed = await server.use("list its tools", listing)
    return McpTools(server, [_tool(server, t) for t in listed])


def _tool(server: _Server, listed: Any) -> Tool:
    """One server tool as a ``Tool``: its schema as the server gave it, its call a fresh session."""
    import pydantic

    name: str = listed.name
    # The server validates the arguments against its schema; ours only parses JSON and keeps them all.
    arguments = pydantic.create_model(f"{name}_arguments", __config__=pydantic.ConfigDict(extra="allow"))
    parameters = dict(listed.input_schema or {"type": "object", "properties": {}})

    async def call(**kwargs: Any) -> str:
        result = await server.use(f"answer {name}", lambda s: s.call_tool(name, kwargs))
        text = _content(result)
        if result.is_error:
            raise MCPToolError(text or f"{name} failed")
        return text

    call.__name__ = name
    description = listed.description or ""
    function: dict[str, Any] = {"name": name, "parameters": parameters}
    if description:
        function["description"] = description
    return Tool(call, name, description, False, arguments, function)


def _content(result: Any) -> str:
    """A call's result as the text the model reads: its text blocks, else its structured content."""
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        import json

        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return ""


def _describe(exc: BaseException) -> str:
    """The innermost message of an exception (task groups wrap the real one in an ExceptionGroup)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
