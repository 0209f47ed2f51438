"""Where the teaching notebooks live and the series they form."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


NOTEBOOKS = ROOT / "notebooks"


RECORDINGS = NOTEBOOKS / "recordings"


SERIES = [
    "01_quickstart",
    "02_magics",
    "03_chat_panel",
    "04_structured_output",
    "05_tool_calling",
    "06_streaming_and_async",
    "07_batch",
    "08_compare_and_cost",
    "09_tools",
    "10_evaluate",
    "11_production",
]
