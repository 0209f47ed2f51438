"""What a person sees of ``result.to_pandas()`` in JupyterLab: a table that fits the cell's output.

pandas' own table of a batch was 1,204 px wide in a 968 px output, its answers right-aligned in tall
ragged columns, a newline shown as a literal ``\\n`` and ``request_id`` cut off at the right edge. The
frame is still a plain DataFrame; the browser must show it narrower than the output, the answer
left-aligned with its line break, and the request id inside the visible area.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from .harness import Lab, open_notebook, run_all, write_notebook
from .test_jupyterlab import cell

pytestmark = pytest.mark.browser

CELLS = [
    "from flotorch_nb import FlotorchLLM\n\nllm = FlotorchLLM('offline/echo')",
    "prompts = ['An old silent pond\\nA frog jumps into the pond\\nSplash! Silence again.'] + "
    "[f'Say {word} in French, please, and nothing else.' for word in ('hello', 'cat', 'bread')]\n"
    "result = llm.batch(prompts, progress=False)\nframe = result.to_pandas()\nframe",
    "type(frame).__name__, list(frame.columns)[:3]",
]
FRAME = 1


def test_a_batch_frame_fits_the_output_with_readable_answers(lab: Lab, page: Page, artifacts: Path) -> None:
    path = write_notebook(lab.root_dir / "e2e_frame.ipynb", CELLS)
    open_notebook(page, lab, path.name)
    run_all(page, len(CELLS), timeout=90)

    output = cell(page, FRAME).locator(".jp-OutputArea-output").last
    table = output.locator("table").first
    area = output.bounding_box()
    box = table.bounding_box()
    assert area is not None and box is not None
    assert box["width"] <= area["width"] + 1, (box, area)  # no horizontal scrolling to read it

    answer = table.locator("tbody tr").first.locator("td").first
    assert answer.evaluate("e => getComputedStyle(e).textAlign") == "left"
    assert answer.evaluate("e => e.getClientRects().length") == 1
    assert "\\n" not in answer.inner_text() and answer.inner_text().count("\n") == 2  # real line breaks
    request_id = table.locator("tbody tr").first.locator("td").nth(3)
    assert request_id.inner_text().startswith("req_")  # the offline gateway's ids
    rid = request_id.bounding_box()
    assert rid is not None and rid["x"] + rid["width"] <= area["x"] + area["width"] + 1  # fully visible
    assert "'DataFrame'" in cell(page, 2).locator(".jp-OutputArea").inner_text()  # still a plain DataFrame
    cell(page, FRAME).screenshot(path=str(artifacts / "e2e-batch-frame.png"))
