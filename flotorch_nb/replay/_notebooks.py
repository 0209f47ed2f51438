"""``python -m flotorch_nb.replay record-notebooks``: run the teaching notebooks and record their exchanges.

Imports nbformat and nbclient only when run, so the replay transports stay light.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from .._config import ENV_API_KEY, ENV_BASE_URL, ENV_RECORD, ENV_REPLAY

__all__ = ["main", "record_notebooks"]


def record_notebooks(
    notebooks: Sequence[Path], recordings: Path, *, timeout: float = 120.0
) -> dict[str, int]:
    """Run each notebook with FLOTORCH_RECORD=<recordings>/<stem>; return the file count per notebook.

    Old files go first, so a directory holds exactly what its notebook asks today. Kernels inherit the
    environment: a live gateway if FLOTORCH_API_KEY/FLOTORCH_BASE_URL are set, else the embedded one.
    """
    import nbformat
    from nbclient import NotebookClient

    counts: dict[str, int] = {}
    for notebook in notebooks:
        target = (recordings / notebook.stem).resolve()
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.json"):
            old.unlink()
        env = {k: v for k, v in os.environ.items() if k != ENV_REPLAY}
        env[ENV_RECORD] = str(target)
        nb = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
        cwd = str(notebook.parent.resolve())
        NotebookClient(nb, timeout=timeout, kernel_name="python3").execute(cwd=cwd, env=env)
        counts[notebook.stem] = len(list(target.glob("*.json")))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flotorch_nb.replay record-notebooks [--notebooks DIR] [--out DIR] [NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m flotorch_nb.replay",
        description="Record gateway exchanges to plain JSON files, and answer from them later.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record-notebooks", help="run the notebooks and record their gateway exchanges")
    rec.add_argument("names", nargs="*", help="notebook stems or files (default: all numbered ones)")
    rec.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="notebook directory")
    rec.add_argument("--out", type=Path, help="recordings directory (default: NOTEBOOKS/recordings)")
    rec.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = [Path(n) if n.endswith(".ipynb") else args.notebooks / f"{n}.ipynb" for n in args.names]
    paths = paths or sorted(args.notebooks.glob("[0-9]*.ipynb"))
    if not paths:
        parser.error(f"no notebooks found in {args.notebooks}")
    live = bool(os.environ.get(ENV_API_KEY) and os.environ.get(ENV_BASE_URL))
    print(f"recording against the {'LIVE' if live else 'embedded OFFLINE'} gateway", flush=True)
    counts = record_notebooks(paths, args.out or args.notebooks / "recordings", timeout=args.timeout)
    print("\n".join(f"{stem}: {count} recordings" for stem, count in counts.items()))
    return 0
