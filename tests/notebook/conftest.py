"""Fixtures of the notebook tests: an InteractiveShell with the extension loaded, and ChatPanel makers."""

from __future__ import annotations

from tests.support.shell import shell
from tests.support.widgets import make_panel

__all__ = ["make_panel", "shell"]
