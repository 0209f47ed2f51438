"""The teaching notebooks: committed clean, and runnable with no gateway and no key from recordings.

Each notebook runs under nbclient with ``FLOTORCH_REPLAY`` pointing at its recordings in
``notebooks/recordings/<stem>/`` and no FLOTORCH_API_KEY/FLOTORCH_BASE_URL, so ``%load_ext`` must not
start a gateway and every request must be answered from a file. A few outputs are compared with the
recorded answers, so a notebook that silently asked something else (and showed an error inside a
widget instead of raising) cannot pass. Regenerate recordings with
``python -m flotorch_nb.replay record-notebooks``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RECORDINGS = NOTEBOOKS / "recordings"
SERIES = [
    "01_quickstart",
    "02_magics",
    "03_chat_panel",
    "04_structured_output",
    "05_tool_calling",
    "06_streaming_and_async",
]

#: Things that look like a real credential. Placeholders such as ``...`` or ``<your_api_key>`` pass.
KEY_LIKE = [
    re.compile(r"sk-[A-Za-z0-9_\-]{12,}"),
    re.compile(r"Bearer\s+[A-Za-z0-9._~+/\-]{8,}", re.IGNORECASE),
    re.compile(r"""api_key\s*=\s*["'](?!<)[^"']+["']""", re.IGNORECASE),
    re.compile(r"""FLOTORCH_API_KEY\s*[=:]\s*["']?(?!\.\.\.|<|\$)[A-Za-z0-9_\-]{6,}"""),
]


def _path(stem: str) -> Path:
    return NOTEBOOKS / f"{stem}.ipynb"


def _key_like(text: str) -> list[str]:
    return [m.group(0) for pattern in KEY_LIKE for m in pattern.finditer(text)]


def test_the_series_is_complete_and_nothing_else_is_numbered() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")) == SERIES


def test_the_key_pattern_catches_keys_and_spares_placeholders() -> None:
    assert _key_like('api_key="abc123"') and _key_like("Authorization: Bearer abcdefgh1234")
    assert _key_like("sk-" "proj-abcdefghijklmnop") and _key_like("%env FLOTORCH_API_KEY=abcdef12")
    assert not _key_like('API_KEY = "<your_api_key>"') and not _key_like("export FLOTORCH_API_KEY=...")
    assert not _key_like("api_key=os.environ.get('FLOTORCH_API_KEY')")


@pytest.mark.parametrize("stem", SERIES)
def test_committed_without_outputs_counts_or_keys(stem: str) -> None:
    text = _path(stem).read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{stem}: a code cell has outputs"
            assert cell.execution_count is None, f"{stem}: a code cell has an execution count"
        assert "attachments" not in cell
    assert _key_like(text) == [], f"{stem}: key-like text"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code.source.strip() == "%load_ext flotorch_nb", "every notebook starts the same way"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("stem", SERIES)
def test_recordings_exist_and_hold_no_key(stem: str) -> None:
    files = sorted((RECORDINGS / stem).glob("*.json"))
    assert files, f"no recordings for {stem}: run python -m flotorch_nb.replay record-notebooks"
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert _key_like(text) == [], path.name
        assert not re.search(r"(?i)authorization", text), path.name
        record = json.loads(text)
        assert (
            record["request"]["body"]["model"].startswith("offline/") or record["response"]["status"] == 404
        )


# -- running them ------------------------------------------------------------------------------------


def _run(stem: str, tmp_path: Path) -> nbformat.NotebookNode:
    """Execute a copy of the notebook in replay mode, with no gateway and no key anywhere."""
    from nbclient import NotebookClient

    nb = nbformat.read(_path(stem), as_version=4)
    # One extra cell asks the kernel itself whether an embedded gateway was started.
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "from flotorch_nb import _offline\nprint('gateway:', _offline.gateway_url())"
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    env["FLOTORCH_REPLAY"] = str(RECORDINGS / stem)
    env["FLOTORCH_MODEL_ID"] = "offline/assistant"
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(nb, timeout=90, kernel_name="python3", startup_timeout=60)
    client.execute(cwd=str(work), env=env)
    return nb


