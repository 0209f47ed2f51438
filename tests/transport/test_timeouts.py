"""A timeout on every request: a slow gateway becomes ``APITimeoutError`` in about the configured time,
per client, per call and from ``FLOTORCH_TIMEOUT``; streams that stall mid-way time out too."""

from __future__ import annotations

import time

import pytest

from flotorch_nb import APITimeoutError
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import ONCE, SYNC, SYNC_IDS, USER, invoke, live_llm, stream


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_client_timeout(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(delay=5.0))
    async with live_llm(gateway.url, timeout=0.3, retry=ONCE) as llm:
        started = time.perf_counter()
        with pytest.raises(APITimeoutError, match=r"0\.3 s") as info:
            await invoke(llm, sync)
        elapsed = time.perf_counter() - started
    assert 0.25 <= elapsed < 1.5
    assert "timeout=" in str(info.value)  # says how to allow longer
    assert len(gateway.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_per_call_timeout_overrides_the_client(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(delay=5.0))
    async with live_llm(gateway.url, timeout=30, retry=ONCE) as llm:
        started = time.perf_counter()
        with pytest.raises(APITimeoutError):
            await invoke(llm, sync, USER, timeout=0.3)
        elapsed = time.perf_counter() - started
        assert 0.25 <= elapsed < 1.5
        gateway.faults.add(Fault(delay=0.3))
        # A generous per-call timeout lets a slow answer through although the client's is short.
        slow_response = await invoke(llm, sync, USER, timeout=5)
    assert slow_response.content


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_per_call_timeout_longer_than_the_clients_is_honoured(
    gateway: OfflineGateway, sync: bool
) -> None:
    gateway.faults.add(Fault(delay=0.4))
    async with live_llm(gateway.url, timeout=0.2, retry=ONCE) as llm:
        response = await invoke(llm, sync, USER, timeout=3)
    assert response.content


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_flotorch_timeout_env_is_respected(
    gateway: OfflineGateway, sync: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_TIMEOUT", "0.3")
    gateway.faults.add(Fault(delay=5.0))
    async with live_llm(gateway.url, retry=ONCE) as llm:
        assert llm.timeout == 0.3
        started = time.perf_counter()
        with pytest.raises(APITimeoutError):
            await invoke(llm, sync)
    assert time.perf_counter() - started < 1.5


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_stream_that_stalls_times_out(gateway: OfflineGateway, sync: bool) -> None:
    async with live_llm(gateway.url, retry=ONCE) as llm:
        started = time.perf_counter()
        with pytest.raises(APITimeoutError):
            await stream(llm, sync, USER, timeout=0.3, extra_body={"offline": {"token_delay": 2.0}})
    assert time.perf_counter() - started < 1.5


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_slow_stream_start_times_out(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(delay=5.0))
    async with live_llm(gateway.url, timeout=0.3, retry=ONCE) as llm:
        with pytest.raises(APITimeoutError):
            await stream(llm, sync)
