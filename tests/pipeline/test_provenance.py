"""Provenance records: their exact fields, a display-safe gateway, the same request hash as the replay
files, and reading them back from notebooks saved with nbformat and executed in a real kernel."""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest

import flotorch_nb
from flotorch_nb import ConfigurationError, FlotorchLLM, LLMResponse
from flotorch_nb._config import ENV_RECORD, display_url
from flotorch_nb._pipeline._hooks import CallRequest
from flotorch_nb._pipeline._provenance import stamp
from flotorch_nb._records import (
    FIELDS,
    METADATA_KEY,
    output_metadata,
    provenance,
    records_in,
    safe_gateway_url,
)
from flotorch_nb._request_key import request_hash
from flotorch_nb.gateway import OfflineGateway

KEY = "offline-test-key"
USER = [{"role": "user", "content": "Name three colours of the sea."}]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://gateway.flotorch.cloud", "https://gateway.flotorch.cloud"),
        ("https://gw.example/flotorch/", "https://gw.example/flotorch"),
        ("https://user:s3cret@gw.example:8443/x?api_key=s3cret#frag", "https://gw.example:8443/x"),
        ("http://127.0.0.1:8765/?token=abc", "http://127.0.0.1:8765"),
        ("not a url", None),
        ("http://[::1", None),
        ("", None),
        (None, None),
    ],
)
def test_the_gateway_is_saved_without_credentials_query_or_fragment(
    url: str | None, shown: str | None
) -> None:
    assert safe_gateway_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://gw.example/x", "https://gw.example/x"),
        ("https://user:s3cret@gw.example:8443/x/?api_key=s3cret#frag", "https://gw.example:8443/x/"),
        ("http://[::1", "(not a valid URL)"),
    ],
)
def test_one_rule_shows_a_url_without_credentials_query_or_fragment(url: str, shown: str) -> None:
    """Banners, errors and reprs (``display_url``) and saved provenance strip the same parts."""
    assert display_url(url) == shown
    if shown.startswith("http"):
        assert safe_gateway_url(url) == shown.rstrip("/")


def answer_with_its_request(llm: FlotorchLLM, **params: Any) -> tuple[LLMResponse, CallRequest]:
    seen: list[CallRequest] = []
    llm.hooks.before_request.append(seen.append)
    return llm.invoke(USER, **params), seen[-1]


def test_a_record_has_exactly_the_documented_fields(gateway: OfflineGateway) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    with FlotorchLLM("offline/assistant", KEY, gateway.url + "/") as llm:
        response, request = answer_with_its_request(llm, temperature=0.2)
    record = response.provenance
    assert record is not None and tuple(record) == FIELDS
    assert record["model"] == "offline/assistant"
    assert record["gateway"] == gateway.url
    assert record["request_id"] == response.request_id and record["request_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    assert response.created_at is not None and before <= response.created_at <= datetime.now(UTC)
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (
        response.usage.input_tokens,  # type: ignore[union-attr]
        response.usage.output_tokens,  # type: ignore[union-attr]
        response.usage.total_tokens,  # type: ignore[union-attr]
    )
    assert record["latency_ms"] == pytest.approx(response.latency_s * 1000, abs=0.001)
    assert record["source"] == "offline"
    assert record["flotorch_nb_version"] == flotorch_nb.__version__
    assert record["request_hash"] == response.request_hash == request_hash(request.body, llm.endpoint)
    text = json.dumps(record)
    assert KEY not in text and "Name three colours" not in text  # no key, no prompt


def test_a_stamp_is_dated_in_utc_and_unknown_tokens_are_null() -> None:
    llm = FlotorchLLM("asked/model", KEY, "http://127.0.0.1:9")
    call = llm._pipeline.prepare(USER, None, None, None, {}, stream=False)
    response = LLMResponse(content="x", metadata={})
    record = stamp(response, call, llm._settings, at=datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC))
    assert response.provenance is record and record["timestamp"] == "2025-05-01T12:00:00.123Z"
    assert record["model"] == "asked/model"
    assert record["input_tokens"] is None and record["total_tokens"] is None
    with pytest.raises(ValueError, match="timezone-aware"):
        stamp(response, call, llm._settings, at=datetime(2025, 1, 1))


