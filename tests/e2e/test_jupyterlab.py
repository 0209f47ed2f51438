"""What a person sees in JupyterLab: the %%flotorch magic, the ChatPanel streaming, and no XSS.

One journey through one real JupyterLab page (headless Chromium), against the offline gateway:
run a notebook, read the magic's answer and footer, chat in the panel and watch the reply stream, try
to make model output run script (and prove, with an unsanitized control, that the detection works),
then save and read the file on disk. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from .harness import API_KEY, NOTEBOOK, Lab, open_notebook, run_all, save_notebook, write_notebook

pytestmark = pytest.mark.browser

TOKENS_RE = re.compile(r"in \d+ · out \d+ · total \d+ tokens")

# Each payload sets its own window flag if any script runs. The echo model repeats them verbatim.
CHAT_PAYLOADS = {
    "__flotorch_xss": '<img src=x onerror="window.__flotorch_xss=1">',
    "__flotorch_xss2": "[click](javascript:window.__flotorch_xss2=1)",
    # A lone <svg onload> does not fire when inserted as innerHTML (as widgets do); a nested one does.
    "__flotorch_xss3": '<svg><svg onload="window.__flotorch_xss3=1"></svg></svg>',
    "__flotorch_xss4": '<details open ontoggle="window.__flotorch_xss4=1">s</details>',
}
MAGIC_PAYLOAD = (
    '<img src=x onerror="window.__flotorch_xss_magic=1"> '
    "[click](javascript:window.__flotorch_xss_magic2=1) "
    '<svg><svg onload="window.__flotorch_xss_magic3=1"></svg></svg>'
)
MAGIC_FLAGS = ["__flotorch_xss_magic", "__flotorch_xss_magic2", "__flotorch_xss_magic3"]
XSS_FLAGS = [*CHAT_PAYLOADS, *MAGIC_FLAGS]
# The control: the same payloads put, unsanitized, into a plain ipywidgets.HTML. Their flags ARE set,
# which proves that a flag left unset above means "did not run", not "could not be detected".
CONTROL_PAYLOADS = {
    "__flotorch_ctl_img": '<img src=x onerror="window.__flotorch_ctl_img=1">',
    "__flotorch_ctl_svg": '<svg><svg onload="window.__flotorch_ctl_svg=1"></svg></svg>',
    "__flotorch_ctl_details": '<details open ontoggle="window.__flotorch_ctl_details=1">c</details>',
}
CONTROL_CELL = f"""\
# Control (deliberately unsafe): raw HTML in an ipywidgets.HTML runs its handlers in JupyterLab.
import ipywidgets
control = ipywidgets.HTML()
control.add_class("e2e-xss-control")
display(control)
control.value = {"".join(CONTROL_PAYLOADS.values())!r}"""

CELLS = [
    "%load_ext flotorch_nb",
    "%%flotorch\nWrite a haiku about the sea",
    f"%%flotorch -m offline/echo\n{MAGIC_PAYLOAD}",
    "from flotorch_nb.widgets import ChatPanel\n\npanel = ChatPanel(models=['offline/echo'])\npanel",
    CONTROL_CELL,
]
MAGIC_CELL, ECHO_CELL, PANEL_CELL, CONTROL = 1, 2, 3, 4
QUESTION = "Explain in a few sentences why the sea is salty"

CHAT = ".flotorch-chat"  # the live panel (not its static copy, an HTML output below it)
# Elements in rendered outputs (not JupyterLab's own chrome) that could run script or fetch a URL
# without a click; none may appear in our outputs.
_DANGEROUS_JS = """
(outputs) => outputs.flatMap((o) => [...o.querySelectorAll('*')]).filter((e) =>
    ['IMG', 'SVG', 'svg', 'IFRAME', 'SCRIPT', 'OBJECT', 'EMBED', 'VIDEO', 'AUDIO'].includes(e.tagName)
    || [...e.attributes].some((a) => a.name.startsWith('on'))
    || /^\\s*javascript:/i.test(e.getAttribute('href') || '')
  ).map((e) => e.outerHTML.slice(0, 200))
