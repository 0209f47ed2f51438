"""A tiny OpenAI-style server on loopback for the evaluation tests: answers from a table per model,
grades judge prompts by a fixed rule, and counts every request it receives.

Real HTTP (the client's own transport, batch and cache), but answers the tests choose exactly, so the
accuracy and paired differences of a run are known in advance. The judge rule: "correct" when the
normalised reference appears in the normalised answer (the evals' own ``includes`` normalisation is not
used, so the two do not agree by construction).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM, RetryPolicy
from tests.support.client import completion

KEY = "eval-" + "test-key"
_SECTION = re.compile(r"^\[(Question|Reference|Answer|Rubric)\]$", re.MULTILINE)


def sections(text: str) -> dict[str, str]:
    """The judge prompt's labelled sections."""
    marks = list(_SECTION.finditer(text))
    return {
        m.group(1): text[m.end() : (marks[i + 1].start() if i + 1 < len(marks) else len(text))].strip()
        for i, m in enumerate(marks)
    }


def _plain(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch == " ").strip()


def containment(parts: dict[str, str]) -> str:
    """The server's grading rule: correct when the reference appears in the answer."""
    return "correct" if _plain(parts.get("Reference", "")) in _plain(parts.get("Answer", "")) else "incorrect"


class EvalServer:
    """``answers[model][prompt] -> text``; judge prompts graded by containment; ``requests`` counted."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, str]] = {}
        self.requests: Counter[tuple[str, str]] = Counter()  # (model, "answer"|"judge") -> count
        self.bodies: list[dict[str, Any]] = []
        self.grade: Callable[[dict[str, str]], str] = containment
        #: How a validation re-ask is graded (default: the first rule).
        self.regrade: Callable[[dict[str, str]], str] = containment
        self.fail: Callable[[dict[str, Any]], int | None] = lambda body: None
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                status, reply = server.reply(body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that cancels closes its connection mid-reply: expected here

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model, user = body["model"], body["messages"][-1]["content"]
        # A judge prompt, or a validation re-ask after one (the grade, then a user turn with its errors).
        prompt = next((m["content"] for m in body["messages"] if "[Rubric]" in str(m.get("content"))), None)
        judged = prompt is not None
        with self.lock:
            self.requests[(model, "judge" if judged else "answer")] += 1
            self.bodies.append(body)
        status = self.fail(body)
        if status is not None:
            return status, {"error": {"message": "scripted failure", "type": "server_error"}}
        usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        if prompt is not None:
            parts = {**sections(prompt), "model": model}  # the judge model, for rules that depend on it
            grade = self.grade(parts) if len(body["messages"]) == 2 else self.regrade(parts)
            content = json.dumps({"grade": grade, "explanation": f"graded {grade}"})
            return 200, completion(content, usage=usage, model=model)
        table = self.answers.get(model)
        if table is None:
            return 404, {"error": {"message": f"no model {model}", "type": "not_found"}}
        return 200, completion(table.get(user, "I do not know"), usage=usage, model=model)

    def sent(self, kind: str | None = None) -> int:
        return sum(n for (_, k), n in self.requests.items() if kind is None or k == kind)


@pytest.fixture
def server() -> Iterator[EvalServer]:
    srv = EvalServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


@pytest.fixture
def client(server: EvalServer) -> Iterator[FlotorchLLM]:
    llm = FlotorchLLM("m/a", KEY, server.url, retry=RetryPolicy(max_retries=0), cache=False)
    try:
        yield llm
    finally:
        llm.close()
