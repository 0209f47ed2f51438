"""Static charts (PNG mimebundles beside the numbers) and docking a widget in a jupyterlab-sidecar."""

from __future__ import annotations

import base64
from decimal import Decimal
from pathlib import Path

import ipywidgets as w
import pytest

from flotorch_nb import FlotorchLLM, RetryPolicy
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook.charts import Chart, batch_chart, comparison_chart, ledger_chart
from flotorch_nb.notebook.dock import dock, undock
from flotorch_nb.notebook.ledger import Totals

PNG = b"\x89PNG\r\n\x1a\n"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def check_image(chart: Chart, name: str) -> str:
    """The chart is a PNG of the size it declares, in a bundle with its text; saved to look at."""
    data, metadata = chart._repr_mimebundle_()
    png = base64.b64decode(data["image/png"])
    assert png.startswith(PNG) and png == chart.png
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert metadata == {"image/png": {"width": width, "height": height}}
    assert 200 < width < 1200 and 100 < height < 600  # small: beside the table, not instead of it
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"chart-{name}.png").write_bytes(png)
    return data["text/plain"]


def test_the_ledger_chart_shows_tokens_and_cost_per_model_and_says_when_cost_is_unknown() -> None:
    rows = [Totals("offline/assistant", 3, 30, 120, 150), Totals("offline/echo", 1, 5, 5, 10)]
    rows.append(Totals("total", 4, 35, 125, 160))
    text = check_image(ledger_chart(rows, {"offline/assistant": Decimal("0.0012")}), "ledger")
    assert text == (
        "Tokens and cost per model: offline/assistant: 150 tokens, $0.0012; "
        "offline/echo: 10 tokens, cost unknown"
    )


def test_the_comparison_chart_shows_latency_and_tokens_and_marks_a_failed_model(
    gateway: OfflineGateway,
) -> None:
    gateway.faults.add(Fault(status=503, model="offline/echo"))
    with FlotorchLLM("offline/assistant", "k", gateway.url, retry=RetryPolicy(max_retries=0)) as llm:
        comparison = llm.compare(
            [{"role": "user", "content": "Hello"}], ["offline/assistant", "offline/echo"]
        )
    text = check_image(comparison_chart(comparison), "comparison")
    tokens = comparison.responses["offline/assistant"].usage.total_tokens  # type: ignore[union-attr]
    assert text.startswith("Latency and tokens per model: offline/assistant: ")
    assert f" ms, {tokens} tokens; offline/echo: failed (ServerError)" in text


def test_the_batch_chart_shows_the_latency_distribution_and_errors_by_type() -> None:
    latencies = [100.0 + (i * 37) % 250 for i in range(40)]
    text = check_image(
        batch_chart(latencies, {"RateLimitError": 3, "ServerError": 1, "NotFoundError": 0}), "batch"
    )
    assert text.startswith("40 answers, latency median ")
    assert text.endswith("errors: RateLimitError 3, ServerError 1")
    assert check_image(batch_chart([]), "batch-empty") == "0 answers; errors: none"


def test_charts_leave_the_users_matplotlib_state_alone() -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    ledger_chart([Totals("m", 1, 1, 1, 2)])
    assert matplotlib.get_backend() == backend
    import sys

    assert "matplotlib.pyplot" not in sys.modules or sys.modules["matplotlib.pyplot"].get_fignums() == []


# -- docking -----------------------------------------------------------------------------------------
def test_dock_puts_the_widget_into_a_sidecar_in_the_right_hand_area() -> None:
    from sidecar import Sidecar

    panel = w.VBox([w.HTML("chat")])
    docked = dock(panel, "FloTorch chat")
    assert isinstance(docked, Sidecar)
    assert docked.title == "FloTorch chat" and docked.anchor == "right"
    assert "flotorch-dock" in docked._dom_classes
    (output,) = docked.outputs
    assert output["output_type"] == "display_data"
    assert output["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.model_id
    undock(docked)
    assert docked.comm is None and panel.comm is not None  # the panel itself lives on
    panel.close()


def test_dock_takes_another_anchor_and_refuses_an_unknown_one() -> None:
    label = w.Label("x")
    assert dock(label, "t", anchor="split-bottom").anchor == "split-bottom"
    with pytest.raises(ValueError, match="anchor must be one of"):
        dock(label, "t", anchor="left-ish")


def test_the_chat_panels_root_can_be_docked(gateway: OfflineGateway) -> None:
    from flotorch_nb.notebook.widgets import ChatPanel

    with FlotorchLLM("offline/assistant", "k", gateway.url) as llm:
        chat = ChatPanel(llm)
        docked = dock(chat.root, "FloTorch chat")
        (output,) = docked.outputs
        assert output["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == chat.root.model_id
        undock(docked)


def test_the_models_batch_chart_shows_each_models_latencies_and_errors() -> None:
    from flotorch_nb.notebook.charts import models_batch_chart

    latencies = {"model-a": [100.0 + i * 3 for i in range(30)], "model-b": [400.0 + i * 9 for i in range(25)]}
    text = check_image(
        models_batch_chart({**latencies, "model-c": []}, {"model-b": 5, "model-c": 30}), "models"
    )
    assert text == (
        "Latency and errors per model: model-a: 30 answers, median 144 ms, 0 errors; "
        "model-b: 25 answers, median 508 ms, 5 errors; model-c: 0 answers, no answers, 30 errors"
    )


def _share_of_red(chart: Chart) -> float:
    import io

    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(chart.png))[:, :, :3]
    red = (abs(pixels[:, :, 0] - 0xB9 / 255) < 0.05) & (pixels[:, :, 1] < 0.2) & (pixels[:, :, 2] < 0.2)
    return float(red.mean())


def test_a_single_error_type_is_one_bar_not_a_red_block() -> None:
    chart = batch_chart([120.0, 130.0, 150.0], {"BudgetExceededError": 2})
    check_image(chart, "batch-one-error")
    assert 0 < _share_of_red(chart) < 0.04  # a bar among room for five, beside the histogram


def test_the_latency_histogram_counts_in_whole_answers() -> None:
    from flotorch_nb.notebook import charts

    figure, (ax,) = charts._figure(1, 2.4)
    charts._latency_histogram(ax, [101.0, 180.0, 260.0])  # one answer per bin: matplotlib would say 0.2
    figure.canvas.draw()
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
