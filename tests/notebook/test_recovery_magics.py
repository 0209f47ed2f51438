"""``%%flotorch --schema NAME --validation-retries N`` (issue 15 item 5) and ``--fallback m2,m3``
(issue 17 item 4): the options reach the client's recovery layer, every attempt is in the ledger."""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError

from flotorch_nb.gateway import Fault, OfflineGateway
from flotorch_nb.notebook.session import get_session
from tests.support.shell import Shell

CITY = "from pydantic import BaseModel\nclass City(BaseModel):\n    name: str\n    population: int\n"


def script(*contents: str) -> str:
    return json.dumps({"script": {"turns": [{"content": c} for c in contents]}})


def test_validation_retries_re_ask_and_every_attempt_is_counted(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.run_cell(CITY)
    body = script("not json", '{"name": "Paris", "population": 2100000}')
    resp = shell.cell("--no-interpolate -m offline/scripted --schema City --validation-retries 1", body)
    assert resp.parsed.population == 2_100_000 and resp.attempts == 2
    assert len(offline_env.requests) == 2
    assert get_session().ledger.totals.calls == 2
    assert not any("flotorch-streaming" in json.dumps(e.data) for e in shell.pub.published)  # not streamed


def test_validation_retries_without_a_schema_is_a_usage_error(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    with pytest.raises(UsageError, match=r"--validation-retries .* --schema"):
        shell.cell("--validation-retries 2", "Describe Paris")
    shell.ip.run_cell(CITY)
    with pytest.raises(UsageError, match="validation_retries must be a whole number"):
        shell.cell("--schema City --validation-retries -1", "Describe Paris")
    assert offline_env.requests == []


def test_fallback_asks_the_next_model_and_the_answer_says_so(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    offline_env.faults.add(Fault(status=503, model="offline/concise"))
    resp = shell.cell("-m offline/concise --fallback offline/verbose,offline/echo", "Say hello.")
    assert resp.model == "offline/verbose" and resp.fallbacks == [("offline/concise", "server_error")]
    assert resp.provenance["fallbacks"] == [["offline/concise", "server_error"]]
    assert [r.body["model"] for r in offline_env.requests] == ["offline/concise", "offline/verbose"]
    assert get_session().ledger.entries[-1].model == "offline/verbose"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("-m offline/concise --fallback offline/concise", "own model"),
        ("--fallback ,", "needs model ids"),
        ("--map items --fallback offline/echo", "for one answer or a comparison"),
    ],
)
def test_a_bad_fallback_is_a_usage_error(
    shell: Shell, offline_env: OfflineGateway, line: str, says: str
) -> None:
    shell.ip.user_ns["items"] = ["a"]
    with pytest.raises(UsageError, match=says):
        shell.cell(line, "Say hello.")
    assert offline_env.requests == []


def test_validation_retries_reach_every_item_of_a_map(shell: Shell, offline_env: OfflineGateway) -> None:
    """Issue 15 item 5: ``--validation-retries`` also on a batch; each item re-asks on its own."""
    shell.ip.run_cell(CITY)
    shell.ip.user_ns["items"] = [
        script("not json", '{"name": "Paris", "population": 2100000}'),
        script('{"name": "Rome", "population": 2800000}'),
    ]
    result = shell.cell("-m offline/scripted --map items --schema City --validation-retries 1", "{item}")
    assert [i.answer.parsed.name for i in result] == ["Paris", "Rome"]
    assert [i.answer.to_response().attempts for i in result] == [2, 1]
    assert len(offline_env.requests) == 3 and get_session().ledger.totals.calls == 3
