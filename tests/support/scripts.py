"""Running a short Python script in a fresh interpreter, as a user's script or a worker would run; this
module holds no tests.

What is only visible at an interpreter's end (aiohttp's "Unclosed client session", ``ResourceWarning``s
printed as objects are collected, sockets still open) or only between processes (two of them opening
one SQLite file) needs a process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Prepended to scripts that count their sockets: ``gateway_sockets(url)`` is how many TCP sockets this
#: process holds open to the gateway's port (from /proc: no psutil needed), whatever their state.
SOCKETS = """
import os as _os

def gateway_sockets(url):
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    inodes = set()
    for fd in _os.listdir("/proc/self/fd"):
        try:
            target = _os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    found += 1
    return found
"""


def run_script(
    source: str, *args: str, flags: tuple[str, ...] = (), timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` (dedented) with this interpreter, the project on ``sys.path``, no FLOTORCH_*
    variables from the developer's environment; ``flags`` go before the script (``-X dev``...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )
