"""flotorch_nb: a notebook-first toolkit for FloTorch's LLM gateway.

``from flotorch_nb import FlotorchLLM`` gives the seed SDK's client on a production transport;
``%load_ext flotorch_nb`` adds the ``%%flotorch`` / ``%flotorch`` magics. Importing this package never
imports IPython, ipywidgets or traitlets: the notebook layer loads only when the extension does.
"""

from __future__ import annotations

from typing import Any

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
from ._hooks import CallRequest, CallResult, Hooks, call_label
from ._provenance import provenance
from ._response import LLMResponse, ToolCall, Usage
from ._retry import RetryPolicy
from .compare import Comparison
from .llm import AsyncChatStream, ChatStream, FlotorchLLM
from .pricing import Price, PriceTable
from .schema import convert_pydantic_to_custom_json_schema

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChatStream",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
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
    "LLMResponse",
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
    "ToolCall",
    "Usage",
    "__version__",
    "call_label",
    "convert_pydantic_to_custom_json_schema",
    "provenance",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flotorch_nb``: register the magics (IPython is imported only now)."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext flotorch_nb``."""
    from .notebook.magics import unload_ipython_extension as unload

    unload(ipython)
