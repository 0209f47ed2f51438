"""Retries: which outcomes retry, how long to back off (pure), and how many attempts the gateway sees."""

from __future__ import annotations

import email.utils
import random
import socket
import time

import httpx2
import pytest

from flotorch_nb import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    FlotorchLLM,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ResponseError,
    RetryPolicy,
    ServerError,
)
from flotorch_nb._errors import status_error
from flotorch_nb._retry import is_retryable_status, parse_retry_after, retry_after_of
from flotorch_nb.gateway import Fault, OfflineGateway
from tests.support.client import KEY, NO_WAIT, SYNC, SYNC_IDS, USER, invoke, live_llm, stream

# -- pure: Retry-After and the policy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0.2", 0.2),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    in_30s = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(in_30s, now=now) == pytest.approx(30.0)
    in_the_past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(in_the_past, now=now) == 0.0
    # Without ``now``, the wall clock is used.
    soon = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 < (parse_retry_after(soon) or 0) <= 21


def test_backoff_grows_exponentially_with_bounded_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, jitter=0.25, _random=random.Random(7))
    for attempt, nominal in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(nominal * 0.75 <= d <= nominal for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # there is jitter


def test_retry_after_wins_when_reasonable() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0, max_retry_after=60)
    assert policy.delay(0, retry_after=0.2) == 0.2
    assert policy.delay(3, retry_after=0) == 0
    assert policy.delay(0, retry_after=30) == 30
    assert policy.delay(0, retry_after=600) <= 0.5  # an absurd Retry-After falls back to backoff


def test_a_retry_after_beyond_the_cap_is_not_retried_early() -> None:
    policy = RetryPolicy(max_retries=3, max_retry_after=60)
    assert policy.should_retry(status_error(429, "slow down", retry_after=30), 0)
    too_long = status_error(429, "slow down", retry_after=600)
    assert not policy.should_retry(too_long, 0)
    assert too_long.retry_after == 600  # the caller still learns when to come back


def test_a_zero_delay_policy_never_sleeps_but_honours_retry_after() -> None:
    assert [NO_WAIT.delay(a) for a in range(5)] == [0, 0, 0, 0, 0]
    error = status_error(429, "slow down", retry_after=0.2)
    assert NO_WAIT.delay_for(error, 0) == 0.2
    assert NO_WAIT.delay_for(status_error(500, "x"), 0) == 0


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
        (418, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
    ],
)
def test_which_statuses_retry(status: int, retry: bool) -> None:
    assert is_retryable_status(status) is retry
    policy = RetryPolicy(max_retries=2)
    assert policy.should_retry(status_error(status, "x"), 0) is retry
    assert policy.should_retry(status_error(status, "x"), 2) is False  # out of attempts


def test_connection_errors_and_timeouts_retry_but_bad_answers_do_not() -> None:
    policy = RetryPolicy(max_retries=1)
    assert policy.should_retry(APIConnectionError("refused"), 0)
    assert policy.should_retry(APITimeoutError("slow"), 0)
    assert not policy.should_retry(APIConnectionError("refused"), 1)
    assert not policy.should_retry(ResponseError("not json"), 0)
    assert not RetryPolicy(max_retries=0).should_retry(APITimeoutError("slow"), 0)


