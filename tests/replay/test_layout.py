"""flotorch_nb.replay is split by responsibility, every old import still works, and the matching rule
is one pure public function pair (``canonical_request`` / ``request_key``) that others can reuse."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

import flotorch_nb.replay as replay
from flotorch_nb import FlotorchLLM, RetryPolicy
from flotorch_nb.replay import canonical_request, request_key

PACKAGE = Path(replay.__file__).parent
OLD_PUBLIC = [
    "AsyncRecordTransport",
    "RecordTransport",
    "ReplayFileError",
    "ReplayMissError",
    "ReplayTransport",
    "canonical_request",
    "endpoint_path",
    "request_key",
    "wrap_transport",
    # used by tests and tools through the package, not its __all__
    "RECORDED_HEADERS",
    "Cassette",
    "FORMAT",
    "KNOWN_ENDPOINTS",
    "cassette_name",
    "main",
    "record_notebooks",
]


def test_every_module_is_small_and_owns_one_thing() -> None:
    modules = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert {"_match.py", "_cassette.py", "_transports.py", "_notebooks.py"} <= modules.keys()
    assert all(lines < 400 for lines in modules.values()), modules
    assert modules["__init__.py"] < 100, "the package only documents and re-exports"


@pytest.mark.parametrize("name", OLD_PUBLIC)
def test_the_old_names_are_still_importable_from_the_package(name: str) -> None:
    assert getattr(replay, name) is not None


def test_the_matching_rule_needs_no_http_client() -> None:
    """The gateway and an answer cache import it: it must stay pure (no httpx2, no files)."""
    tree = ast.parse((PACKAGE / "_match.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not imported & {"httpx2", "pathlib", "os", "threading"}, imported


def test_a_body_as_a_dict_has_the_key_of_the_bytes_the_client_sends() -> None:
    """``canonical_request(body_dict)`` gives what replay computes from the wire, for an answer cache."""
    sent: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.content)
        message = {"role": "assistant", "content": "ok"}
        return httpx2.Response(200, json={"choices": [{"index": 0, "message": message}]})

    messages = [{"role": "user", "content": "Caf\u00e9 au lait, s'il vous pla\u00eet \u2615"}]
    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    with (
        http,
        FlotorchLLM(
            "m",
            "k3y-for-layout",
            "https://gw.example/prefix",
            http_client=http,
            retry=RetryPolicy(max_retries=0),
        ) as llm,
    ):
        llm.invoke(messages, temperature=1.0, stop=("a", "b"))
    body: dict[str, Any] = {
        "model": "m",
        "messages": messages,
        "temperature": 1,
        "stop": ("a", "b"),
    }
    wire = request_key(canonical_request(sent[0], "/prefix/api/openai/v1/chat/completions"))
    assert request_key(canonical_request(json.loads(sent[0]))) == wire
    assert request_key(canonical_request({**json.loads(sent[0]), **body})) == wire


def test_canonical_request_is_plain_json_data() -> None:
    canonical = canonical_request({"model": "m", "temperature": 0.0, "n": 2.0})
    assert canonical == {
        "method": "POST",
        "path": "/api/openai/v1/chat/completions",
        "body": {"model": "m", "temperature": 0, "n": 2},
    }
    assert json.loads(json.dumps(canonical)) == canonical
    assert canonical_request(None)["body"] is None and canonical_request(b"not json")["body"] == "not json"
    assert len(request_key(canonical)) == 64
