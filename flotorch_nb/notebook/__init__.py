"""The notebook layer: everything that exists because the client runs inside Jupyter.

``session`` (configuration overrides, the conversation, the usage ledger and budget shared by one
kernel), ``chat`` (the chat panel's widget-free logic), ``views`` and ``commands`` (what the magics
show and do, without IPython), ``interpolate``, ``autostart`` (the embedded gateway when nothing is
configured), and the three shells that import the notebook stack: ``magics`` (IPython), ``widgets``
(ipywidgets) and ``lab`` (the JupyterLab launcher).

The client core (``flotorch_nb.*``) never imports this package; this package imports the core.
"""
