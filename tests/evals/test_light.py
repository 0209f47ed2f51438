"""``import flotorch_nb.evals`` stays light: scipy, pandas and inspect-ai come only when used."""

from __future__ import annotations

import subprocess
import sys


def test_importing_evals_imports_no_heavy_library() -> None:
    code = (
        "import sys, flotorch_nb.evals\n"
        "print(sorted(m for m in ('scipy', 'pandas', 'inspect_ai', 'numpy', 'IPython') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
