"""What the repository itself holds: nothing a leak scan would take for a real API key."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: An OpenAI-style key in one piece: "sk-" and at least eight more key characters.
KEY_SHAPED = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{8,}")


def test_no_tracked_file_holds_a_key_shaped_string() -> None:
    """Test keys are split ("sk-" + "..."); a formatter that joins them, or a pasted key, fails here."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    found = []
    for name in filter(None, files):
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{name}: {m.group(0)}" for m in KEY_SHAPED.finditer(text)]
    assert not found, found