"""
LIVE_ASSISTANT = f"{CHAT} .flotorch-chat-transcript .flotorch-chat-assistant"
LIVE_META = f"{CHAT} .flotorch-chat-transcript .flotorch-chat-meta"

# Records every distinct text of the newest live assistant message, to see a reply grow.
_WATCH_STREAM_JS = """
() => {
  const transcript = document.querySelector('.flotorch-chat .flotorch-chat-transcript');
  window.__e2e_seen = [];
  const record = () => {
    const replies = transcript.querySelectorAll('.flotorch-chat-assistant');
    const text = replies.length ? replies[replies.length - 1].textContent : '';
    const seen = window.__e2e_seen;
    if (seen[seen.length - 1] !== text) seen.push(text);
  };
  if (window.__e2e_observer) window.__e2e_observer.disconnect();
  window.__e2e_observer = new MutationObserver(record);
  window.__e2e_observer.observe(transcript, {subtree: true, childList: true, characterData: true});
}
"""

# Whether each code cell of the open notebook is trusted (trusted HTML outputs are rendered unsanitized).
_CELLS_TRUSTED_JS = """
() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type === 'code') out.push(c.trusted);
  }
  return out;
}
"""


def cell(page: Page, index: int) -> Locator:
    """The ``index``-th cell of the open notebook."""
    return page.locator(f"{NOTEBOOK} .jp-Cell").nth(index)


def assert_no_widget_errors(page: Page) -> None:
    """No widget anywhere in the page failed to render (a missing or mismatched widget extension)."""
    assert page.locator(".jupyter-widgets-error-widget").count() == 0, "a widget failed to render"
    assert page.get_by_text("Error displaying widget").count() == 0, "a widget failed to render"


def chat_send(page: Page, message: str) -> str:
    """Type ``message`` into the panel, press Enter, wait for the reply's token line; return the reply."""
    replies = page.locator(LIVE_ASSISTANT).count()
    box = page.locator(f"{CHAT} .flotorch-chat-input input")
    box.fill(message)
    box.press("Enter")
    page.locator(LIVE_ASSISTANT).nth(replies).wait_for()
    meta = page.locator(LIVE_META).nth(replies)
    page.wait_for_function(
        "([sel, n]) => { const m = document.querySelectorAll(sel)[n];"
        " return m && /in \\d+ · out \\d+ · total \\d+ tokens/.test(m.textContent); }",
        arg=[LIVE_META, replies],
    )
    assert "OFFLINE" in meta.inner_text()
    error = page.locator(f"{CHAT} .flotorch-chat-error")
    assert not error.is_visible(), f"the panel shows an error: {error.inner_text()}"
    answer = page.locator(LIVE_ASSISTANT).nth(replies)
    text = str(answer.inner_text())
    print(f"chat: {message!r} -> {answer.inner_html()!r}")
    return text


def assert_outputs_inert(page: Page) -> None:
    """No output of any cell but the control holds an element that could run script."""
    for index in range(len(CELLS)):
        if index == CONTROL:
            continue
        found = cell(page, index).locator(".jp-OutputArea-output").evaluate_all(_DANGEROUS_JS)
        assert found == [], f"cell {index} shows elements that could run script: {found}"


def wait_for_control(page: Page) -> None:
    """Wait until every control flag is set: detection works in this page (handlers fire a bit later)."""
    try:
        page.wait_for_function("(ns) => ns.every((n) => window[n] === 1)", arg=list(CONTROL_PAYLOADS))
    except PlaywrightTimeoutError:
        control = flags(page, [*CONTROL_PAYLOADS])
        raise AssertionError(f"the unsanitized control did not run: {control}") from None


def saved_output(cell: dict[str, Any], mime: str) -> str:
    """All of a saved cell's outputs of type ``mime``, joined (nbformat may split text into lines)."""
    texts = []
    for output in cell["outputs"]:
        data = output.get("data", {}).get(mime)
        if data is not None:
            texts.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(texts)


def flags(page: Page, names: list[str]) -> dict[str, Any]:
    """The values of ``window[name]`` (None where unset)."""
    return dict(page.evaluate("(ns) => Object.fromEntries(ns.map((n) => [n, window[n] ?? null]))", names))


