"""``python -m flotorch_nb.replay record-notebooks``: regenerate the bundled recordings."""

import sys

from . import main

sys.exit(main())
