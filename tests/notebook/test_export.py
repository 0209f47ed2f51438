"""What a saved notebook shows without a kernel: run a notebook for real, export it to HTML with
nbconvert, and read the answers, footers and chat transcript back out of the page.

The issue asks that `%%flotorch` answers and the chat panel's conversation survive save, reopen and
HTML export; widget views need live widget state, so the static outputs are what must carry them.
Model output in those outputs must be inert HTML: the exported page is opened by anyone.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from flotorch_nb.gateway import OfflineGateway
from tests.support.html import assert_safe_html

pytestmark = pytest.mark.slow

XSS = '<img src=x onerror="window.__flotorch_xss=1"> [go](javascript:alert(1)) <svg onload=alert(2)>'


class _Outputs(HTMLParser):
    """The HTML of every ``flotorch-answer`` / static transcript element in a page (ours to check)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.roots: list[str] = []
        self._depth = 0
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        if self._depth == 0 and not re.search(r"\bflotorch-(answer|static-transcript)\b", classes):
            return
        self._depth += 1
        self._buffer.append(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if self._depth == 0:
            return
        self._buffer.append(f"</{tag}>")
        self._depth -= 1
        if self._depth == 0:
            self.roots.append("".join(self._buffer))
            self._buffer = []

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._buffer.append(data)

    def handle_entityref(self, name: str) -> None:
        if self._depth:
            self._buffer.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        if self._depth:
            self._buffer.append(f"&#{name};")


def test_an_executed_notebook_exports_its_answers_and_chat_as_safe_html(
    offline_env: OfflineGateway, tmp_path: Path
) -> None:
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    cells = [
        "%load_ext flotorch_nb",
        "%%flotorch\nWrite a haiku about the sea",
        f"%%flotorch -m offline/echo\n{XSS}",
        "from flotorch_nb.widgets import ChatPanel\npanel = ChatPanel(models=['offline/echo'])\npanel",
        "panel.send('Why is the sea salty?')\nawait panel.wait()",
        f"panel.model = 'offline/echo'\npanel.send({XSS!r})\nawait panel.wait()",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=90, kernel_name="python3", startup_timeout=60).execute(cwd=str(tmp_path))
    path = tmp_path / "exported.ipynb"
    nbformat.write(nb, path)  # what "save" writes, then read back as a viewer would
    saved = nbformat.read(path, as_version=4)
    page, _ = HTMLExporter().from_notebook_node(saved)

    parser = _Outputs()
    parser.feed(page)
    answers = [r for r in parser.roots if "flotorch-answer" in r.split(">", 1)[0]]
    transcripts = [r for r in parser.roots if "flotorch-static-transcript" in r.split(">", 1)[0]]
    assert len(answers) >= 2, "both %%flotorch answers are in the exported page"
    assert "Soft light on the sea" in answers[0]
    assert "flotorch-footer" in answers[0] and "OFFLINE gateway" in answers[0]
    assert re.search(r"in \d+ · out \d+ · total \d+ tokens", answers[0])
    assert transcripts, "the chat panel left its static transcript in the saved notebook"
    assert "Why is the sea salty?" in transcripts[-1] and "rivers carry minerals" in transcripts[-1]
    for root in parser.roots:  # model output stays text, whatever it asked for
        assert_safe_html(root, own_markup=True)
    assert "&lt;img src=x onerror" in answers[1] and "&lt;img src=x onerror" in transcripts[-1]
    assert "offline-test-key" not in path.read_text() and "offline-test-key" not in page
