"""In a real kernel (nbclient, as nbmake runs notebooks): a failing ``%%flotorch`` cell still fails
the run but shows one line, and a prompt holding text UTF-8 cannot encode is answered and shown."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CELLS = [
    "%load_ext flotorch_nb",
    "name = 'report\\udcff.txt'  # what os.listdir() gives for a badly encoded file name",
    "%%flotorch -m offline/echo\nSummarize {name}",
    "%flotorch history",
    "%flotorch budget 1",
    "%%flotorch\nOne more question",
]


def test_a_failing_cell_fails_the_run_in_one_line_and_odd_text_is_shown(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    client = NotebookClient(nb, timeout=90, kernel_name="python3", startup_timeout=60)
    with pytest.raises(CellExecutionError, match="BudgetExceededError"):
        client.execute(cwd=str(tmp_path), env=env)
    outputs = [cell.outputs for cell in nb.cells]

    (answer,) = outputs[2]  # displayed by the kernel, so its text reached the frontend
    assert answer.output_type == "execute_result"
    assert "Summarize report\ufffd.txt" in answer.data["text/plain"]
    (history,) = outputs[3]
    assert "report\ufffd.txt" in history.data["text/plain"]

    (error,) = outputs[5]
    assert error.output_type == "error" and error.ename == "BudgetExceededError"
    (line,) = error.traceback  # one line, not frames of library code
    assert re.sub(r"\x1b\[[0-9;]*m", "", line).startswith("BudgetExceededError: token budget spent")
    nbformat.validate(nb)
