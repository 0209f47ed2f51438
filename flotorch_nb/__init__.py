"""flotorch_nb: a notebook-first toolkit for FloTorch's LLM gateway.

``from flotorch_nb import FlotorchLLM`` gives the seed SDK's client on a production transport;
``%load_ext flotorch_nb`` adds the ``%%flotorch`` / ``%flotorch`` magics. Importing this package never
imports IPython, ipywidgets or traitlets: the notebook layer loads only when the extension does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    ConflictError,
    FlotorchError,
    HookError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ReplayFileError,
    ReplayMissError,
    ResponseError,
    ServerError,
    StreamError,
    StructuredOutputError,
)
from ._pipeline._hooks import CallRequest, CallResult, Hooks, call_label
from ._response import LLMResponse, ToolCall, Usage
from ._retry import RetryPolicy
from ._version import __version__
from .llm import AsyncChatStream, ChatStream, FlotorchLLM
from .schema import convert_pydantic_to_custom_json_schema

if TYPE_CHECKING:
    from ._records import provenance
    from .batch import (
        BatchCancelled,
        BatchError,
        BatchInterrupted,
        BatchItem,
        BatchResult,
        ItemCancelledError,
    )
    from .cache import AnswerCache, CacheError, CacheWriteWarning
    from .calllog import CallLogError, logs
    from .compare import Comparison
    from .pricing import Price, PriceTable
    from .tools import MaxStepsError, Tool, ToolRun, ToolRunCancelled, ToolRunInterrupted, ToolStep, tool

#: Public names whose modules load on first use, so ``import flotorch_nb`` stays light.
_LAZY = {
    "AnswerCache": "cache",
    "BatchCancelled": "batch",
    "BatchError": "batch",
    "BatchInterrupted": "batch",
    "BatchItem": "batch",
    "BatchResult": "batch",
    "CacheError": "cache",
    "CacheWriteWarning": "cache",
    "CallLogError": "calllog",
    "Comparison": "compare",
    "ItemCancelledError": "batch",
    "Price": "pricing",
    "PriceTable": "pricing",
    "provenance": "_records",
    "logs": "calllog",
    "MaxStepsError": "tools",
    "Tool": "tools",
    "ToolRun": "tools",
    "ToolRunCancelled": "tools",
    "ToolRunInterrupted": "tools",
    "ToolStep": "tools",
    "tool": "tools",
}

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AnswerCache",
    "AsyncChatStream",
    "AuthenticationError",
    "BadRequestError",
    "BatchCancelled",
    "BatchError",
    "BatchInterrupted",
    "BatchItem",
    "BatchResult",
    "BudgetExceededError",
    "CacheError",
    "CacheWriteWarning",
    "CallLogError",
    "CallRequest",
    "CallResult",
    "ChatStream",
    "Comparison",
    "ConfigurationError",
    "ConflictError",
    "FlotorchError",
    "FlotorchLLM",
    "HookError",
    "Hooks",
    "InvalidRequestError",
    "ItemCancelledError",
    "LLMResponse",
    "MaxStepsError",
    "NotFoundError",
    "PermissionDeniedError",
    "Price",
    "PriceTable",
    "RateLimitError",
    "ReplayFileError",
    "ReplayMissError",
    "ResponseError",
    "RetryPolicy",
    "ServerError",
    "StreamError",
    "StructuredOutputError",
    "Tool",
    "ToolCall",
    "ToolRun",
    "ToolRunCancelled",
    "ToolRunInterrupted",
    "ToolStep",
    "Usage",
    "__version__",
    "call_label",
    "convert_pydantic_to_custom_json_schema",
    "logs",
    "provenance",
    "tool",
]


def __getattr__(name: str) -> Any:
    """Load the names in ``_LAZY`` (comparison, pricing, batch, cache) when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flotorch_nb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flotorch_nb``: register the magics (IPython is imported only now)."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext flotorch_nb``."""
    from .notebook.magics import unload_ipython_extension as unload

    unload(ipython)
