"""Templates are filled per item: a field that is missing, None or NaN fails that item alone.

Checked where it matters, at the offline gateway: the prompts it received are exactly the filled
ones, and none of them holds an unfilled ``{field}`` or the words ``nan`` / ``None`` / ``<NA>`` /
``NaT`` standing for a value that was not there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flotorch_nb import BatchResult, InvalidRequestError
from flotorch_nb.gateway import OfflineGateway
from tests.support.batch import make_llm
from tests.support.batch import run_batch as run

SYNC = [True, False]
SYNC_IDS = ["batch", "abatch"]


def sent(gw: OfflineGateway) -> list[str]:
    """The user prompts the gateway received, sorted (workers finish in any order)."""
    return sorted(r.body["messages"][-1]["content"] for r in gw.requests)


def errors(result: BatchResult) -> dict[int, str]:
    out = {}
    for item in result.errors:
        assert isinstance(item.error, InvalidRequestError), item.error
        assert item.attempts == 0
        out[item.position] = str(item.error)
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_dict_without_the_field_fails_alone_and_is_never_sent(gw: OfflineGateway, sync: bool) -> None:
    items = [{"name": "alice"}, {"nom": "bob"}, {"name": "carol", "extra": 1}, {"name": None}]
    async with make_llm(gw) as llm:
        result = await run(llm, sync, items, template="Say hi to {name}")
    assert [item.content for item in result.ok] == ["Say hi to alice", "Say hi to carol"]
    failed = errors(result)
    assert set(failed) == {1, 3}
    assert "item 1" in failed[1] and "{name}" in failed[1] and "nom" in failed[1]
    assert "item 3" in failed[3] and "{name}" in failed[3] and "None" in failed[3]
    assert sent(gw) == ["Say hi to alice", "Say hi to carol"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_the_first_dict_lacking_the_field_does_not_stop_the_others(
    gw: OfflineGateway, sync: bool
) -> None:
    async with make_llm(gw) as llm:
        result = await run(llm, sync, [{"nom": "bob"}, {"name": "alice"}], template="Hi {name}")
    assert [item.content for item in result] == [None, "Hi alice"]
    assert "item 0" in errors(result)[0] and sent(gw) == ["Hi alice"]


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_nan_none_na_and_nat_in_dataframe_rows_fail_that_row_naming_the_column(
    gw: OfflineGateway, sync: bool
) -> None:
    frame = pd.DataFrame(
        {
            "review": ["great", np.nan, "fine", "meh", "ok", "good"],
            "stars": pd.array([5, 4, pd.NA, 2, 3, 1], dtype="Int64"),
            "when": pd.to_datetime(["2024-01-01"] * 3 + [None] + ["2024-01-02"] * 2),
            "note": ["a", "b", "c", "d", None, math.nan],  # not in the template: never a problem
        },
        index=[10, 20, 30, 40, 50, 60],
    )
    async with make_llm(gw) as llm:
        result = await run(llm, sync, frame, template="{review} ({stars}) on {when}", concurrency=3)
        table = result.to_pandas()
    failed = errors(result)
    assert set(failed) == {1, 2, 3}
    assert "row 20" in failed[1] and "{review}" in failed[1]
    assert "row 30" in failed[2] and "{stars}" in failed[2]
    assert "row 40" in failed[3] and "{when}" in failed[3]
    assert list(table["error_type"].isna()) == [True, False, False, False, True, True]
    assert len(gw.requests) == 3
    for prompt in sent(gw):
        assert not any(word in prompt for word in ("nan", "None", "<NA>", "NaT", "{review}", "{stars}"))


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_missing_values_in_a_series_or_list_fail_those_items(gw: OfflineGateway, sync: bool) -> None:
    series = pd.Series(["alpha", None, np.nan, "delta", pd.NA], index=list("abcde"), dtype=object)
    async with make_llm(gw) as llm:
        templated = await run(llm, sync, series, template="Say {item}")
        plain = await run(llm, sync, ["one", None, float("nan"), np.float32("nan")])
    assert [item.content for item in templated] == ["Say alpha", None, None, "Say delta", None]
    assert all("{item}" in text for text in errors(templated).values())
    assert "item 'b'" in errors(templated)[1]
    assert [item.content for item in plain] == ["one", None, None, None]
    assert set(errors(plain)) == {1, 2, 3}
    assert sent(gw) == ["Say alpha", "Say delta", "one"]


def test_a_nested_reference_that_does_not_resolve_fails_the_item(gw: OfflineGateway) -> None:
    items = [{"user": {"name": "ann"}}, {"user": {}}, {"user": {"name": math.nan}}]
    with make_llm(gw) as llm:
        result = llm.batch(items, template="Hi {user['name']}", progress=False)
    assert [item.content for item in result] == ["Hi ann", None, None]
    assert all("{user['name']}" in text for text in errors(result).values())
    assert sent(gw) == ["Hi ann"]
