"""The teaching notebooks: committed clean, runnable on any gateway, replayed exactly from recordings.

Static checks: every notebook is committed without outputs, execution counts or anything key-like,
and no code cell names an ``offline/...`` model, so each runs unchanged against a real gateway.

Replay: each notebook runs under nbclient with ``FLOTORCH_REPLAY`` pointing at its recordings in
``notebooks/recordings/<stem>/`` and no FLOTORCH_API_KEY/FLOTORCH_BASE_URL, so ``%load_ext`` must not
start a gateway and every request must be answered from a file. Then replay is held to the files:

- the recordings replay loaded (noted inside the kernel by wrapping ``Cassette.load``, and in every
  Dask worker process the notebook starts by the same wrapper, installed there as a worker preload)
  are exactly the files shipped for that notebook, none stale;
- every recorded answer's text is in the notebook's outputs (whole, or the part ``SHOWN_IN_PART``
  names), so a notebook that silently asked something else, or showed an error inside a widget
  instead of raising, cannot pass;
- every shipped file is well formed (``_format_problems``): the fields replay reads, a ``key`` that is
  the request key of the request it stores and names the file, only the headers a recording keeps,
  an answer in OpenAI's shape, written the way the recorder writes.

Recordings are fixtures, not a mirror of the embedded gateway's wording: nothing here compares them
with what the gateway answers today, so rewording ``offline/assistant`` rewrites no recording. What
ties a file to its notebook is its request key: replay answers a request only from the file whose key
is that request's (a changed prompt or parameter misses), and a file no request loads is stale.

The last tests edit one answer, one request and add one stale file in a copy of a folder, and check
that these checks treat exactly those files as they should. Regenerate the recordings with
``python -m flotorch_nb.replay record-notebooks``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from flotorch_nb.notebook.views import extract_code
from tests.support.notebooks import NOTEBOOKS, RECORDINGS, SERIES

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


@pytest.mark.parametrize("stem", SERIES[:-1])
def test_each_notebook_but_the_last_ends_by_naming_the_next(stem: str) -> None:
    nb = nbformat.read(_path(stem), as_version=4)
    last = [cell.source for cell in nb.cells if cell.cell_type == "markdown"][-1]
    following = SERIES[SERIES.index(stem) + 1]
    assert f"Next: **`{following}.ipynb`**" in last and "end of the series" not in last


def test_the_key_pattern_catches_keys_and_spares_placeholders() -> None:
    assert _key_like('api_key="abc123"') and _key_like("Authorization: Bearer abcdefgh1234")
    assert _key_like("sk-" + "proj-abcdefghijklmnop") and _key_like("%env FLOTORCH_API_KEY=abcdef12")
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


# -- any gateway: no offline model ids in code ---------------------------------------------------------

#: An offline gateway model id (``offline/assistant``, ``offline/echo``...), as it would appear in code.
OFFLINE_MODEL_ID = re.compile(r"offline/[\w.\-]*")


def _offline_model_ids(source: str) -> list[str]:
    return OFFLINE_MODEL_ID.findall(source)


def test_the_offline_model_rule_catches_ids_and_spares_other_code() -> None:
    assert _offline_model_ids("%%flotorch -m offline/echo\nRepeat after me.") == ["offline/echo"]
    assert _offline_model_ids('os.environ.get("FLOTORCH_MODEL_ID", "offline/assistant")') == [
        "offline/assistant"
    ]
    assert _offline_model_ids('ChatPanel(models=[MODEL_ID, "offline/echo"])') == ["offline/echo"]
    assert not _offline_model_ids('if resp.offline:\n    print("offline gateway")')
    assert not _offline_model_ids('llm.invoke(messages, model="no-such/model")')


@pytest.mark.parametrize("stem", SERIES)
def test_no_code_cell_names_an_offline_model(stem: str) -> None:
    """The notebooks must run unchanged on a real gateway, which serves no ``offline/...`` model.

    The rule is deliberately the simplest one: no code cell contains ``offline/`` at all, not even
    behind a test of offline-ness. Code takes its model from ``FLOTORCH_MODEL_ID`` (``%load_ext`` sets
    it to ``offline/assistant`` when it starts the offline gateway); Markdown may name offline models.
    """
    nb = nbformat.read(_path(stem), as_version=4)
    found = {
        cell.id: ids
        for cell in nb.cells
        if cell.cell_type == "code" and (ids := _offline_model_ids(cell.source))
    }
    assert found == {}, f"{stem}: code cells name offline models (use FLOTORCH_MODEL_ID): {found}"


# -- running them ------------------------------------------------------------------------------------

#: Runs first in the test's copy of a notebook: every request replay answers from a file is noted (by
#: its key, which is what names the file) on the replay module, for the last cell to report.
SPY_CELL = """\
def _flotorch_test_spy():
    import flotorch_nb.replay as replay

    load = replay.Cassette.load
    replay.loaded_keys = set()

    def noting_load(self, canonical):
        answer = load(self, canonical)  # a miss raises: only answered requests are noted
        replay.loaded_keys.add(replay.request_key(canonical))
        return answer

    replay.Cassette.load = noting_load


