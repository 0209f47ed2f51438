"""What a person sees of issue 9 in JupyterLab: models compared side by side, the chat panel docked in
the side area, and provenance saved with the notebook.

One journey through one real JupyterLab page (headless Chromium) against the offline gateway (which
streams a token every 30 ms, scaled per model): set two prices, compare three models in one cell and
watch their columns stream, then read the static table (tokens, latency, cost or "cost unknown") and
its chart; open a ChatPanel docked in the right-hand area, check it fits there, ask it something and
watch the reply stream in with its tokens; save with Ctrl+S and read the provenance back from the
file with ``flotorch_nb.provenance``. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

import flotorch_nb

from .harness import API_KEY, NOTEBOOK, Lab, open_notebook, run_all, save_notebook, write_notebook
from .test_jupyterlab import TOKENS_RE, assert_no_widget_errors, cell

pytestmark = pytest.mark.browser

MODELS = ["offline/concise", "offline/assistant", "offline/verbose"]
CELLS = [
    "%load_ext flotorch_nb",
    "%flotorch price offline/concise 0.05 0.20\n%flotorch price offline/assistant 0.15 0.60",
    f"%%flotorch -m {','.join(MODELS)}\nWhat is a token in a language model?",
    "from flotorch_nb.widgets import ChatPanel\n\npanel = ChatPanel(dock=True)\npanel",
]
PRICES, COMPARE, PANEL = 1, 2, 3
QUESTION = "Explain in a few sentences why the sea is salty"

SIDE = ".jupyterlab-sidecar"
DOCKED = f"{SIDE} .flotorch-chat"

# Records, while the notebook runs, each distinct text of every column of the live comparison view.
_WATCH_COMPARE_JS = """
() => {
  window.__e2e_columns = [];
  const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const record = () => {
    const live = notebook.querySelector('.flotorch-compare-live');
    if (!live) return;
    const texts = [...live.querySelectorAll('td.flotorch-compare-cell')].map((td) => td.textContent);
    const seen = window.__e2e_columns;
    if (JSON.stringify(seen[seen.length - 1]) !== JSON.stringify(texts)) seen.push(texts);
  };
  window.__e2e_compare_observer = new MutationObserver(record);
  window.__e2e_compare_observer.observe(notebook, {subtree: true, childList: true, characterData: true});
}
"""

# Records every distinct text of the newest assistant message of the docked panel.
_WATCH_DOCKED_JS = """
() => {
  const transcript = document.querySelector('.jupyterlab-sidecar .flotorch-chat-transcript');
  window.__e2e_docked = [];
  const record = () => {
    const replies = transcript.querySelectorAll('.flotorch-chat-assistant');
    const text = replies.length ? replies[replies.length - 1].textContent : '';
    const seen = window.__e2e_docked;
    if (seen[seen.length - 1] !== text) seen.push(text);
  };
  new MutationObserver(record).observe(transcript, {subtree: true, childList: true, characterData: true});
}
"""

# The boxes of the docked panel's parts, and whether the side area has to scroll sideways.
_FIT_JS = """
() => {
  const side = document.querySelector('.jupyterlab-sidecar');
  const box = (sel) => { const r = side.querySelector(sel).getBoundingClientRect();
                         return {left: r.left, right: r.right, width: r.width}; };
  const area = side.getBoundingClientRect();
  return {
    area: {left: area.left, right: area.right, width: area.width},
    overflow: side.scrollWidth - side.clientWidth,
    parts: Object.fromEntries(['.flotorch-chat-model select', '.flotorch-chat-system input',
      '.flotorch-chat-input input', '.flotorch-chat-send', '.flotorch-chat-export',
      '.flotorch-chat-totals'].map((s) => [s, box(s)])),
  };
}
"""


def assert_fits(fit: dict[str, Any]) -> None:
    """Every part of the docked panel lies inside the side area, wide enough to use."""
    area = fit["area"]
    assert 150 < area["width"] < 700, area
    assert fit["overflow"] <= 1, f"the side area scrolls sideways by {fit['overflow']} px"
    for selector, part in fit["parts"].items():
        assert area["left"] - 1 <= part["left"] and part["right"] <= area["right"] + 1, (selector, part, area)
    for selector in (
        ".flotorch-chat-model select",
        ".flotorch-chat-system input",
        ".flotorch-chat-input input",
    ):
        assert fit["parts"][selector]["width"] >= 100, (selector, fit["parts"][selector])


def test_compare_side_by_side_docked_chat_and_saved_provenance(
    lab: Lab, page: Page, artifacts: Path, e2e_gateway: str
) -> None:
    path = write_notebook(lab.root_dir / "e2e_compare.ipynb", CELLS)
    open_notebook(page, lab, path.name)
    page.evaluate(_WATCH_COMPARE_JS)
    run_all(page, len(CELLS), timeout=90)

    # 1. The comparison streamed: its columns were seen growing, side by side, before the end.
    snapshots = page.evaluate("() => window.__e2e_columns")
    streaming = [s for s in snapshots if len(s) == 3 and any("streaming…" in t for t in s)]
    assert len(streaming) >= 3, f"no streaming comparison seen: {snapshots[:3]!r}"
    verbose = [s[2] for s in streaming if "streaming…" in s[2]]
    assert len({len(t) for t in verbose}) >= 2, "the slowest model's column never grew"
    assert any("streaming…" not in s[0] and "streaming…" in s[2] for s in streaming), (
        "the quickest model never finished before the slowest"
    )

    # 2. The final view: one static table, a column per model with tokens, latency and cost.
    final = cell(page, COMPARE).locator(".flotorch-compare:not(.flotorch-compare-live)")
    final.wait_for()
    heads = final.locator("th.flotorch-compare-model").all_inner_texts()
    assert heads == MODELS
    footers = final.locator(".flotorch-footer").all_inner_texts()
    assert len(footers) == 3 and all(TOKENS_RE.search(f) and "OFFLINE" in f for f in footers), footers
    assert re.search(r" · \$0\.\d+$", footers[0]) and re.search(r" · \$0\.\d+$", footers[1]), footers
    assert footers[2].endswith(" · cost unknown"), footers[2]  # no price: never a guess
    summary = final.locator(".flotorch-compare-summary").inner_text()
    assert summary.startswith("3 of 3 models answered · fastest offline/concise"), summary
    assert "+ 1 call of unknown cost" in summary
    answers = [a.strip() for a in final.locator("td.flotorch-compare-cell").all_inner_texts()]
    assert len(set(answers)) == 3 and len(answers[0]) < len(answers[2])
    chart = cell(page, COMPARE).locator(".jp-RenderedImage img")
    assert chart.count() == 1 and chart.bounding_box()["width"] > 200  # type: ignore[index]
    cell(page, COMPARE).scroll_into_view_if_needed()
    cell(page, COMPARE).screenshot(path=str(artifacts / "e2e-05-compare-cell.png"))

    # 3. The chat panel is docked in the right-hand area (the cell says so), and it fits there.
    docked = page.locator(DOCKED)
    docked.wait_for()
    assert page.locator(f"{NOTEBOOK} .flotorch-chat").count() == 0, "the live panel is in the cell too"
    note = cell(page, PANEL).locator(".flotorch-chat-docked").inner_text()
    assert "docked in JupyterLab's side area" in note
    assert page.locator(f"{SIDE}").evaluate("(e) => !!e.closest('#jp-right-stack')"), "not in the right area"
    assert_fits(page.evaluate(_FIT_JS))
    assert_no_widget_errors(page)

    # 4. Asked there, the reply streams in and ends with its tokens (and cost: a price is set).
    page.evaluate(_WATCH_DOCKED_JS)
    box = page.locator(f"{DOCKED} .flotorch-chat-input input")
    box.fill(QUESTION)
    box.press("Enter")
    meta = page.locator(f"{DOCKED} .flotorch-chat-meta").first
    page.wait_for_function(
        "(sel) => { const m = document.querySelector(sel);"
        " return m && /in \\d+ · out \\d+ · total \\d+ tokens/.test(m.textContent); }",
        arg=f"{DOCKED} .flotorch-chat-meta",
    )
    reply = page.locator(f"{DOCKED} .flotorch-chat-assistant").first.inner_text().strip()
    seen = [t.strip() for t in page.evaluate("() => window.__e2e_docked") if t.strip()]
    partial = [t for t in seen if t != reply]
    assert len(partial) >= 2 and len(partial[0]) < len(partial[-1]) < len(reply), seen
    assert re.search(r"· \$0\.\d+$", meta.inner_text()), meta.inner_text()
    assert "OFFLINE" in meta.inner_text()
    assert_fits(page.evaluate(_FIT_JS))  # still fits with a reply in it
    page.screenshot(path=str(artifacts / "e2e-06-docked.png"))
    page.locator(SIDE).screenshot(path=str(artifacts / "e2e-07-docked-panel.png"))
    # The static copy under the cell followed the conversation.
    static = cell(page, PANEL).locator(".flotorch-static-transcript")
    assert QUESTION in (static.text_content() or "")

    # 5. Saved with Ctrl+S: no key; the provenance of every answer reads back from the file.
    notebook = save_notebook(page, path)
    raw = path.read_text()
    (artifacts / "e2e-compare-saved.ipynb").write_text(raw)
    assert API_KEY not in raw
    frame = flotorch_nb.provenance(path)
    print(frame.to_string())
    assert frame["model"].tolist() == [*MODELS, "offline/assistant"]
    assert frame["cell"].tolist() == [COMPARE, COMPARE, COMPARE, PANEL]
    assert set(frame["source"]) == {"offline"} and set(frame["gateway"]) == {e2e_gateway}
    assert frame["request_hash"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert frame["request_id"].notna().all() and frame["total_tokens"].gt(0).all()
    assert frame["flotorch_nb_version"].eq(flotorch_nb.__version__).all()
    cells = notebook["cells"]
    assert isinstance(cells, list) and cells[COMPARE]["outputs"][-1]["output_type"] == "execute_result"

    # 6. Reopened: the comparison and its chart are plain outputs, shown again as they were.
    open_notebook(page, lab, path.name)
    reopened = cell(page, COMPARE).locator(".flotorch-compare:not(.flotorch-compare-live)")
    assert reopened.locator("th.flotorch-compare-model").all_inner_texts() == MODELS
    assert reopened.locator(".flotorch-footer").all_inner_texts() == footers
    assert cell(page, COMPARE).locator(".jp-RenderedImage img").count() == 1
    assert QUESTION in (cell(page, PANEL).locator(".flotorch-static-transcript").text_content() or "")
    cell(page, COMPARE).screenshot(path=str(artifacts / "e2e-08-compare-reopened.png"))