def test_magic_chat_panel_and_no_xss_in_jupyterlab(lab: Lab, page: Page, artifacts: Path) -> None:
    """Run, read, chat, attack, save, reopen: everything a person would see, checked in the page."""
    # 1. Open a fresh notebook and Run All.
    path = write_notebook(lab.root_dir / "e2e_flotorch.ipynb", CELLS)
    open_notebook(page, lab, path.name)
    run_all(page, len(CELLS))

    # 2. The magic's answer: sanitized HTML with a footer of token counts and the OFFLINE mark.
    answer = cell(page, MAGIC_CELL).locator(".flotorch-answer")
    answer.wait_for()
    footer_text = answer.locator(".flotorch-footer").inner_text()
    body = answer.inner_text().replace(footer_text, "").strip()
    assert body, "the %%flotorch answer is empty"
    assert TOKENS_RE.search(footer_text), footer_text
    assert "OFFLINE" in footer_text, footer_text
    cell(page, MAGIC_CELL).screenshot(path=str(artifacts / "e2e-01-magic-cell.png"))
    page.screenshot(path=str(artifacts / "e2e-01-magic.png"))

    # 3. The panel rendered, and no widget anywhere failed to.
    page.locator(CHAT).wait_for()
    assert_no_widget_errors(page)

    # 4. A reply streams in: its text is seen growing before the token line arrives.
    page.evaluate(_WATCH_STREAM_JS)
    reply = chat_send(page, QUESTION)
    seen = [text.strip() for text in page.evaluate("() => window.__e2e_seen") if text.strip()]
    partial = [text for text in seen if text != reply.strip()]
    assert len(partial) >= 2, f"no streaming seen, only {seen!r}"
    assert len(partial[0]) < len(partial[-1]) < len(reply.strip()), seen
    page.locator(CHAT).screenshot(path=str(artifacts / "e2e-02-chat-panel.png"))
    page.screenshot(path=str(artifacts / "e2e-02-chat.png"))

    # 5. XSS: model output (echoed payloads) never runs, and shows as inert text.
    page.locator(f"{CHAT} .flotorch-chat-model select").select_option("offline/echo")
    echoed = {flag: chat_send(page, payload) for flag, payload in CHAT_PAYLOADS.items()}
    page.locator(LIVE_ASSISTANT).last.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "e2e-03-xss.png"))
    page.locator(CHAT).screenshot(path=str(artifacts / "e2e-03-xss-panel.png"))
    wait_for_control(page)
    assert flags(page, XSS_FLAGS) == dict.fromkeys(XSS_FLAGS), "model output ran script"
    assert_outputs_inert(page)
    for flag, payload in CHAT_PAYLOADS.items():
        assert payload in echoed[flag], f"{flag}: payload not shown as text: {echoed[flag]!r}"
    echo_answer = cell(page, ECHO_CELL).locator(".flotorch-answer").inner_text()
    for needle in ('<img src=x onerror="window.__flotorch_xss_magic=1">', "[click](javascript:"):
        assert needle in echo_answer, echo_answer
    assert_no_widget_errors(page)

    # 6. Saved with Ctrl+S: no key in the file, and the answers are plain outputs that survive.
    notebook = save_notebook(page, path)
    raw = path.read_text()
    (artifacts / "e2e-saved.ipynb").write_text(raw)
    assert API_KEY not in raw, "the API key leaked into the saved notebook"
    cells = notebook["cells"]
    assert isinstance(cells, list)
    magic, panel = cells[MAGIC_CELL], cells[PANEL_CELL]
    assert "flotorch-answer" in saved_output(magic, "text/html"), magic["outputs"]
    assert QUESTION in saved_output(panel, "text/html"), "the chat's static copy is not in the saved file"
    assert QUESTION in saved_output(panel, "text/plain"), "the chat's static copy lacks the question"

    # 7. Reopened (trusted again, as its author would see it): the answers show, still inert.
    page.evaluate("() => { window.__e2e_old_page = 1; }")
    open_notebook(page, lab, path.name)
    assert page.evaluate("() => window.__e2e_old_page") is None, "the page was not reloaded"
    trusted = page.evaluate(_CELLS_TRUSTED_JS)
    assert trusted and all(trusted), f"the reopened notebook is not trusted: {trusted}"
    reopened = cell(page, MAGIC_CELL).locator(".flotorch-answer")
    assert body in reopened.inner_text() and TOKENS_RE.search(reopened.inner_text())
    assert "onerror" in cell(page, ECHO_CELL).locator(".flotorch-answer").inner_text()
    static = cell(page, PANEL_CELL).locator('.jp-OutputArea-output[data-mime-type="text/html"]')
    assert QUESTION in (static.text_content() or ""), "the chat's static copy is not shown on reopen"
    assert_outputs_inert(page)
    page.screenshot(path=str(artifacts / "e2e-04-reopened.png"))
    wait_for_control(page)  # the kernel is alive, so the control widget is restored and runs again
    assert flags(page, XSS_FLAGS) == dict.fromkeys(XSS_FLAGS), "saved model output ran script on reopen"
