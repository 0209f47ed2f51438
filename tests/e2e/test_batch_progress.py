"""What a person sees of a batch in JupyterLab: a live progress bar that moves, then one static line.

The kernel runs ``llm.batch`` over 60 prompts against an offline gateway it starts itself with 100 ms
of latency per answer (the shared e2e gateway answers non-streamed calls at once, too quickly to
watch). While the cell runs, a MutationObserver records every state of the cell's output: the tqdm
widget bar must be seen with at least two different counts. When the batch ends, the widget is gone
(its state would not survive a save) and the static line plus the batch summary remain, also after
saving and reopening. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page

from .harness import Lab, open_notebook, run_all, save_notebook, write_notebook
from .test_jupyterlab import assert_no_widget_errors, cell

pytestmark = pytest.mark.browser

ITEMS = 60
CELLS = [
    "from flotorch_nb import FlotorchLLM\nfrom flotorch_nb.gateway import OfflineGateway\n\n"
    "gw = OfflineGateway(latency=0.1)\ngw.start()\nllm = FlotorchLLM('offline/echo', 'any-key', gw.url)",
    f"result = llm.batch([f'Item {{i}}' for i in range({ITEMS})], concurrency=4)\nresult",
    "llm.close()\ngw.stop()",
]
BATCH = 1

# Records each distinct (has a progress bar?, output text) state of the batch cell's output area.
_WATCH_JS = """
(index) => {
  window.__e2e_progress = [];
  const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const record = () => {
    const target = notebook.querySelectorAll('.jp-Cell')[index];
    if (!target) return;
    const out = target.querySelector('.jp-OutputArea');
    if (!out) return;
    const bar = !!out.querySelector('[class*="progress"]');
    const text = out.textContent;
    const seen = window.__e2e_progress;
    const last = seen[seen.length - 1];
    if (!last || last.bar !== bar || last.text !== text) seen.push({bar, text});
  };
  new MutationObserver(record).observe(notebook, {subtree: true, childList: true, characterData: true,
                                                   attributes: true});
}
"""


def test_a_batch_shows_a_moving_progress_bar_then_a_static_line(
    lab: Lab, page: Page, artifacts: Path
) -> None:
    path = write_notebook(lab.root_dir / "e2e_batch.ipynb", CELLS)
    open_notebook(page, lab, path.name)
    page.evaluate(_WATCH_JS, BATCH)
    run_all(page, len(CELLS), timeout=90)

    # 1. While it ran: the widget bar, at two different counts at least (it moved).
    states = page.evaluate("() => window.__e2e_progress")
    live = [s["text"] for s in states if s["bar"]]
    counts = {int(m.group(1)) for t in live if (m := re.search(rf"(\d+)/{ITEMS}", t))}
    assert live, f"no progress bar was ever shown: {states!r}"
    assert len(counts) >= 2 and min(counts) < ITEMS, f"the bar never moved: {sorted(counts)}"
    # Labelled as ours (tqdm pads with U+2007); a widget may show its bar a moment before its label.
    assert any("flotorch\u2007batch" in t or "flotorch batch" in t for t in live), live

    # 2. When done: no widget left, the static line and the summary instead.
    output = cell(page, BATCH).locator(".jp-OutputArea")
    assert output.locator('[class*="progress"]').count() == 0
    text = output.inner_text()
    assert re.search(rf"flotorch batch done: {ITEMS}/{ITEMS} items, errors=0", text), text
    assert output.locator(".flotorch-batch").count() == 1
    assert_no_widget_errors(page)
    cell(page, BATCH).screenshot(path=str(artifacts / "e2e-09-batch-done.png"))

    # 3. Saved and reopened: the static line and the summary are still there (no widget state needed).
    save_notebook(page, path)
    open_notebook(page, lab, path.name)
    reopened = cell(page, BATCH).locator(".jp-OutputArea")
    assert f"flotorch batch done: {ITEMS}/{ITEMS} items" in reopened.inner_text()
    assert reopened.locator(".flotorch-batch").count() == 1
