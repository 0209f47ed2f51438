"""``%%flotorch --map``: a batch summary with its chart, cost and provenance, and several models over
the same items (a column group per model, agreement when the answers are labels). Through IPython's
real shell against the offline gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flotorch_nb import BatchResult
from flotorch_nb._records import FIELDS, METADATA_KEY
from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook import map_cell
from flotorch_nb.notebook.map_cell import ModelBatches, ShownBatch
from flotorch_nb.notebook.session import get_session
from tests.support.shell import Shell, data_of

CITIES = ["Paris", "Oslo", "Lima"]


def metadata_of(value: Any) -> dict[str, Any]:
    bundle = value._repr_mimebundle_()
    assert isinstance(bundle, tuple), "a batch summary carries its provenance as output metadata"
    return bundle[1][METADATA_KEY]


def labelled(content: str, model: str) -> dict[str, Any]:
    """A whole chat completion answering ``content`` (for a fault that makes a model answer a label)."""
    return {
        "id": "chatcmpl-label",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


def test_one_model_shows_a_chart_then_the_summary_with_cost_and_provenance(
    shell: Shell,
    offline_env: OfflineGateway,
) -> None:
    shell.line("price offline/echo 100 400")
    shell.ip.user_ns["cities"] = CITIES
    result = shell.cell("--map cities -m offline/echo --concurrency 2", "Tell me about {item}.")
    assert isinstance(result, BatchResult) and isinstance(result, ShownBatch)
    assert [i.content for i in result] == [f"Tell me about {c}." for c in CITIES]
    chart = shell.pub.published[-1].data  # the chart, above the cell's value
    assert "image/png" in chart and chart["text/plain"].startswith("3 answers, latency median ")
    text = data_of(result)["text/plain"]
    assert "items      3" in text and "\n  cost       $0.0" in text
    found = metadata_of(result)
    records = found["provenance"]
    assert len(records) == 3 and all(tuple(r) == FIELDS for r in records)
    assert [r["request_id"] for r in records] == [i.answer.request_id for i in result]  # type: ignore[union-attr]
    assert all(len(r["request_hash"]) == 64 and r["source"] == "offline" for r in records)
    assert "provenance_omitted" not in found
    # The same answers are in the session's list, as the batch's.
    assert [r["by"] for r in get_session().answers.records] == ["batch"] * 3
    assert isinstance(result.retry_failed(), BatchResult)  # still the batch's result in every way


def test_several_models_give_a_column_group_per_model_a_summary_each_and_a_chart(
    shell: Shell,
    offline_env: OfflineGateway,
) -> None:
    shell.ip.user_ns["cities"] = CITIES
    prompt = "Tell me something interesting about {item}, please."
    value = shell.cell("--map cities -m offline/echo,offline/concise -o both", prompt)
    assert isinstance(value, ModelBatches) and shell.ip.user_ns["both"] is value
    assert value.models == ("offline/echo", "offline/concise") and len(value) == 3
    assert value["offline/echo"][1].content == "Tell me something interesting about Oslo, please."
    frame = value.to_pandas()
    assert list(frame.columns.get_level_values(0).unique()) == ["offline/echo", "offline/concise"]
    assert frame[("offline/echo", "answer")].tolist() == [prompt.format(item=c) for c in CITIES]
    assert frame[("offline/concise", "total_tokens")].gt(0).all()
    assert value.agreement is None  # prose, not labels: no agreement shown
    chart = shell.pub.published[-1].data
    assert chart["text/plain"].startswith("Latency and errors per model: offline/echo: 3 answers, median ")
    text = data_of(value)["text/plain"]
    assert text.startswith("3 items x 2 models") and "agreement" not in text
    assert "offline/concise  3/3" in text and "Tell me something interesting about Lima, please." in text
    records = metadata_of(value)["provenance"]
    assert [r["model"] for r in records] == ["offline/echo"] * 3 + ["offline/concise"] * 3
    assert len(offline_env.requests) == 6 and len(get_session().ledger) == 6


def test_labels_show_how_often_the_models_agree(shell: Shell, offline_env: OfflineGateway) -> None:
    offline_env.faults.add(
        Fault(body=labelled("**Positive.**", "offline/assistant"), model="offline/assistant", times=3)
    )
    shell.ip.user_ns["reviews"] = ["positive", "negative", "Positive"]
    value = shell.cell("--map reviews -m offline/echo,offline/assistant --concurrency 1", "{item}")
    found = value.agreement
    assert found is not None and (found.agreed, found.compared) == (2, 3)
    assert value.to_pandas()[("all", "agree")].tolist() == [True, False, True]
    text = data_of(value)["text/plain"]
    assert "agreement: all 2 models agree on 2 of 3 items (67%)" in text
    assert "flotorch-map-agreement" in data_of(value)["text/html"]


def test_answers_from_the_cache_have_records_too_and_a_huge_batch_keeps_a_bounded_number(
    shell: Shell,
    offline_env: OfflineGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shell.line(f"cache {tmp_path / 'answers.sqlite'}")
    shell.ip.user_ns["cities"] = CITIES
    shell.cell("--map cities -m offline/echo", "{item}")
    again = shell.cell("--map cities -m offline/echo", "{item}")
    records = metadata_of(again)["provenance"]
    assert [r["source"] for r in records] == ["cache"] * 3  # nothing sent: no hook ran
    assert [r["request_id"] for r in records] == [i.answer.request_id for i in again]
    monkeypatch.setattr(map_cell, "MAX_RECORDS", 2)
    capped = shell.cell("--map cities -m offline/echo,offline/concise", "{item}")
    found = metadata_of(capped)
    assert len(found["provenance"]) == 2 and found["provenance_omitted"] == 4


def test_html_of_a_multi_model_batch_escapes_model_text(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.ip.user_ns["payloads"] = ['<img src=x onerror="window.x=1">']
    value = shell.cell("--map payloads -m offline/echo,offline/concise", "{item}")
    html = data_of(value)["text/html"]
    assert "<img" not in html and "&lt;img src=x" in html
