"""``FlotorchLLM.copy(**overrides)``: a client like this one with some options replaced, the key kept
as a secret (never unwrapped outside ``_config``), hook lists and pools of its own."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest

from flotorch_nb import ConfigurationError, FlotorchLLM, Hooks, RetryPolicy
from flotorch_nb.cache import AnswerCache
from tests.support.client import KEY, MOCK_URL, USER, Counting, Recorder


def _client(http: httpx2.Client, **options: object) -> FlotorchLLM:
    return FlotorchLLM("test/model", KEY, MOCK_URL, http_client=http, **options)  # type: ignore[arg-type]


def test_copy_replaces_what_it_is_given_and_keeps_the_rest(tmp_path: Path) -> None:
    handler = Recorder()
    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
        base = _client(http, timeout=12, retry=RetryPolicy(max_retries=4), endpoint="/v1/chat")
        base.hooks.gates.append(Counting())
        copied = base.copy(model_id="other/model", timeout=3)
        assert (copied.model_id, copied.timeout) == ("other/model", 3.0)
        assert (copied.base_url, copied.endpoint, copied.retry) == (base.base_url, "/v1/chat", base.retry)
        assert copied.hooks is not base.hooks and copied.hooks.gates == base.hooks.gates
        assert copied.hooks.gates is not base.hooks.gates  # a gate added to one stays there
        copied.invoke(USER)
        base.invoke(USER)
        # The same key went out from both, though no code outside _config unwrapped it to copy it.
        first, second = handler.requests
        assert first.headers["authorization"] == second.headers["authorization"] == f"Bearer {KEY}"
        assert handler.bodies[0]["model"] == "other/model"

        assert base.copy(max_retries=0).retry == RetryPolicy(max_retries=0)
        hooks = Hooks()
        assert base.copy(hooks=hooks).hooks is hooks
        cached = base.copy(cache=tmp_path / "answers.sqlite")
        assert isinstance(cached.cache, AnswerCache) and base.cache is None
        assert cached.copy(cache=False).cache is None
        assert cached.copy().cache is cached.cache
        assert "***" in repr(base.copy(api_key="another-key-0123"))


def test_with_model_is_copy_with_a_model() -> None:
    base = FlotorchLLM("a/model", KEY, MOCK_URL, timeout=7)
    other = base.with_model("b/model")
    assert (other.model_id, other.timeout, other.retry) == ("b/model", 7.0, base.retry)
    with pytest.raises(ConfigurationError):
        base.with_model("")


@pytest.mark.parametrize(
    "overrides",
    [{"model": "x"}, {"timeout": -1}, {"max_retries": 1.5}, {"base_url": "ftp://x"}, {"model_id": " "}],
)
def test_copy_refuses_what_it_cannot_use_before_any_io(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        FlotorchLLM("a/model", KEY, MOCK_URL).copy(**overrides)


def test_a_copy_has_pools_of_its_own() -> None:
    handler = Recorder()
    base = FlotorchLLM("a/model", KEY, MOCK_URL)
    copied = base.copy()
    base._pools.client = httpx2.Client(transport=httpx2.MockTransport(handler))
    copied._pools.client = httpx2.Client(transport=httpx2.MockTransport(handler))
    assert copied._pools is not base._pools
    base.close()
    assert base._client is None
    assert copied.invoke(USER).content == "Hello!"  # closing one never closes the other's
    copied.close()