def test_the_request_hash_is_the_key_of_the_replay_file_for_that_request(
    gateway: OfflineGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_RECORD, str(tmp_path))
    with FlotorchLLM("offline/assistant", KEY, gateway.url) as llm:
        response, request = answer_with_its_request(llm, temperature=1.0, max_tokens=50)
    (recording,) = tmp_path.glob("*.json")
    key = json.loads(recording.read_text())["key"]
    assert response.request_hash == request_hash(request.body) == key
    # 1 and 1.0 are the same temperature for replay, so for the hash too.
    assert request_hash({**request.body, "temperature": 1}) == key


# -- every path carries the same record -------------------------------------------------------------
async def _every_path(gateway: OfflineGateway, cache: Path) -> dict[str, tuple[LLMResponse, dict[str, Any]]]:
    """One answer per path, each with the request body it answered (as the gateway, or the cache for a
    hit, saw it): invoke, ainvoke, stream, astream, cache hits of both, batch items, a comparison."""
    from flotorch_nb.compare import acompare

    asked = [{"role": "user", "content": "every path"}]
    out: dict[str, tuple[LLMResponse, dict[str, Any]]] = {}
    async with FlotorchLLM("offline/echo", KEY, gateway.url, cache=cache) as llm:
        out["invoke"] = (await asyncio.to_thread(llm.invoke, asked), gateway.requests[-1].body)
        with llm.stream(asked, temperature=0.5) as chat:
            "".join(chat)
        out["stream"] = (chat.response, gateway.requests[-1].body)
        out["ainvoke"] = (await llm.ainvoke(asked, max_tokens=20), gateway.requests[-1].body)
        async with llm.astream(asked, max_tokens=21) as achat:
            async for _ in achat:
                pass
        out["astream"] = (achat.response, gateway.requests[-1].body)
        hit = await llm.ainvoke(asked)
        out["cache hit"] = (hit, out["invoke"][1])
        with llm.stream(asked, temperature=0.5) as again:
            "".join(again)
        out["streamed cache hit"] = (again.response, out["stream"][1])
        result = await llm.abatch(["b1"], progress=False, cache=False)
        out["batch item"] = (result[0].answer.to_response(), gateway.requests[-1].body)  # type: ignore[union-attr]
        cached = await llm.abatch(["every path"], progress=False)
        out["batch cache hit"] = (cached[0].answer.to_response(), out["invoke"][1])  # type: ignore[union-attr]
        comparison = await acompare(llm, [{"role": "user", "content": "column"}], ["offline/echo"])
        (column,) = comparison.results
        out["comparison column"] = (column.response, gateway.requests[-1].body)  # type: ignore[assignment]
        assert column.provenance is column.response.provenance  # type: ignore[union-attr]
    return out


@pytest.mark.anyio
async def test_every_path_carries_its_record_on_the_response(gateway: OfflineGateway, tmp_path: Path) -> None:
    gateway.requests.clear()
    answers = await _every_path(gateway, tmp_path / "answers.sqlite")
    assert answers["cache hit"][0].source == answers["streamed cache hit"][0].source == "cache"
    assert answers["batch cache hit"][0].source == "cache"
    for path, (response, body) in answers.items():
        record = response.provenance
        assert record is not None and tuple(record) == FIELDS, path
        assert record["request_hash"] == request_hash(body), path  # the request it answered
        assert record["source"] == response.source and record["gateway"] == gateway.url, path
        assert record["model"] == "offline/echo" and re.fullmatch(r"[0-9a-f]{64}", record["request_hash"])
    # A hit is the answer to the same request, so it carries the same hash, dated when it was served.
    assert answers["cache hit"][0].request_hash == answers["invoke"][0].request_hash
    assert answers["cache hit"][0].provenance != answers["invoke"][0].provenance


def test_the_session_log_keeps_the_record_of_an_answer_and_none_of_a_failure(gateway: OfflineGateway) -> None:
    from flotorch_nb.notebook.answer_log import AnswerLog

    log = AnswerLog()
    with FlotorchLLM("offline/assistant", KEY, gateway.url) as llm:
        llm.hooks.after_call.append(log.after_call)
        response = llm.invoke(USER)
        with pytest.raises(flotorch_nb.NotFoundError):
            llm.invoke(USER, model="no-such/model")
    (record,) = log.records
    assert record.pop("by") == "code" and record == response.provenance


