"""The notebook layer: everything that exists because the client runs inside Jupyter.

Pure of the notebook stack (importable and testable without IPython or ipywidgets):
``session`` (configuration overrides, the ``%%flotorch`` conversation, and the ledger attached to
every session client; ``reset()`` returns the whole layer to a clean state), ``conversation`` (the
one conversation model of the magic and the chat panel, and its views), ``ledger`` (usage and
budget, as client hooks; ``Totals``), ``chat`` (the chat panel's widget-free logic), ``pacing``
(when a streaming answer is redrawn), ``views`` and ``commands`` (what the magics show and do),
``interpolate`` and ``autostart`` (the embedded gateway when nothing is configured).

The shells that import the notebook stack: ``magics``, ``answer_cell`` and ``tool_cell`` (IPython),
``widgets``, ``panel_view``, ``approval`` and ``tool_turn`` (ipywidgets), and ``lab`` (the
JupyterLab launcher).

The client core (``flotorch_nb.*``) never imports this package; this package imports the core.
"""
