"""``from flotorch_nb.widgets import ChatPanel``: the documented home of the chat panel.

The panel lives in the notebook layer (``flotorch_nb.notebook.widgets``); this module only keeps the
public import path, and imports ipywidgets only when it is itself imported.
"""

from .notebook.widgets import ChatBusyError, ChatPanel

__all__ = ["ChatBusyError", "ChatPanel"]
