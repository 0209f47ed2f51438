"""``Client``: what the many-call engines (``batch/``, ``compare/``) need from a client, as a protocol.

They are given a ``FlotorchLLM`` and ride its own send loop (retries, redirects, hooks, gates and the
answer cache live there once); naming it through this protocol instead of importing ``llm`` keeps
the imports one-way (``llm`` -> ``_many`` -> ``batch`` -> this leaf), type-only arrows included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._pipeline._hooks import Hooks
    from ._pipeline._stream import AsyncChatStream
    from ._response import LLMResponse
    from ._retry import RetryPolicy
    from .cache import AnswerCache

__all__ = ["Client"]


class Client(Protocol):
    """The part of ``FlotorchLLM`` that batch and comparison use (see the module docstring)."""

    retry: RetryPolicy
    hooks: Hooks
    cache: AnswerCache | None

    @property
    def model_id(self) -> str: ...

    @property
    def gateway_key(self) -> str:
        """The base URL and the key's fingerprint (never the key)."""
        ...

    def check(
        self,
        messages: Any,
        tools: Any = None,
        response_format: Any = None,
        extra_body: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Refuse a call as ``invoke`` would, without sending it."""
        ...

    async def ainvoke(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> LLMResponse:
        """One call through the client's send loop."""
        ...

    def astream(
        self,
        messages: list[dict[str, Any]],
        tools: list[Any] | None = None,
        response_format: Any = None,
        extra_body: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncChatStream:
        """One streamed call through the client's send loop."""
        ...

    def copy(self, **overrides: Any) -> Client:
        """A client like this one with some settings replaced (pools of its own)."""
        ...

    def with_model(self, model_id: str) -> Client:
        """``copy(model_id=model_id)``."""
        ...

    async def aclose(self) -> None:
        """Close the pools this client opened."""
        ...