# -- over loopback: attempts the gateway received ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried_then_succeed(
    gateway: OfflineGateway, sync: bool, status: int
) -> None:
    gateway.faults.add(Fault(status=status, times=2))
    async with live_llm(gateway.url) as llm:  # NO_WAIT: 2 retries, instantly
        response = await invoke(llm, sync)
    assert response.content
    assert len(gateway.requests) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (422, BadRequestError),
    ],
)
async def test_other_4xx_are_tried_exactly_once(
    gateway: OfflineGateway, sync: bool, status: int, cls: type[APIStatusError]
) -> None:
    gateway.faults.add(Fault(status=status, times=5))
    async with live_llm(gateway.url) as llm:
        with pytest.raises(cls):
            await invoke(llm, sync)
    assert len(gateway.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
@pytest.mark.parametrize(("status", "cls"), [(429, RateLimitError), (503, ServerError)])
async def test_after_the_last_retry_the_typed_error_is_raised(
    gateway: OfflineGateway, sync: bool, status: int, cls: type[APIStatusError]
) -> None:
    gateway.faults.add(Fault(status=status, message="still failing", times=10))
    policy = RetryPolicy(max_retries=3, base_delay=0, max_delay=0)
    async with live_llm(gateway.url, retry=policy) as llm:
        with pytest.raises(cls, match="still failing") as info:
            await invoke(llm, sync)
    assert info.value.status_code == status
    assert len(gateway.requests) == 4


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_max_retries_zero_means_one_attempt(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(status=503, times=5))
    async with live_llm(gateway.url, retry=None, max_retries=0) as llm:
        with pytest.raises(ServerError):
            await invoke(llm, sync)
    assert len(gateway.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_max_retries_from_the_environment(
    gateway: OfflineGateway, sync: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_MAX_RETRIES", "1")
    gateway.faults.add(Fault(status=500, retry_after="0", times=5))
    async with live_llm(gateway.url, retry=None) as llm:
        with pytest.raises(ServerError):
            await invoke(llm, sync)
    assert len(gateway.requests) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_streamed_call_retries_before_the_first_byte(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(status=502, times=2))
    async with live_llm(gateway.url) as llm:
        deltas, response = await stream(llm, sync)
    assert "".join(deltas) == response.content != ""
    assert len(gateway.requests) == 3


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_small_retry_after_is_waited_for(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(status=429, retry_after="0.2"))
    async with live_llm(gateway.url) as llm:  # a zero-delay policy: only Retry-After can make it wait
        started = time.perf_counter()
        await invoke(llm, sync)
        elapsed = time.perf_counter() - started
    assert len(gateway.requests) == 2
    assert 0.18 <= elapsed < 2.0


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_retry_after_http_date_is_honoured(gateway: OfflineGateway, sync: bool) -> None:
    when = email.utils.formatdate(time.time() + 1.5, usegmt=True)  # whole seconds: waits 0.5-1.5 s
    gateway.faults.add(Fault(status=503, retry_after=when))
    async with live_llm(gateway.url) as llm:
        started = time.perf_counter()
        await invoke(llm, sync)
        elapsed = time.perf_counter() - started
    assert len(gateway.requests) == 2
    assert 0.45 <= elapsed < 3.0


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_timeouts_are_retried(gateway: OfflineGateway, sync: bool) -> None:
    gateway.faults.add(Fault(delay=5.0, times=2))
    async with live_llm(gateway.url, timeout=0.2) as llm:
        response = await invoke(llm, sync)
    assert response.content
    assert len(gateway.requests) == 3


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class CountingTransport(httpx2.HTTPTransport):
    """A real transport that counts the attempts made through it."""

    attempts = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.attempts += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx2.AsyncHTTPTransport):
    attempts = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.attempts += 1
        return await super().handle_async_request(request)


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_connection_errors_are_retried_then_raised(sync: bool) -> None:
    url = _closed_port_url()
    transport, async_transport = CountingTransport(), AsyncCountingTransport()
    policy = RetryPolicy(max_retries=3, base_delay=0, max_delay=0)
    async with httpx2.AsyncClient(transport=async_transport) as async_http:
        with httpx2.Client(transport=transport) as http:
            async with FlotorchLLM(
                "m", KEY, url, retry=policy, http_client=http, async_http_client=async_http
            ) as llm:
                with pytest.raises(APIConnectionError) as info:
                    await invoke(llm, sync, USER)
    assert not isinstance(info.value, APITimeoutError)
    assert url in str(info.value)
    assert isinstance(info.value.__cause__, httpx2.ConnectError)
    assert (transport.attempts if sync else async_transport.attempts) == 4


@pytest.mark.anyio
@pytest.mark.parametrize("sync", SYNC, ids=SYNC_IDS)
async def test_a_refused_connection_without_injection_is_an_api_connection_error(sync: bool) -> None:
    async with live_llm(_closed_port_url(), "m") as llm:
        with pytest.raises(APIConnectionError, match="could not reach"):
            await invoke(llm, sync)


def test_retry_after_ms_is_the_precise_wait_and_retry_after_the_fallback() -> None:
    """One rule for the transport's errors and the auto window's headers (``retry_after_of``)."""
    assert retry_after_of({"retry-after": "1", "retry-after-ms": "250"}) == 0.25
    assert retry_after_of({"retry-after": "2", "retry-after-ms": "soon"}) == 2.0
    assert retry_after_of({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_of({}) is None