_flotorch_test_spy()
del _flotorch_test_spy"""

#: Dask workers are processes of their own (spawned by the kernel, inheriting its environment, so
#: FLOTORCH_REPLAY too): the spy above cannot see their loads. This module is every worker's preload
#: (``distributed.worker.preload``, set through the kernel's environment): at worker start it wraps
#: ``Cassette.load`` in that process the same way, appending each key replay answered to a file of
#: its own in ``WORKER_LOADS``, for the report cell to read.
WORKER_SPY = """\
import os


def dask_setup(worker):
    import flotorch_nb.replay as replay

    load = replay.Cassette.load
    if getattr(load, "flotorch_test_spy", False):
        return
    log = os.path.join(os.environ["NB_REPLAY_WORKER_LOADS"], f"worker-{os.getpid()}.keys")

    def noting_load(self, canonical):
        answer = load(self, canonical)  # a miss raises: only answered requests are noted
        with open(log, "a", encoding="utf-8") as keys:
            keys.write(replay.request_key(canonical) + "\\n")
        return answer

    noting_load.flotorch_test_spy = True
    replay.Cassette.load = noting_load
"""
WORKER_LOADS = "NB_REPLAY_WORKER_LOADS"

#: Runs last: the kernel's own gateway (None: none was started), the keys replay loaded in the kernel
#: and those it loaded in worker processes.
REPORT_CELL = """\
import json
import os
import pathlib
import flotorch_nb.replay
from flotorch_nb.notebook import autostart as _offline

