"""``%%flotorch --eval``: the cell as an evaluation's template, through IPython's real shell against the
offline gateway (scripted answers; the judge is the offline assistant filling the grade's schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from flotorch_nb.evals import EvalResult, evaluate
from flotorch_nb.evals._data import READERS
from flotorch_nb.gateway import OfflineGateway
from tests.support.shell import Shell, data_of

ROWS = [{"prompt": json.dumps({"script": {"content": c}}), "key": k} for c, k in (("4", "4"), ("5", "6"))]


def test_an_eval_cell_scores_and_keeps_its_result(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.ip.user_ns["rows"] = ROWS
    before = sum(offline_env.request_counts().values())
    value = shell.cell(
        "--eval rows --target key --score exact_match,numeric -m offline/scripted -o run", "{prompt}"
    )
    assert isinstance(value, EvalResult) and shell.ip.user_ns["run"] is value
    assert [r.scores["exact_match"][0] for r in value.records] == [1.0, 0.0]
    assert [r.scores["numeric"][0] for r in value.records] == [1.0, 0.0]
    assert sum(offline_env.request_counts().values()) - before == 2
    page = data_of(value)["text/html"]
    assert 'class="flotorch-eval"' in page and "offline/scripted" in page
    again = shell.cell("--eval rows --target key --score exact_match -m offline/scripted", "{prompt}")
    assert isinstance(again, EvalResult)


def test_an_eval_cell_with_a_judge(shell: Shell, offline_env: OfflineGateway) -> None:
    shell.ip.user_ns["rows"] = ROWS
    value = shell.cell(
        '--eval rows --target key --judge "Is the answer right?" --judge-model offline/assistant '
        "-m offline/scripted",
        "{prompt}",
    )
    assert value.scorers == ["judge"]
    usage = value.judge_usage["judge"]
    assert usage.calls == 2 * 3  # two answers, three votes each
    assert all(r.scores["judge"][1] for r in value.records)  # a value or the reason there is none


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("--eval nothing --score exact_match -m offline/scripted", "no such variable"),
        ("--eval rows --target missing --score exact_match -m offline/scripted", "target='missing'"),
        ("--eval rows --target key -m offline/scripted", "--score"),
        ("--eval rows --target key --score nope -m offline/scripted", "unknown scorer"),
        ("--eval rows --judge-model x --score exact_match --target key", "--judge-model needs --judge"),
        ("--eval rows --map rows --score exact_match", "do not apply"),
        ("--eval rows --tools f --score exact_match", "do not apply"),
    ],
)
def test_eval_cell_mistakes_are_usage_errors(
    shell: Shell, offline_env: OfflineGateway, line: str, words: str
) -> None:
    shell.ip.user_ns["rows"] = ROWS
    before = sum(offline_env.request_counts().values())
    with pytest.raises(UsageError, match=words):
        shell.cell(line, "{prompt}")
    assert sum(offline_env.request_counts().values()) == before


def test_evaluate_uses_the_sessions_client_in_a_notebook(shell: Shell, offline_env: OfflineGateway) -> None:
    from flotorch_nb.notebook.session import get_session

    result = evaluate(
        ROWS, template="{prompt}", target="key", models="offline/scripted", scorers="numeric", progress=False
    )
    assert [r.scores["numeric"][0] for r in result.records] == [1.0, 0.0]
    assert len(get_session().ledger.entries) >= 2  # the session's ledger saw the calls


def test_an_eval_cell_reads_a_data_file_the_notebook_has_no_variable_for(
    shell: Shell, offline_env: OfflineGateway, tmp_path: Path
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    value = shell.cell(f"--eval {path} --target key --score numeric -m offline/scripted", "{prompt}")
    assert isinstance(value, EvalResult)
    assert [r.scores["numeric"][0] for r in value.records] == [1.0, 0.0]
    with pytest.raises(UsageError, match="no such data file"):
        shell.cell(
            f"--eval {tmp_path / 'gone.csv'} --target key --score numeric -m offline/scripted", "{prompt}"
        )


@pytest.mark.parametrize("suffix", [*READERS, ".JSONL"])
def test_an_eval_cell_takes_as_a_path_what_the_evaluation_reads(
    shell: Shell, offline_env: OfflineGateway, tmp_path: Path, suffix: str
) -> None:
    """The cell asks ``evals._data`` which names are data files: one list, no copy to fall behind."""
    line = "--target key --score numeric -m offline/scripted"
    with pytest.raises(UsageError, match="no such data file"):
        shell.cell(f"--eval {tmp_path / ('gone' + suffix)} {line}", "{prompt}")
    with pytest.raises(UsageError, match=r"no such variable in the notebook \(nor a \.csv or \.jsonl file\)"):
        shell.cell(f"--eval {tmp_path / 'gone.txt'} {line}", "{prompt}")
