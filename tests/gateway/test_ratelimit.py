"""A gateway that has limits: hidden requests/tokens per window per key, answered like OpenAI does.

The window's accounting is held to the exact boundary with a fake clock (pure); over loopback HTTP,
the 429's status, body and headers, the headers of successful answers, the HTTP and Python ways to
set the limit, and what our client makes of a 429.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from flotorch_nb import FlotorchLLM, RateLimitError, RetryPolicy
from flotorch_nb.gateway import OfflineGateway, RateLimit
from flotorch_nb.gateway._ratelimit import RateLimiter, duration

CHAT = "/api/openai/v1/chat/completions"
SCRIPT = '{"script": {"content": "ok", "usage": {"prompt_tokens": %d, "completion_tokens": 0}}}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the window, exactly ----------------------------------------------------------------------------


def test_requests_hold_to_the_window_boundary() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(rpm=3, window=10), clock=clock)
    for step in range(3):
        clock.now = 1000.0 + step
        assert limiter.admit("k", 1).admitted  # type: ignore[union-attr]
    clock.now = 1003.0
    refused = limiter.admit("k", 1)
    assert refused is not None and not refused.admitted and refused.retry_after == pytest.approx(7.0)
    clock.now = 1009.999
    assert not limiter.admit("k", 1).admitted  # type: ignore[union-attr]
    clock.now = 1010.0  # the first request leaves the window at exactly t + window
    admitted = limiter.admit("k", 1)
    assert admitted is not None and admitted.admitted
    assert admitted.headers == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",  # the request of t=1001 leaves at 1011
    }


def test_tokens_hold_and_a_refusal_costs_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(tpm=100, window=60), clock=clock)
    assert limiter.admit("k", 60).admitted  # type: ignore[union-attr]
    clock.now += 30
    assert limiter.admit("k", 30).admitted  # type: ignore[union-attr]
    refused = limiter.admit("k", 20)  # 90 + 20 > 100: the 60 must leave first (at +60, 30 s from now)
    assert refused is not None and refused.retry_after == pytest.approx(30.0)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "10"
    assert limiter.admit("k", 10).admitted  # type: ignore[union-attr]  # the refused 20 was not counted
    too_large = limiter.admit("k", 101)
    assert too_large is not None and too_large.too_large and too_large.retry_after is None


def test_each_key_has_its_own_window_and_a_new_limit_starts_afresh() -> None:
    limiter = RateLimiter(RateLimit(rpm=1), clock=Clock())
    assert limiter.admit("a", 1).admitted and limiter.admit("b", 1).admitted  # type: ignore[union-attr]
    assert not limiter.admit("a", 1).admitted  # type: ignore[union-attr]
    limiter.set(RateLimit(rpm=1))
    assert limiter.admit("a", 1).admitted  # type: ignore[union-attr]
    limiter.set(None)
    assert limiter.admit("a", 1) is None


@pytest.mark.parametrize("seed", range(5))
def test_the_window_is_exact_against_brute_force(seed: int) -> None:
    """Admits exactly what fits in every window, and Retry-After is exactly when the request would fit."""
    rng = random.Random(seed)
    limit = RateLimit(rpm=rng.randint(1, 6), tpm=rng.randint(20, 60), window=rng.choice([1.0, 2.5, 10.0]))
    clock = Clock()
    limiter = RateLimiter(limit, clock=clock)
    admitted: list[tuple[float, int]] = []

    def fits(at: float, tokens: int) -> bool:
        live = [(t, n) for t, n in admitted if t > at - limit.window]
        return len(live) < limit.rpm and sum(n for _, n in live) + tokens <= limit.tpm  # type: ignore[operator]

    for _ in range(300):
        clock.now += rng.choice([0.0, 0.001, 0.1, 0.25, 0.5, 1.0])
        tokens = rng.randint(1, 25)
        verdict = limiter.admit("k", tokens)
        assert verdict is not None and verdict.admitted == fits(clock.now, tokens)
        if verdict.admitted:
            admitted.append((clock.now, tokens))
        else:
            wait = verdict.retry_after
            assert wait is not None and wait > 0
            assert fits(clock.now + wait + 1e-9, tokens) and not fits(clock.now + wait - 1e-6, tokens)
    for start, _ in admitted:  # no window of any start holds more than the limit
        inside = [n for t, n in admitted if start <= t < start + limit.window]
        assert len(inside) <= limit.rpm and sum(inside) <= limit.tpm  # type: ignore[operator]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "1ms"), (0.25, "250ms"), (1.5, "1.5s"), (60, "1m0s"), (125.25, "2m5.25s")],
)
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    "bad",
    [
        {"rpm": 0},
        {"tpm": -1},
        {"rpm": True},
        {"rpm": 1.5},
        {},
        {"rpm": 1, "window": 0},
        {"rpm": 1, "burst": 2},
    ],
)
def test_a_bad_limit_is_a_value_error_naming_it(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"rate limit|rpm|tpm|window|burst"):
        RateLimit.from_dict(bad)


# -- over HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
def limited() -> Iterator[OfflineGateway]:
    with OfflineGateway(rate_limit=RateLimit(rpm=2, tpm=50, window=30)) as gw:
        yield gw


def _post(gw: OfflineGateway, key: str, tokens: int = 10, stream: bool = False) -> httpx2.Response:
    body = {
        "model": "offline/scripted",
        "messages": [{"role": "user", "content": SCRIPT % tokens}],
        "stream": stream,
    }
    return httpx2.post(gw.url + CHAT, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def test_over_the_limit_is_a_429_with_retry_after_and_ratelimit_headers(limited: OfflineGateway) -> None:
    first, second = _post(limited, "key-a"), _post(limited, "key-a", stream=True)
    assert first.status_code == second.status_code == 200
    assert (
        first.headers["x-ratelimit-limit-requests"] == "2"
        and first.headers["x-ratelimit-limit-tokens"] == "50"
    )
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-tokens"] == "40"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"  # a stream carries them too
    assert second.headers["x-ratelimit-remaining-tokens"] == "30"
    third = _post(limited, "key-a")
    assert third.status_code == 429
    error = third.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    wait = float(third.headers["retry-after"])
    assert 0 < wait <= 30 and int(third.headers["retry-after-ms"]) == pytest.approx(wait * 1000, abs=1)
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.headers["x-ratelimit-reset-requests"].endswith("s")
    assert _post(limited, "key-b").status_code == 200  # another key, another budget
    too_large = _post(limited, "key-c", tokens=51)
    assert too_large.status_code == 429 and too_large.json()["error"]["code"] == "request_too_large"
    assert "retry-after" not in too_large.headers


def test_no_limit_no_ratelimit_headers(gateway: OfflineGateway) -> None:
    response = _post(gateway, "key-a")
    assert response.status_code == 200 and not any(h.startswith("x-ratelimit") for h in response.headers)


def test_the_limit_is_set_read_and_lifted_over_http_and_from_python() -> None:
    with OfflineGateway(api_key="the-key") as gw, httpx2.Client(base_url=gw.url, timeout=10) as c:
        auth = {"Authorization": "Bearer the-key"}
        assert c.post("/_offline/limits", json={"rpm": 1}).status_code == 401
        assert c.post("/_offline/limits", json={"rpm": 0}, headers=auth).status_code == 400
        set_ = c.post("/_offline/limits", json={"rpm": 1, "window": 5}, headers=auth)
        assert set_.json() == {"limit": {"rpm": 1, "tpm": None, "window": 5}}
        assert gw.rate_limit == RateLimit(rpm=1, window=5)
        assert c.get("/_offline/limits", headers=auth).json()["limit"]["rpm"] == 1
        assert [_post(gw, "the-key").status_code for _ in range(2)] == [200, 429]
        assert c.delete("/_offline/limits", headers=auth).json() == {"cleared": True}
        assert gw.rate_limit is None and _post(gw, "the-key").status_code == 200
        gw.rate_limit = RateLimit(rpm=1)
        assert [_post(gw, "the-key").status_code for _ in range(2)] == [200, 429]
        gw.rate_limit = None
        assert c.get("/_offline/limits", headers=auth).json() == {"limit": None}


def test_the_client_sees_a_rate_limit_error_with_the_wait() -> None:
    no_retry = RetryPolicy(max_retries=0)
    with (
        OfflineGateway(rate_limit=RateLimit(rpm=2, window=30)) as gw,
        FlotorchLLM("offline/assistant", "key-client", gw.url, retry=no_retry) as llm,
    ):
        llm.invoke([{"role": "user", "content": "Hi"}])
        llm.invoke([{"role": "user", "content": "Hi again"}])
        with pytest.raises(RateLimitError) as info:
            llm.invoke([{"role": "user", "content": "One too many"}])
    assert info.value.status_code == 429 and info.value.retry_after is not None
    assert 0 < info.value.retry_after <= 30
    assert "key-client" not in str(info.value)


def test_waiting_the_retry_after_gets_the_request_in() -> None:
    with OfflineGateway(rate_limit=RateLimit(rpm=1, window=0.3)) as gw:
        assert _post(gw, "key-w").status_code == 200
        refused = _post(gw, "key-w")
        assert refused.status_code == 429
        time.sleep(float(refused.headers["retry-after"]))
        assert _post(gw, "key-w").status_code == 200


def test_the_cli_sets_the_limit_and_refuses_a_bad_one_before_listening(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flotorch_nb.gateway import __main__ as cli

    assert cli.main(["--port", "0", "--rpm", "0"]) == 2
    assert "rpm must be a whole number >= 1" in capsys.readouterr().err
    apps: list[Any] = []

    def app(**options: Any) -> object:
        apps.append(options)
        return object()

    monkeypatch.setattr(cli, "create_app", app)

    def no_port(host: str, port: int) -> Any:
        raise OSError("taken")

    monkeypatch.setattr(cli, "bind_socket", no_port)
    assert cli.main(["--rpm", "600", "--tpm", "9000", "--rate-window", "30"]) == 1
    assert apps[0]["limiter"].limit == RateLimit(rpm=600, tpm=9000, window=30)
    assert cli.main([]) == 1 and apps[1]["limiter"].limit is None