_in_workers = {
    key
    for path in pathlib.Path(os.environ["NB_REPLAY_WORKER_LOADS"]).glob("*.keys")
    for key in path.read_text(encoding="utf-8").split()
}
print(json.dumps({
    "gateway": _offline.gateway_url(),
    "loaded": sorted(flotorch_nb.replay.loaded_keys),
    "in_workers": sorted(_in_workers),
}))"""


@dataclass
class Replayed:
    """A notebook executed in replay mode: its outputs, the kernel's own gateway, the keys replayed
    (``loaded``: in the kernel or in any worker process; ``in_workers``: those loaded in workers)."""

    nb: nbformat.NotebookNode
    gateway: str | None
    loaded: set[str]
    in_workers: set[str]


def _replay(stem: str, folder: Path, work: Path) -> Replayed:
    """Execute a copy of the notebook in replay mode from ``folder``, with no gateway and no key."""
    from nbclient import NotebookClient

    nb = nbformat.read(_path(stem), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(SPY_CELL))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT_CELL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTORCH_")}
    env["FLOTORCH_REPLAY"] = str(folder)
    env["FLOTORCH_MODEL_ID"] = "offline/assistant"
    work.mkdir(parents=True, exist_ok=True)
    workers = work.with_name(f"{work.name}-workers")
    (workers / "loads").mkdir(parents=True, exist_ok=True)
    spy = workers / "flotorch_test_worker_spy.py"
    spy.write_text(WORKER_SPY, encoding="utf-8")
    env[WORKER_LOADS] = str(workers / "loads")
    env["DASK_DISTRIBUTED__WORKER__PRELOAD"] = json.dumps([str(spy)])  # dask reads it as a list
    client = NotebookClient(nb, timeout=90, kernel_name="python3", startup_timeout=60)
    client.execute(cwd=str(work), env=env)
    report = json.loads(_texts(nb.cells.pop()))
    nb.cells.pop(0)
    in_workers = set(report["in_workers"])
    return Replayed(nb, report["gateway"], set(report["loaded"]) | in_workers, in_workers)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Replayed]:
    """Each notebook replayed from its shipped recordings, once per module (the checks share the run)."""
    runs: dict[str, Replayed] = {}

    def run(stem: str) -> Replayed:
        if stem not in runs:
            runs[stem] = _replay(stem, RECORDINGS / stem, tmp_path_factory.mktemp(f"replay-{stem}"))
        return runs[stem]

    return run


def _texts(cell: Any) -> str:
    """What a cell showed: streams, text/* outputs (HTML unescaped) and errors, in order."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            for kind, value in output.data.items():
                if kind == "text/html":
                    parts.append(html.unescape(str(value)))
                elif kind.startswith("text/"):
                    parts.append(str(value))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def _outputs(nb: nbformat.NotebookNode) -> str:
    return "\n".join(_texts(c) for c in nb.cells if c.cell_type == "code")


def _deltas(response: dict[str, Any]) -> list[str]:
    """A recorded answer's text as the client yields it: the JSON answer's content, or a stream's
    non-empty content deltas."""
    if "json" in response:
        choices = response["json"].get("choices") or []
        return [str((c.get("message") or {}).get("content") or "") for c in choices]
    pieces = []
    for event in response.get("events", []):
        if event != "[DONE]":
            for choice in json.loads(event).get("choices") or []:
                pieces.append((choice.get("delta") or {}).get("content") or "")
    return [piece for piece in pieces if piece]


def _recorded_content(stem: str, slug: str, *, turn: int | None = None) -> str:
    """The answer text recorded for the request whose last user message starts like ``slug``."""
    matches = []
    for path in sorted((RECORDINGS / stem).glob(f"{slug}*-*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        messages = record["request"]["body"]["messages"]
        matches.append((len(messages), record["response"]))
    assert matches, f"no recording {slug!r} in {stem}"
    matches.sort(key=lambda m: m[0])
    return "".join(_deltas(matches[turn if turn is not None else 0][1]))


def _recorded_key(stem: str, slug: str) -> str:
    """The request key of the one recording whose file name starts with ``slug``."""
    paths = list((RECORDINGS / stem).glob(f"{slug}-*.json"))
    assert len(paths) == 1, f"{stem}: {len(paths)} recordings named {slug!r}"
    return str(json.loads(paths[0].read_text(encoding="utf-8"))["key"])


def _cell_with(nb: nbformat.NotebookNode, needle: str) -> Any:
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


#: Per notebook: (a snippet of the cell's source, the recording's slug, which turn) whose answer must
#: appear in that very cell's output.
CHECKS: dict[str, list[tuple[str, str, int | None]]] = {
    "01_quickstart": [
        ("print(resp.content)", "summarize-flotorch-in-one-line", None),
        ("asyncio.run(main())", "a-haiku-about-the-sea", None),
    ],
    "02_magics": [
        ("which model are you", "in-one-sentence-which-model-are-you", None),
        ("What is my name?", "what-is-my-name", None),
    ],
    "03_chat_panel": [
        ('panel.send("Can you give me an example?")', "can-you-give-me-an-example", None),
        ("second.send(", "what-does-a-low-temperature", None),
    ],
    "04_structured_output": [("raw JSON text", "describe-a-classic-science-fiction-film", 0)],
    "05_tool_calling": [("print(final.content)", "what-is-the-weather-like-in-paris", -1)],
    "06_streaming_and_async": [("rivers", "write-a-haiku-about-rivers", None)],
    "07_batch": [
        ("for item in result:", "write-a-haiku-about-autumn", None),
        ("for word, item in zip(words, italian):", "translate-friend-into-italian", None),
        ("finished = capped.retry_failed()", "what-is-100-8", None),
        ("more = facts + [", "give-one-fun-fact-about-the-number-6", None),
        ("table = out.compute()", "translate-please-into-french", None),
    ],
    "08_compare_and_cost": [("What is a token", "what-is-a-token-in-a-language-model", None)],
    "09_tools": [
        ("--tools get_weather -o both", "what-is-the-weather-in-paris-and-in-rome", -1),
        ("validation_retries=2)", "your-answer-was-not-valid", None),
        ("--tools get_weather,units", "what-is-the-weather-in-oslo-then-convert", -1),
        ("%%flotorch --agent agent", "what-is-the-weather-in-rome", -1),
    ],
    "10_evaluate": [("row.judge_explanation", "name-the-planets-of-the-solar-system", None)],
    "11_production": [
        ("print(item.content)", "what-is-30-2", None),
        ('("friend", "Italian")', "translate-friend-into-italian", None),
    ],
}

#: Answers a notebook shows only in part, on purpose: (notebook, recording slug) -> (why, the part
#: shown, computed from the answer's deltas). Every other answer with text must be shown whole.
SHOWN_IN_PART: dict[tuple[str, str], tuple[str, Callable[[list[str]], str]]] = {
    ("02_magics", "write-a-python-function-that-returns-the"): (
        "-f code shows only the answer's first code block",
        lambda deltas: extract_code("".join(deltas)) or "",
    ),
    ("06_streaming_and_async", "list-ten-facts-about-the-ocean"): (
        "the cell leaves the stream after its first 6 deltas",
        lambda deltas: "".join(deltas[:6]),
    ),
    ("10_evaluate", "question"): (
        "a judge's grade (a JSON object) is shown as its explanation, beside the answer it grades",
        lambda deltas: json.loads("".join(deltas))["explanation"],
    ),
}


#: Per notebook: what a reader is told they will see, which must really be there.
PROMISES: dict[str, list[str]] = {
    "01_quickstart": ["NotFoundError\nstatus: 404", "ConfigurationError: base_url", "InvalidRequestError:"],
    "02_magics": [
        "Your name is Ada",
        "refused before sending",
        "UsageError: %%flotorch",
        "def factorial",
        "an LLMResponse: True",
        # %flotorch history shows the prompt as sent: names filled in, JSON and {{...}} as promised.
        "explain vector databases to a high-school student.\nThen show one record such a database "
        'stores, as JSON like {"id": 1, "vector": [0.12, -0.4]}.\n(In a prompt template, {topic} would',
    ],
    "03_chat_panel": [
        "done\n",
        "wait() after a stop returns: None",
        "status of the last turn: stopped",
        "offline/assistant -> ",
    ],
    "04_structured_output": ["Movie int", "StructuredOutputError:", '{"film": '],
    "05_tool_calling": [
        "finish_reason: tool_calls",
        "get_weather({'city': 'Paris'",
        "('get_weather', {'city': 'Tokyo'",
    ],
    "06_streaming_and_async": ["[stopped]", "8 answers in", "failed: NotFoundError"],
    "07_batch": [
        "errors     InvalidRequestError: 1",
        "BatchError: 1 of 3 items have no answer",
        "errors     BudgetExceededError: 2",
        "sent again: 2 of 5 items",
        "requests sent: 0\nall from the cache: True",
        "ok         4 (4 from the cache)",
        "requests sent: 2 | from the cache: 4",
        "4 answers in",
        "2 workers",
    ],
    "08_compare_and_cost": [
        "3 of 3 models answered · fastest ",
        "3 of 4 models answered",
        "NotFoundError: HTTP 404",
        "Latency and tokens per model: ",
        "cost unknown",
        "+ 1 call of unknown cost",
        "refused before sending: money budget",
        "request hash",
        "Tokens and cost per model: ",
    ],
    "09_tools": [
        '"description": "The city\'s name, e.g. Paris."',
        '"enum": [\n            "celsius",\n            "fahrenheit"\n          ]',
        "cost: $0.0",
        'calls in the first turn: [\'{"city": "Paris"',
        "approved=False, result=None, error='denied: groups of more than 6 must phone the restaurant'",
        "error sent back to the model: ValueError: no weather station in Atlantis",
        "StructuredOutputError: the model's answer does not validate against Order",
        "attempts: 2\n",
        "usage_total of every attempt: Usage(",
        "('celsius_to_fahrenheit',",
        "-> 7.0 °C = 44.6 °F",
        "RunUsage(input_tokens=",
    ],
    "10_evaluate": [
        "EvalResult: 10 samples x 3 models",
        "Wilson score interval",
        "flotorch-eval-chart",
        "exact McNemar test",
        # The Markdown reads the models' differences and the paired test off these numbers.
        "mean 0.400 vs 0.800: difference -0.400 (95% CI -0.686 to +0.020), p = 0.125",
        "discordant pairs: 0 only offline/concise right, 4 only offline/assistant right",
        "caveat: only 10 samples",
        "judge judge: 30 calls",
    ],
    "11_production": [
        "concurrency='auto', settled at ",
        "passed over: [Skipped(model='offline/concise', reason='server_error')]",
        "answered by: offline/verbose",
        "'fallbacks': [['offline/concise', 'server_error']]",
        "call log on: every call of this kernel is recorded in ",
        "Translate friend into Italian.",
        "exported 3 calls to ",
        "3 calls exported to calls.jsonl",
    ],
}

#: Per notebook: recordings (by slug) that its Dask cell replays in worker processes, not the kernel.
#: Every other notebook must replay nothing in worker processes.
IN_WORKERS: dict[str, list[str]] = {
    "07_batch": [
        "translate-hello-into-spanish",
        "translate-good-morning-into-italian",
        "translate-thank-you-into-german",
        "translate-please-into-french",
        "translate-goodbye-into-italian",
        "translate-friend-into-spanish",
    ],
}


def _records(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.json"))]


def _renderings(text: str) -> list[str]:
    """The ways a whole answer may be shown: as written, and a JSON answer also as ``-f json`` and
    ``--schema`` show it, parsed and pretty-printed."""
    forms = [text]
    if _is_json(text):
        forms.append(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
    return forms


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _replay_problems(stem: str, run: Replayed, folder: Path) -> list[str]:
    """Where a replayed run and the recordings in ``folder`` disagree; each problem starts with a file name.

    (a) The files replay loaded must be exactly the files shipped: one never loaded is stale. (b) Every
    recorded answer with text must appear in the outputs, whole (see ``_renderings``) or, for the few
    listed in ``SHOWN_IN_PART``, the part the notebook shows; errors and answers that only call tools
    have no text to show, and (a) covers them.
    """
    problems = []
    shown = _outputs(run.nb)
    names: dict[str, str] = {}
    for name, record in _records(folder):
        key = record["key"]
        if key in names:
            problems.append(f"{name}: the same request as {names[key]}")
        names[key] = name
        if key not in run.loaded:
            problems.append(f"{name}: shipped but never replayed (stale: the notebook no longer asks it)")
        response = record["response"]
        deltas = _deltas(response)
        if response["status"] >= 400 or not "".join(deltas).strip():
            continue
        expected = "".join(deltas)
        for (where, slug), (_why, part) in SHOWN_IN_PART.items():
            if where == stem and name.startswith(f"{slug}-"):
                expected = part(deltas)
        if not any(form.strip() in shown for form in _renderings(expected)):
            problems.append(f"{name}: its answer is not in the outputs: {expected.strip()[:80]!r}")
    problems += [
        f"(request {key[:12]}): replayed from no shipped file" for key in sorted(run.loaded - names.keys())
    ]
    return problems


def _format_problems(folder: Path) -> list[str]:
    """Where the files in ``folder`` are not well-formed recordings; each problem starts with a file name.

    Structure only, never wording: what replay reads (``Cassette.load`` judges the response), a key
    that is the request key of the stored request (so a request edited by hand, or a key copied from
    another file, is named) and names the file, the recorder's own layout.
    """
    from flotorch_nb.replay import (
        FORMAT,
        RECORDED_HEADERS,
        Cassette,
        ReplayFileError,
        ReplayMissError,
        cassette_name,
        request_key,
    )

    problems = []
    for name, record in _records(folder):
        text = (folder / name).read_text(encoding="utf-8")
        if text != json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n":
            problems.append(f"{name}: not written as the recorder writes (indent 2, sorted keys)")
        if set(record) != {"format", "key", "request", "response"} or record["format"] != FORMAT:
            problems.append(f"{name}: fields {sorted(record)}, format {record.get('format')!r}")
            continue
        request, response = record["request"], record["response"]
        body = request.get("body") if isinstance(request, dict) else None
        if set(request) != {"method", "path", "body"} or not isinstance(body, dict):
            problems.append(f"{name}: the request must be method, path and a JSON body")
            continue
        if request["method"] != "POST" or request["path"] != "/api/openai/v1/chat/completions":
            problems.append(f"{name}: not a chat completion: {request['method']} {request['path']}")
        if not isinstance(body.get("model"), str) or not body.get("messages"):
            problems.append(f"{name}: the request body has no model or no messages")
        key = request_key(request)
        if record["key"] != key:
            problems.append(f"{name}: its key is not the request key of the request it stores")
            continue
        if name != cassette_name(request, key):
            problems.append(f"{name}: named {cassette_name(request, key)} by the recorder")
        try:
            Cassette(folder).load(request)  # what replay itself reads for this request
        except (ReplayFileError, ReplayMissError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        if not set(response.get("headers", {})) <= set(RECORDED_HEADERS):
            problems.append(f"{name}: headers a recording does not keep: {sorted(response['headers'])}")
        problems += [f"{name}: {p}" for p in _answer_shape(response, bool(body.get("stream")))]
    return problems


def _answer_shape(response: dict[str, Any], stream: bool) -> list[str]:
    """What is wrong with a recorded answer's shape (OpenAI's chat completion, error or stream)."""
    if response["status"] >= 400:
        error = (response.get("json") or {}).get("error")
        return (
            [] if isinstance(error, dict) and isinstance(error.get("message"), str) else ["no error message"]
        )
    if not stream:
        choices = (response.get("json") or {}).get("choices")
        ok = isinstance(choices, list) and choices and all("message" in c for c in choices)
        return [] if ok else ["a JSON answer without choices[].message"]
    events = response.get("events") or []
    if events[-1:] != ["[DONE]"]:
        return ["a stream that does not end with [DONE]"]
    chunks = [json.loads(e) for e in events[:-1]]
    if not chunks or any(c.get("object") != "chat.completion.chunk" for c in chunks):
        return ["a stream whose events are not chat.completion.chunk objects"]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("stem", SERIES)
def test_notebook_replays_with_no_gateway_exactly_from_its_recordings(
    stem: str, replayed: Callable[[str], Replayed]
) -> None:
    run = replayed(stem)
    nb = run.nb
    outputs = _outputs(nb)
    assert "replaying recorded answers" in _texts(_cell_with(nb, "%load_ext flotorch_nb"))
    assert "using the OFFLINE gateway" not in outputs
    assert run.gateway is None, "replay mode must not start a gateway"
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
    for where, slug in SHOWN_IN_PART:
        if where == stem:
            # One file, or a family sharing the slug (10_evaluate: every judge call starts "[Question]").
            assert list((RECORDINGS / stem).glob(f"{slug}-*.json")), f"SHOWN_IN_PART: {slug}?"
    in_workers = {_recorded_key(stem, slug) for slug in IN_WORKERS.get(stem, [])}
    assert run.in_workers == in_workers, f"{stem}: replayed in Dask worker processes: {run.in_workers}"
    assert _replay_problems(stem, run, RECORDINGS / stem) == []


@pytest.mark.parametrize("stem", SERIES)
def test_recordings_are_well_formed_fixtures(stem: str) -> None:
    assert _format_problems(RECORDINGS / stem) == [], f"{stem}: see notebooks/recordings/README.md"


# -- the checks above bite ---------------------------------------------------------------------------


def _copy_of(stem: str, tmp_path: Path) -> Path:
    copy = tmp_path / "recordings" / stem
    shutil.copytree(RECORDINGS / stem, copy)
    return copy


def _write(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _edit_one_answer(stem: str, folder: Path) -> str:
    """Change the text of the first whole, non-JSON answer by hand (the request, hence the key, stays).

    A JSON answer is skipped: prefixing it would make the notebook fail rather than show the edit.
    """
    for name, record in _records(folder):
        response = record["response"]
        text = "".join(_deltas(response))
        partial = any(where == stem and name.startswith(f"{slug}-") for where, slug in SHOWN_IN_PART)
        if response["status"] >= 400 or not text.strip() or partial or _is_json(text):
            continue
        if "json" in response:
            message = response["json"]["choices"][0]["message"]
            message["content"] = "EDITED " + message["content"]
        else:
            for index, event in enumerate(response["events"]):
                chunk = {} if event == "[DONE]" else json.loads(event)
                delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
                if delta.get("content"):
                    delta["content"] = "EDITED " + delta["content"]
                    response["events"][index] = json.dumps(chunk)
                    break
        _write(folder / name, record)
        return name
    raise AssertionError(f"{stem}: no answer to edit")


def _add_stale_recording(folder: Path) -> str:
    """A valid recording of a request the notebook does not make (a question it no longer asks)."""
    from flotorch_nb.replay import request_key

    _name, record = _records(folder)[0]
    record["request"]["body"]["messages"][-1]["content"] = "A question this notebook no longer asks."
    record["key"] = request_key(record["request"])
    stale = f"a-question-this-notebook-no-longer-asks-{record['key'][:12]}.json"
    _write(folder / stale, record)
    return stale


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["02_magics", "03_chat_panel"])
def test_an_answer_edited_by_hand_is_a_fixture_that_replays_as_written(
    stem: str, tmp_path: Path, replayed: Callable[[str], Replayed]
) -> None:
    """Recordings are fixtures: an answer may be reworded by hand (or by the gateway) without touching
    any test; replay shows the new words, and every check still passes."""
    copy = _copy_of(stem, tmp_path)
    edited = _edit_one_answer(stem, copy)
    # What the shipped files made the notebook show is not what the edited file says: (b) names it.
    problems = _replay_problems(stem, replayed(stem), copy)
    assert [p.split(":")[0] for p in problems] == [edited], problems
    run = _replay(stem, copy, tmp_path / "work")
    assert "EDITED " in _outputs(run.nb)
    assert _replay_problems(stem, run, copy) == []
    assert _format_problems(copy) == []


def test_a_request_edited_without_its_key_is_named(tmp_path: Path) -> None:
    """The key ties a file to the request the notebook makes: a request changed by hand under the old
    key (which replay would still serve for the old request) is not a well-formed recording."""
    copy = _copy_of("03_chat_panel", tmp_path)
    name, record = _records(copy)[0]
    record["request"]["body"]["temperature"] = 1.5
    _write(copy / name, record)
    assert _format_problems(copy) == [f"{name}: its key is not the request key of the request it stores"]


def test_a_damaged_recording_is_named(tmp_path: Path) -> None:
    copy = _copy_of("01_quickstart", tmp_path)
    name, record = _records(copy)[0]
    del record["response"]["status"]
    _write(copy / name, record)
    problems = _format_problems(copy)
    assert len(problems) == 1 and problems[0].startswith(f"{name}: ") and "status" in problems[0]


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["02_magics", "03_chat_panel"])
def test_the_checks_name_a_stale_recording(
    stem: str, tmp_path: Path, replayed: Callable[[str], Replayed]
) -> None:
    copy = _copy_of(stem, tmp_path)
    stale = _add_stale_recording(copy)
    problems = _replay_problems(stem, replayed(stem), copy)
    assert [p.split(":")[0] for p in problems] == [stale], problems
    assert "never replayed" in problems[0]
    assert _format_problems(copy) == [], "a stale file can be well formed: only replay finds it stale"