def test_no_surface_builds_a_record_of_its_own() -> None:
    """The record is made in one place (``_provenance.stamp``), called where a call finishes; every
    other module reads ``response.provenance``. A module that fills a record's fields itself, or
    hashes a request for one, is rebuilding it."""
    package = Path(flotorch_nb.__file__).parent
    allowed_stamp = {"_pipeline/_call.py"}  # the call pipeline: where an answer (a cache hit too) is finished
    for path in package.rglob("*.py"):
        name = path.relative_to(package).as_posix()
        if name in (
            "_pipeline/_provenance.py",
            "_records.py",  # the record's fields, named once
            "_request_key.py",
            "_transport/_boundary.py",
        ) or name.startswith("gateway/"):
            continue
        text = path.read_text(encoding="utf-8")
        assert "flotorch_nb_version" not in text, name
        assert "provenance_of" not in text and "Stamp" not in text, name
        assert not re.search(r"(?<!def )(?<!\.)\brequest_hash\(", text), name  # call.request_hash(): once
        if re.search(r"\bstamp\(", text):
            assert name in allowed_stamp, name


def notebook_with(records_by_cell: list[list[dict[str, Any]]]) -> nbformat.NotebookNode:
    cells = []
    for records in records_by_cell:
        cell = nbformat.v4.new_code_cell("%%flotorch\nHello")
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text="noise\n"),
            nbformat.v4.new_output(
                "display_data", data={"text/plain": "answer"}, metadata=output_metadata(records)
            ),
        ]
        cells.append(cell)
    cells.insert(1, nbformat.v4.new_markdown_cell("# not code"))
    return nbformat.v4.new_notebook(cells=cells)


RECORD = {
    "model": "offline/assistant",
    "gateway": "http://127.0.0.1:8765",
    "request_id": "req_1",
    "timestamp": "2025-05-01T12:00:00.123Z",
    "input_tokens": 7,
    "output_tokens": 40,
    "total_tokens": 47,
    "latency_ms": 12.5,
    "source": "offline",
    "flotorch_nb_version": "0.1.0",
    "request_hash": "ab" * 32,
}


def test_a_notebook_saved_with_nbformat_reads_back_one_row_per_answer(tmp_path: Path) -> None:
    unknown = {
        **RECORD,
        "model": "offline/echo",
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
    }
    nb = notebook_with([[RECORD], [RECORD | {"source": "replay"}, unknown]])
    nbformat.validate(nb)
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)

    frame = provenance(path)
    assert list(frame.columns) == ["cell", "cell_id", "output", *FIELDS]
    assert frame["cell"].tolist() == [0, 2, 2] and frame["output"].tolist() == [1, 1, 1]
    assert frame["cell_id"].tolist() == [nb.cells[0].id, nb.cells[2].id, nb.cells[2].id]
    assert frame["source"].tolist() == ["offline", "replay", "offline"]
    assert str(frame["total_tokens"].dtype) == "Int64" and frame["total_tokens"].isna().tolist() == [
        False,
        False,
        True,
    ]
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2025-05-01T12:00:00.123Z")
    assert flotorch_nb.provenance is provenance


def test_reading_back_keeps_only_known_fields_and_strips_credentials(tmp_path: Path) -> None:
    tampered = RECORD | {"gateway": "https://u:secret@gw.example/?api_key=secret", "api_key": "secret"}
    path = tmp_path / "tampered.ipynb"
    nbformat.write(notebook_with([[tampered]]), path)
    frame = provenance(path)
    assert "api_key" not in frame.columns
    assert frame["gateway"].tolist() == ["https://gw.example"]
    assert "secret" not in frame.to_csv()


def test_a_notebook_without_answers_gives_an_empty_table_and_a_non_notebook_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    assert provenance(path).empty
    (tmp_path / "x.ipynb").write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"x.ipynb is not a notebook: not valid JSON .*line 1"):
        provenance(tmp_path / "x.ipynb")
    (tmp_path / "y.ipynb").write_text("[]")
    with pytest.raises(ConfigurationError, match="has no 'cells' list"):
        provenance(tmp_path / "y.ipynb")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        provenance(tmp_path / "missing.ipynb")
    # Foreign or damaged metadata is skipped, not fatal.
    assert (
        list(records_in({"cells": [{"outputs": [{"metadata": {METADATA_KEY: {"provenance": "x"}}}]}]})) == []
    )


