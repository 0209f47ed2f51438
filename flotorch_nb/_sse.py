"""Pure decoding of a streamed chat completion: SSE event data in, text deltas and a final result out.

httpx2's ``EventSource`` turns bytes into events; this module owns what the events mean (OpenAI's
``chat.completion.chunk`` protocol): ``[DONE]``, in-band ``{"error": ...}`` events, tool-call fragments
and the usage chunk. A stream that ends before ``[DONE]`` or carries a line that is not JSON raises
``StreamError``: a silently short answer is the one outcome a caller can never detect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._errors import StreamError
from ._response import LLMResponse, ResponseInfo, ToolCall, build_response, error_message

DONE = "[DONE]"


class StreamAccumulator:
    """Feeds on the ``data`` of each event and remembers everything needed for the final response."""

    def __init__(self) -> None:
        self.done = False
        self._parts: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish_reason: str | None = None
        self._meta: dict[str, Any] = {}
        self._usage: Any = None
        self._chunks = 0

    @property
    def text(self) -> str:
        """The text received so far (what a stopped stream leaves behind)."""
        return "".join(self._parts)

    def feed(self, data: str) -> str:
        """Consume one event's data; return the new text (possibly empty)."""
        if self.done:
            return ""
        if not data.strip():  # an empty event, as some proxies send to keep a connection alive
            return ""
        if data.strip() == DONE:
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except (json.JSONDecodeError, RecursionError):
            raise StreamError(
                f"the stream carried a line that is not JSON after {self._chunks} chunks: {data[:120]!r}"
            ) from None
        if not isinstance(chunk, Mapping):
            raise StreamError(f"the stream carried a non-object chunk: {data[:120]!r}")
        if chunk.get("error") is not None:
            raise StreamError(f"the gateway reported an error mid-stream: {error_message(chunk)}")
        self._chunks += 1
        for key in ("id", "model", "created", "system_fingerprint"):
            if key in chunk and key not in self._meta:
                self._meta[key] = chunk[key]
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise StreamError(f"the stream carried 'choices' that is not a list: {data[:120]!r}")
        # With n > 1 the choices of one answer arrive interleaved; the answer is choice 0's, as in
        # invoke(), so the others must not be mixed into it.
        choice = next(
            (c for c in choices if isinstance(c, Mapping) and c.get("index", 0) == 0),
            None,
        )
        if choice is None:
            return ""
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        if not isinstance(delta, Mapping):
            return ""
        fragments = delta.get("tool_calls") or []
        if not isinstance(fragments, list):
            raise StreamError(f"the stream carried 'tool_calls' that is not a list: {data[:120]!r}")
        for fragment in fragments:
            self._add_tool_fragment(fragment)
        text = delta.get("content")
        if isinstance(text, str) and text:
            self._parts.append(text)
            return text
        return ""

    def _add_tool_fragment(self, fragment: object) -> None:
        if not isinstance(fragment, Mapping):
            raise _malformed(fragment)
        index = fragment.get("index", len(self._tools))
        function = fragment.get("function") or {}
        if isinstance(index, bool) or not isinstance(index, int) or not isinstance(function, Mapping):
            raise _malformed(fragment)
        name, arguments = function.get("name"), function.get("arguments")
        if not isinstance(name, str | None) or not isinstance(arguments, str | None):
            raise _malformed(fragment)
        slot = self._tools.setdefault(index, {"id": "", "name": "", "arguments": []})
        if fragment.get("id"):
            slot["id"] = str(fragment["id"])
        if name:
            slot["name"] += name
        if arguments:
            slot["arguments"].append(arguments)

    def finish(self, info: ResponseInfo) -> LLMResponse:
        """The complete ``LLMResponse`` once the stream has ended; refuses a stream cut short."""
        if not self.done:
            raise StreamError(
                f"the stream ended after {self._chunks} chunks without [DONE]: the answer is incomplete"
                + (f" (request id {info.request_id})" if info.request_id else "")
            )
        tool_calls = [
            ToolCall(slot["id"], slot["name"], "".join(slot["arguments"]))
            for _, slot in sorted(self._tools.items())
        ]
        if any(not call.name for call in tool_calls):
            raise StreamError("the stream carried a tool call without a function name")
        content = self.text
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if tool_calls:
            message["tool_calls"] = [call.to_dict() for call in tool_calls]
        raw = {
            **self._meta,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason}],
            "usage": self._usage,
        }
        return build_response(
            raw, content=content, tool_calls=tool_calls, finish_reason=self._finish_reason, info=info
        )


def _malformed(fragment: object) -> StreamError:
    return StreamError(f"the stream carried a malformed tool call fragment: {fragment!r:.120}")
