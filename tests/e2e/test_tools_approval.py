"""Tools with approval in a real JupyterLab: a ``%%flotorch --tools --approve`` cell waits for the click.

``offline/scripted`` plays the model, so every answer is exact. Run All starts the notebook; the first
tool cell shows an Approve / Deny widget and stays running (the cells after it wait): Approve runs the
tool, whose result goes back to the model. The second tool cell is denied with a reason, which the
model receives as the call's result. A chat panel with tools shows the cards and its own buttons.
After save and reopen, the tool cells' cards are plain HTML outputs (no widget state needed), and the
approval widgets are gone from them. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page

from .harness import NOTEBOOK, Lab, open_notebook, save_notebook, write_notebook
from .test_jupyterlab import assert_no_widget_errors, cell

pytestmark = pytest.mark.browser


def _script(*turns: dict[str, object]) -> str:
    return json.dumps({"script": {"turns": list(turns)}})


def _call(name: str, arguments: dict[str, object]) -> dict[str, object]:
    return {"tool_calls": [{"name": name, "arguments": arguments, "id": "call_1"}]}


SETUP = """\
%load_ext flotorch_nb
ran = []

def get_weather(city: str) -> str:
    \"\"\"Current weather in a city.\"\"\"
    ran.append(city)
    return f"18 degrees in {city} <img src=x onerror=window.__flotorch_tool_xss=1>"
"""
APPROVE_BODY = _script(_call("get_weather", {"city": "Paris"}), {"content": "Paris: **18 degrees**."})
DENY_BODY = _script(_call("get_weather", {"city": "Lima"}), {"content": "I may not check Lima."})
TOOL_LINE = "%%flotorch -m offline/scripted --tools get_weather --approve --no-interpolate -o {var}\n"
CHECK = """\
assert ran == ["Paris"], ran
assert approved.messages[2]["content"].startswith("18 degrees in Paris"), approved.messages
assert denied.calls[0].error == "denied: not this city"
assert denied.messages[2]["content"].endswith("not this city")
print("checked: the approved call ran and its result went back; the denied one never ran")
"""
PANEL = f"""\
from flotorch_nb.widgets import ChatPanel
panel = ChatPanel(model="offline/scripted", tools=[get_weather], approve=True)
panel.send({_script(_call("get_weather", {"city": "Oslo"}), {"content": "Oslo: 18."})!r})
panel
"""
CELLS = [
    SETUP,
    TOOL_LINE.format(var="approved") + APPROVE_BODY,
    TOOL_LINE.format(var="denied") + DENY_BODY,
    CHECK,
    PANEL,
]
APPROVE_CELL, DENY_CELL, CHECK_CELL, PANEL_CELL = 1, 2, 3, 4

_PROMPTS_JS = """
() => [...document.querySelectorAll(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')].map((e) => e.textContent.trim())
"""


def prompts(page: Page) -> list[str]:
    return list(page.evaluate(_PROMPTS_JS))


def test_tool_cells_wait_for_approval_and_keep_static_cards(lab: Lab, page: Page, artifacts: Path) -> None:
    path = write_notebook(lab.root_dir / "e2e_tools.ipynb", CELLS)
    open_notebook(page, lab, path.name)
    page.evaluate("() => { window.jupyterapp.commands.execute('runmenu:run-all'); }")

    # 1. The first tool cell asks and waits: still running, the cells after it not run yet.
    first = cell(page, APPROVE_CELL)
    first.locator(".flotorch-approval button.flotorch-approval-approve").wait_for(timeout=60_000)
    assert "get_weather" in first.locator(".flotorch-approval").inner_text()
    state = prompts(page)
    assert state[APPROVE_CELL] == "[*]:" and state[CHECK_CELL] in ("[*]:", "[ ]:"), state
    first.screenshot(path=str(artifacts / "e2e-tools-1-waiting.png"))
    first.locator("button.flotorch-approval-approve").click()

    # 2. Approved: the tool ran, the card shows its (escaped) result, the answer follows.
    first.locator(".flotorch-tool-run .flotorch-tool-card").wait_for()  # the cell's value
    first.locator(".flotorch-tool-run").get_by_text("Paris: 18 degrees.").wait_for()
    card = first.locator(".flotorch-tool-run .flotorch-tool-card").inner_text()
    assert "approved" in card and "18 degrees in Paris" in card and "<img src=x" in card
    assert first.locator(".flotorch-approval").count() == 0  # the widget made way for the static cards

    # 3. The second cell: deny with a reason; the model is told, the tool never runs.
    second = cell(page, DENY_CELL)
    second.locator(".flotorch-approval button.flotorch-approval-deny").wait_for(timeout=30_000)
    second.locator(".flotorch-approval-reason input").fill("not this city")
    second.locator("button.flotorch-approval-deny").click()
    second.locator(".flotorch-tool-run").get_by_text("I may not check Lima.").wait_for()
    assert "denied: not this city" in second.locator(".flotorch-tool-run .flotorch-tool-card").inner_text()

    # 4. The kernel agrees (the check cell), and the panel shows its card and its own buttons.
    cell(page, CHECK_CELL).locator(".jp-OutputArea-output").get_by_text("checked: the approved").wait_for(
        timeout=30_000
    )
    panel = cell(page, PANEL_CELL)
    approve = panel.locator(".flotorch-chat .flotorch-approval button.flotorch-approval-approve")
    approve.wait_for(timeout=30_000)
    assert "waiting for approval" in panel.locator(".flotorch-chat-prompts").inner_text()
    approve.click()
    panel.locator(".flotorch-chat .flotorch-chat-assistant").get_by_text("Oslo: 18.").wait_for()
    cards = panel.locator(".flotorch-chat .flotorch-chat-cards").inner_text()
    assert "approved" in cards and "18 degrees in Oslo" in cards
    assert panel.locator(".flotorch-chat .flotorch-approval").count() == 0
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell "
        ".jp-InputArea-prompt')].every((e) => /^\\[\\d+\\]:$/.test(e.textContent.trim()))"
    )
    assert_no_widget_errors(page)
    assert page.evaluate("() => window.__flotorch_tool_xss ?? null") is None  # the result stayed text
    page.locator(NOTEBOOK).screenshot(path=str(artifacts / "e2e-tools-2-done.png"))

    # 5. Saved and reopened: the cards are static HTML outputs; no approval widget is left in them.
    saved = save_notebook(page, path)
    outputs = saved["cells"][APPROVE_CELL]["outputs"]  # type: ignore[index]
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "flotorch-tool-card" in html
    assert "application/vnd.jupyter.widget-view+json" not in json.dumps(outputs)  # no widget left
    open_notebook(page, lab, path.name)
    reopened = cell(page, APPROVE_CELL)
    reopened.locator(".flotorch-tool-card").wait_for()
    assert "18 degrees in Paris" in reopened.locator(".flotorch-tool-card").inner_text()
    assert "denied: not this city" in cell(page, DENY_CELL).locator(".flotorch-tool-card").inner_text()
    assert "flotorch-tool-card" in cell(page, PANEL_CELL).locator(".flotorch-static-transcript").inner_html()
    reopened.screenshot(path=str(artifacts / "e2e-tools-3-reopened.png"))