@pytest.mark.slow
def test_a_comparison_run_in_a_real_kernel_is_saved_with_its_provenance(
    gateway: OfflineGateway, tmp_path: Path
) -> None:
    """ipykernel displays the comparison; the metadata it returns lands in the saved file."""
    from nbclient import NotebookClient

    source = (
        "from flotorch_nb import FlotorchLLM\n"
        "llm = FlotorchLLM()  # model, key and gateway from FLOTORCH_*\n"
        "llm.compare([{'role': 'user', 'content': 'Name three colours of the sea.'}],"
        " ['offline/assistant', 'offline/echo'])"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    env |= {
        "FLOTORCH_API_KEY": KEY,
        "FLOTORCH_BASE_URL": gateway.url,
        "FLOTORCH_MODEL_ID": "offline/assistant",
    }
    NotebookClient(nb, timeout=90, kernel_name="python3", startup_timeout=60).execute(
        cwd=str(tmp_path), env=env
    )
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)

    saved = json.loads(path.read_text())
    (output,) = saved["cells"][0]["outputs"]
    assert 'class="flotorch-compare"' in "".join(output["data"]["text/html"])
    frame = provenance(path)
    assert frame["model"].tolist() == ["offline/assistant", "offline/echo"]
    assert set(frame["source"]) == {"offline"} and frame["gateway"].tolist() == [gateway.url] * 2
    assert frame["request_hash"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert KEY not in path.read_text()


@pytest.mark.slow
def test_the_answers_of_a_notebook_run_in_a_real_kernel_are_saved_with_their_provenance(
    tmp_path: Path,
) -> None:
    """A %%flotorch answer, a comparison and a chat panel's static transcript, each with the records of
    its answers in the saved file; the kernel's own offline gateway answers (no FLOTORCH_* set)."""
    from nbclient import NotebookClient

    cells = [
        "%load_ext flotorch_nb",
        "%%flotorch\nWhat is a token in a language model?",
        "%%flotorch -m offline/concise,offline/verbose --no-stream\nWhat is a token in a language model?",
        "from flotorch_nb.widgets import ChatPanel\npanel = ChatPanel()\npanel",
        "panel.send('Why is the sea salty?')\nawait panel.wait()",
        "%flotorch provenance",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    NotebookClient(nb, timeout=90, kernel_name="python3", startup_timeout=60).execute(
        cwd=str(tmp_path), env=env
    )
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)

    frame = provenance(path)
    assert frame["cell"].tolist() == [1, 2, 2, 3]
    assert frame["model"].tolist() == [
        "offline/assistant",
        "offline/concise",
        "offline/verbose",
        "offline/assistant",
    ]
    assert set(frame["source"]) == {"offline"} and frame["gateway"].str.startswith("http://127.0.0.1:").all()
    assert frame["request_hash"].str.fullmatch(r"[0-9a-f]{64}").all() and frame["request_id"].notna().all()
    assert (frame["timestamp"].dt.tz is not None) and frame["total_tokens"].gt(0).all()
    # The session's own list names the same answers, and who asked.
    listing = "".join(nb.cells[5].outputs[0]["data"]["text/plain"])
    assert [line.split()[1] for line in listing.splitlines()[1:]] == ["magic", "magic", "magic", "chat"]
    for digest in frame["request_hash"]:
        assert digest[:12] in listing
    # Exported to HTML, the comparison's table and chart and the chat's static copy are still there.
    from nbconvert import HTMLExporter

    exported, _ = HTMLExporter().from_filename(str(path))
    assert exported.count('class="flotorch-compare-model"') == 2 and "data:image/png;base64," in exported
    assert "flotorch-static-transcript" in exported and "Why is the sea salty?" in exported


def test_a_count_written_as_text_is_a_configuration_error_naming_the_cell_and_field(tmp_path: Path) -> None:
    path = tmp_path / "edited.ipynb"
    nbformat.write(notebook_with([[RECORD], [RECORD | {"input_tokens": "12"}]]), path)
    with pytest.raises(ConfigurationError, match=r"edited.ipynb, cell 2, output 1: .*input_tokens .*'12'"):
        provenance(path)


def test_the_request_key_is_one_leaf_that_replay_cache_and_provenance_share() -> None:
    """Provenance and the answer cache hash a request with the leaf ``_request_key`` (replay
    re-exports it): neither reaches up into ``replay`` for it."""
    from flotorch_nb import _request_key, replay

    assert replay.request_key is _request_key.request_key
    assert replay.canonical_request is _request_key.canonical_request
    package = Path(flotorch_nb.__file__).parent
    for name in ("_pipeline/_provenance.py", "cache.py", "_pipeline/_call.py"):
        text = (package / name).read_text(encoding="utf-8")
        assert "replay" not in re.findall(r"^\s*from \.+(\w+)", text, re.MULTILINE), name
