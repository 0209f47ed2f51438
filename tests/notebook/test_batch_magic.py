"""``%%flotorch --map`` and ``%flotorch cache`` through IPython's ``InteractiveShell``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest
from IPython.core.error import UsageError

from flotorch_nb import BatchResult, BudgetExceededError
from flotorch_nb._pipeline._hooks import estimate_tokens
from flotorch_nb.cache import ENV_CACHE
from flotorch_nb.gateway import OfflineGateway
from flotorch_nb.notebook.session import get_session, reset
from tests.support.shell import XSS, Shell


def test_map_over_a_list_returns_a_batch_result_that_shows_its_summary_and_first_rows(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["cities"] = ["Paris", "Oslo", "Lima"]
    result = shell.cell("--map cities -m offline/echo -o res --concurrency 2", "Tell me about {item}.\n")
    assert isinstance(result, BatchResult) and shell.ip.user_ns["res"] is result
    assert [i.content for i in result] == [f"Tell me about {c}." for c in ("Paris", "Oslo", "Lima")]
    bundle, metadata = cast(Any, result)._repr_mimebundle_()  # the summary, and its answers' provenance
    assert len(metadata["flotorch_nb"]["provenance"]) == 3
    assert "items      3" in bundle["text/plain"] and "Tell me about Oslo." in bundle["text/plain"]
    assert "flotorch-batch" in bundle["text/html"] and "Tell me about Lima." in bundle["text/html"]
    assert len(offline_env.requests) == 3
    # every request counted once in the session's ledger
    assert len(get_session().ledger) == 3


def test_map_sends_a_temperature_of_zero_and_the_token_cap_it_is_given(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["words"] = ["one", "two"]
    shell.cell("--map words -m offline/echo -t 0 --max-tokens 20", "Say {item}.\n")
    assert [r["body"]["temperature"] for r in offline_env.requests] == [0, 0]
    assert [r["body"]["max_tokens"] for r in offline_env.requests] == [20, 20]


def test_map_over_a_dataframe_uses_its_columns_and_names_them_when_a_field_is_unknown(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["reviews"] = pd.DataFrame({"text": ["good", XSS], "stars": [5, 1]})
    result = shell.cell("--map reviews -m offline/echo", "{stars} stars: {text}")
    assert result[0].content == "5 stars: good"
    html = result._repr_mimebundle_()[0]["text/html"]
    assert "<img" not in html and "<script" not in html  # model text is escaped, never rendered
    with pytest.raises(UsageError, match=r"\{review\}.*columns: text, stars"):
        shell.cell("--map reviews", "Classify {review}")
    with pytest.raises(UsageError, match="no such variable"):
        shell.cell("--map nothing_here", "{item}")
    assert len(offline_env.requests) == 2


def test_map_stops_sending_when_the_session_budget_would_be_exceeded(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["words"] = [f"word {i}" for i in range(10)]
    first = shell.cell("--map words -m offline/echo --concurrency 1 --max-tokens 5", "{item}")
    per_call = first[0].answer.usage[2]
    worst = estimate_tokens({"messages": [{"role": "user", "content": "word 0"}], "max_tokens": 5})
    get_session().reset()
    # Room for the worst case of a third call after two were spent, not of a fourth.
    get_session().set_budget(per_call * 2 + worst)
    sent = len(offline_env.requests)
    result = shell.cell("--map words -m offline/echo --concurrency 1 --max-tokens 5", "{item}")
    assert len(offline_env.requests) - sent == 3
    assert [i.ok for i in result] == [True] * 3 + [False] * 7
    assert all(isinstance(i.error, BudgetExceededError) for i in result.errors)
    assert get_session().spent_tokens <= get_session().budget  # type: ignore[operator]


def test_the_cache_command_sets_checks_and_turns_off_the_answer_cache(
    shell: Shell, offline_env: OfflineGateway, tmp_path: Path
) -> None:
    target = tmp_path / "answers.sqlite"
    shell.line(f"cache {target}")
    shell.ip.user_ns["qs"] = ["one", "two"]
    shell.cell("--map qs -m offline/echo", "{item}")
    sent = len(offline_env.requests)
    again = shell.cell("--map qs -m offline/echo", "{item}")
    assert [i.source for i in again] == ["cache", "cache"] and len(offline_env.requests) == sent
    assert shell.cell("-m offline/echo --no-stream", "one").source == "cache"  # %%flotorch uses it too
    (tmp_path / "bad.sqlite").write_bytes(b"not a database" * 50)
    with pytest.raises(UsageError, match="cannot be used"):
        shell.line(f"cache {tmp_path / 'bad.sqlite'}")
    shell.line("cache off")
    assert ENV_CACHE not in os.environ


def test_reset_turns_off_the_cache_the_cache_command_turned_on(
    shell: Shell, offline_env: OfflineGateway, tmp_path: Path
) -> None:
    messages = [{"role": "user", "content": "remember me"}]
    shell.line(f"cache {tmp_path / 'answers.sqlite'}")
    get_session().client().invoke(messages)
    assert get_session().client().invoke(messages).source == "cache"
    reset()
    assert ENV_CACHE not in os.environ
    sent = len(offline_env.requests)
    assert get_session().client().invoke(messages).source != "cache"  # a new client: no cache
    assert len(offline_env.requests) == sent + 1


def test_a_batch_frame_stays_a_plain_dataframe_and_shows_as_a_table_that_fits_the_output(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    prompts = ["first line\nsecond line", XSS]
    result = get_session().client("offline/echo").batch(prompts, progress=False)
    frame = result.to_pandas()
    assert type(frame) is pd.DataFrame and "input_tokens" in frame.columns  # users' code sees every column
    html = formatter(shell).format(frame)[0]["text/html"]
    head = html.split("</thead>")[0]
    shown = re.findall(r"<th [^>]*>([^<]*)</th>", head)
    assert shown == ["", "answer", "total_tokens", "latency_ms", "request_id", "source"]
    assert "also in the DataFrame: input_tokens, output_tokens, model, finish_reason" in html
    assert frame["request_id"].iloc[0] in html  # visible, not cut off at the right edge
    assert "white-space:pre-wrap" in html and "text-align:right" not in html
    assert "first line\nsecond line" in html and "\\n" not in html  # a line break, not a literal \n
    assert "<img" not in html and "<script" not in html  # model text escaped
    plain = formatter(shell).format(pd.DataFrame({"x": [1]}))[0]["text/html"]
    assert 'class="dataframe"' in plain  # any other frame keeps pandas' own table
    assert (
        'class="dataframe"'
        in formatter(shell).format(frame[["answer"]].copy().pipe(_unmarked))[0]["text/html"]
    )


def _unmarked(frame: pd.DataFrame) -> pd.DataFrame:
    frame.attrs.clear()
    return frame


def formatter(shell: Shell) -> Any:
    """The shell's display formatter (always set on a live shell)."""
    assert shell.ip.display_formatter is not None
    return shell.ip.display_formatter


def test_map_concurrency_takes_auto_like_batch_and_refuses_anything_else_before_sending(
    shell: Shell, offline_env: OfflineGateway
) -> None:
    shell.ip.user_ns["words"] = ["one", "two", "three"]
    result = shell.cell("--map words -m offline/echo --concurrency auto", "Say {item}.")
    assert [i.content for i in result] == ["Say one.", "Say two.", "Say three."]
    summary = result.summary()
    assert summary["concurrency"] == "auto" and summary["settled_concurrency"] >= 1
    for bad in ("0", "-2", "fast", "2.5"):
        with pytest.raises(UsageError, match=r'--concurrency.*whole number >= 1 or "auto"'):
            shell.cell(f"--map words -m offline/echo --concurrency {bad}", "Say {item}.")
    assert len(offline_env.requests) == 3
