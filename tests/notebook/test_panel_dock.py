"""ChatPanel: docked in JupyterLab's side area, cost in each reply's footer, provenance in its static
transcript, and a layout that fits a narrow side area. Against the offline gateway on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as w
import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb._records import FIELDS, METADATA_KEY
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook.session import get_session, reset
from flotorch_nb.notebook.widgets import DOCKED_NOTE, ChatPanel
from tests.support.widgets import all_widgets

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def fresh_session() -> Iterator[None]:
    reset()
    yield
    reset()


def displayed(panel: ChatPanel) -> list[object]:
    """What displaying the panel as a cell's last expression shows (with metadata)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output() as captured:
        panel._ipython_display_()
    return list(captured.outputs)


async def test_dock_opens_the_live_panel_in_a_sidecar_and_the_cell_says_so(
    make_panel: Callable[..., Any],
) -> None:
    from sidecar import Sidecar

    panel = make_panel(model="offline/echo", dock=True)
    assert panel.docked and isinstance(panel._sidecar, Sidecar)
    assert panel._sidecar.title == "FloTorch chat" and panel._sidecar.anchor == "right"
    (output,) = panel._sidecar.outputs
    assert output["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.root.model_id
    note, static = displayed(panel)
    assert note.data == DOCKED_NOTE  # type: ignore[attr-defined]
    assert "Chat transcript (static copy)" in static.data["text/html"]  # type: ignore[attr-defined]
    # It keeps working there: a question gets its answer.
    panel.send("hello from the side")
    turn = await panel.wait()
    assert turn is not None and turn.reply == "hello from the side"
    # Docking again moves it; undock closes the side panel, and the panel shows in a cell again.
    first = panel._sidecar
    panel.dock("Chat", anchor="split-right")
    assert first.comm is None and panel._sidecar.anchor == "split-right"
    with pytest.raises(ValueError, match="anchor must be one of"):
        panel.dock(anchor="nowhere")
    assert panel.docked  # a refused move leaves it where it was
    panel.undock()
    assert not panel.docked and panel.root.comm is not None
    live, _static = displayed(panel)
    assert "application/vnd.jupyter.widget-view+json" in live.data  # type: ignore[attr-defined]


async def test_the_panel_fits_a_narrow_side_area(make_panel: Callable[..., Any]) -> None:
    """No widget insists on a width of its own, and each row wraps instead of overflowing."""
    panel = make_panel()
    for widget in all_widgets(panel.root):
        layout: Any = getattr(widget, "layout", None)
        if isinstance(widget, w.Box) and widget is not panel.root and widget is not panel.transcript:
            assert layout.flex_flow == "row wrap", widget
        if isinstance(widget, w.Text | w.Dropdown):
            assert layout.width == "auto" and layout.min_width == "0", widget
    assert panel.root.layout.width == "100%"
    assert all(b.layout.width == "auto" for b in panel.buttons)


async def test_each_reply_shows_its_cost_and_the_static_copy_keeps_its_provenance(
    make_panel: Callable[..., Any],
    gateway: OfflineGateway,
) -> None:
    from flotorch_nb.pricing import default_prices

    default_prices().set("offline/assistant", 150, 600)
    panel = make_panel(models=["offline/echo"])
    _live, static = displayed(panel)
    assert static.metadata == {METADATA_KEY: {"provenance": []}}  # type: ignore[attr-defined]
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        panel.send("What is a tide?")
        first = await panel.wait()
        panel.model = "offline/echo"
        panel.send("echo")
        second = await panel.wait()
    assert first is not None and second is not None
    assert first.footer is not None and first.footer.cost is not None and first.footer.cost != "unknown"
    cost = first.meta_text.split(" · ")[-1]
    assert cost.startswith("$0.") and panel.transcript.children[2].value.endswith(f" · {cost}</div></div>")
    assert second.meta_text.endswith(" · cost unknown")
    update = captured.outputs[-1]
    records = update.metadata[METADATA_KEY]["provenance"]
    assert [r["model"] for r in records] == ["offline/assistant", "offline/echo"]
    assert all(tuple(r) == FIELDS for r in records)
    assert records[0]["request_id"] == first.response.request_id
    assert records[0]["gateway"] == gateway.url and records[0]["request_hash"]
    # The same answers are in the session's list, as the chat's.
    assert [r["by"] for r in get_session().answers.records] == ["chat", "chat"]


async def test_a_client_given_to_the_panel_is_stamped_too(gateway: OfflineGateway) -> None:
    with FlotorchLLM("offline/echo", "k", gateway.url) as llm:
        panel = ChatPanel(llm)
        panel.send("stamped")
        turn = await panel.wait()
        await llm.aclose()
    assert turn is not None and turn.provenance is not None
    assert turn.provenance["request_hash"] == turn.response.request_hash  # type: ignore[union-attr]
    assert len(turn.provenance["request_hash"]) == 64
