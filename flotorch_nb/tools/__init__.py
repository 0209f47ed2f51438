"""Python functions as tools, and the loop that runs them (``llm.run`` / ``llm.arun``).

``_schema`` turns a function into the ``tools=`` schema (every call path converts through it while
the call is prepared); ``_loop`` asks the model, runs the functions it calls and sends their results
back until it answers. Imported on first use: ``import flotorch_nb`` does not load pydantic for it.
"""

from ._loop import (
    MaxStepsError,
    QuietView,
    RunView,
    ToolCallRecord,
    ToolRun,
    ToolRunCancelled,
    ToolRunInterrupted,
    ToolStep,
    arun,
    check,
)
from ._schema import Tool, as_tool, tool, wire_tools

__all__ = [
    "MaxStepsError",
    "QuietView",
    "RunView",
    "Tool",
    "ToolCallRecord",
    "ToolRun",
    "ToolRunCancelled",
    "ToolRunInterrupted",
    "ToolStep",
    "arun",
    "as_tool",
    "check",
    "tool",
    "wire_tools",
]
