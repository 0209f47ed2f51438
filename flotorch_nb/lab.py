"""``python -m flotorch_nb.lab``: JupyterLab on ``notebooks/`` with the gateway it needs.

The launcher lives in the notebook layer (``flotorch_nb.notebook.lab``); this module keeps the
documented command and import path.
"""

import sys

from .notebook.lab import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
