"""The installed package as a user meets it: the console script, and an import that stays light."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest


def test_the_flotorch_gateway_console_script_serves_and_stops() -> None:
    script = shutil.which("flotorch-gateway", path=str(Path(sys.executable).parent))
    assert script, "pip install -e . puts the flotorch-gateway script next to python"
    proc = subprocess.Popen(
        [script, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # the banner is printed once the port is bound
        assert "OFFLINE gateway" in banner
        match = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
        assert match, banner
        health = httpx2.get(f"{match.group(0)}/health", timeout=5)
        assert health.json()["gateway"] == "offline"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("module", ["flotorch_nb", "flotorch_nb.llm", "flotorch_nb.replay"])
def test_importing_the_client_loads_no_notebook_or_heavy_stack(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "print(','.join(m for m in ('IPython', 'ipywidgets', 'traitlets', 'pydantic', 'httpx2', "
        "'markdown_it', 'nh3', 'starlette', 'uvicorn', 'tqdm', 'pandas', 'dask', 'sqlite3', 'mcp',"
        " 'pydantic_ai') "
        "if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert loaded.stdout.strip() == ""
