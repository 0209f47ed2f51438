"""Dock a widget in JupyterLab's side area, so it stays in view while the notebook scrolls.

jupyterlab-sidecar (the ``sidecar`` package, from the Jupyter widgets project) provides ``Sidecar``:
an ``Output`` widget that JupyterLab shows as a panel of its own (by default in the right-hand area)
instead of in the cell. Whatever is displayed into it appears there; the widget keeps working as in
the cell (the chat panel's requests still run on the kernel's loop). Closing the side panel, or
:func:`undock`, closes the ``Sidecar``; the docked widget itself is left alone.

Installed with the ``notebook`` extra; imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ANCHORS", "dock", "undock"]

#: Where JupyterLab may put the panel (jupyterlab-sidecar's ``anchor``).
ANCHORS = ("right", "split-right", "split-left", "split-top", "split-bottom", "tab-before", "tab-after")


def dock(widget: Any, title: str = "FloTorch chat", *, anchor: str = "right") -> Any:
    """Show ``widget`` in a new JupyterLab side panel titled ``title``; returns the ``Sidecar``.

    The widget is placed into the sidecar's outputs directly (not through ``with sidecar:``), so
    docking works from any thread or callback, not only while a cell is executing.
    """
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
    try:
        from sidecar import Sidecar
    except ImportError:
        raise ImportError(
            "docking needs jupyterlab-sidecar: pip install 'flotorch_nb[notebook]' (or sidecar)"
        ) from None
    panel = Sidecar(title=str(title), anchor=anchor)
    panel.add_class("flotorch-dock")
    panel.append_display_data(widget)
    return panel


def undock(panel: Any) -> None:
    """Close a panel made by :func:`dock` (JupyterLab removes it from the side area)."""
    panel.clear_output()
    panel.close()