def _texts(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.extend(str(v) for k, v in output.data.items() if k.startswith("text/"))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def _recorded_content(stem: str, slug: str, *, turn: int | None = None) -> str:
    """The answer text recorded for the request whose last user message starts like ``slug``."""
    matches = []
    for path in sorted((RECORDINGS / stem).glob(f"{slug}*-*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        messages = record["request"]["body"]["messages"]
        matches.append((len(messages), record["response"]))
    assert matches, f"no recording {slug!r} in {stem}"
    matches.sort(key=lambda m: m[0])
    response = matches[turn if turn is not None else 0][1]
    if "json" in response:
        return str(response["json"]["choices"][0]["message"]["content"] or "")
    text = []
    for event in response["events"]:
        if event != "[DONE]":
            for choice in json.loads(event).get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text)


def _cell_with(nb: nbformat.NotebookNode, needle: str) -> Any:
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


#: Per notebook: (a snippet of the cell's source, the recording's slug, which turn) whose answer must
#: appear in that cell's output.
CHECKS: dict[str, list[tuple[str, str, int | None]]] = {
    "01_quickstart": [
        ("print(resp.content)", "summarize-flotorch-in-one-line", None),
        ("asyncio.run(main())", "a-haiku-about-the-sea", None),
    ],
    "02_magics": [],
    "03_chat_panel": [],
    "04_structured_output": [("raw JSON text", "describe-a-classic-science-fiction-film", 0)],
    "05_tool_calling": [("print(final.content)", "what-is-the-weather-like-in-paris", -1)],
    "06_streaming_and_async": [("rivers", "write-a-haiku-about-rivers", None)],
}


#: Per notebook: what a reader is told they will see, which must really be there.
PROMISES: dict[str, list[str]] = {
    "01_quickstart": ["status: 404", "ConfigurationError: base_url", "InvalidRequestError:"],
    "02_magics": ["Your name is Ada", "refused before sending", "UsageError: %%flotorch", "def factorial"],
    "03_chat_panel": [
        "done\n",
        "finished turn: None",
        "status of the last turn: stopped",
        "offline/echo -> Echo",
    ],
    "04_structured_output": ["Movie int", "StructuredOutputError:"],
    "05_tool_calling": [
        "finish_reason: tool_calls",
        "get_weather({'city': 'Paris'",
        "('get_weather', {'city': 'Tokyo'",
    ],
    "06_streaming_and_async": ["[stopped]", "8 answers in", "failed: NotFoundError"],
}


@pytest.mark.slow
@pytest.mark.parametrize("stem", SERIES)
def test_notebook_replays_with_no_gateway_and_shows_the_recorded_answers(stem: str, tmp_path: Path) -> None:
    nb = _run(stem, tmp_path)
    outputs = "\n".join(_texts(c) for c in nb.cells if c.cell_type == "code")
    assert "replaying recorded answers" in _texts(_cell_with(nb, "%load_ext flotorch_nb"))
    assert "using the OFFLINE gateway" not in outputs
    assert _texts(nb.cells[-1]).strip() == "gateway: None", "replay mode must not start a gateway"
    assert "No recording for this request" not in outputs, (
        "a request without a recording (shown in a widget?)"
    )
    assert "ReplayMissError" not in outputs
    assert not any(o.output_type == "error" for c in nb.cells for o in c.get("outputs", []))
    for promise in PROMISES[stem]:
        assert promise in outputs, f"{stem}: the output does not show {promise!r}"
    for needle, slug, turn in CHECKS[stem]:
        expected = _recorded_content(stem, slug, turn=turn)
        assert expected.strip(), f"{slug}: the recorded answer is empty"
        assert expected.strip() in _texts(_cell_with(nb, needle)), f"{stem}: {needle!r} did not show {slug}"
