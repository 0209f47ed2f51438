"""Configuration mistakes are ``ConfigurationError`` naming the setting and its value, never a bare
``ValueError``/``OverflowError`` nor a silently changed value; and the record/replay rule lives in one
place (``_config.cassette_from_env``)."""

from __future__ import annotations

import pytest

from flotorch_nb import ConfigurationError, FlotorchLLM, InvalidRequestError
from flotorch_nb._config import cassette_from_env, check_base_url, check_whole, resolve

KEY = "cfg-test-key-0123456789"
URL = "http://gateway.test"


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1.7", "-1", "2.0", "three", "1e3", "0x2"])
def test_a_bad_max_retries_variable_is_a_configuration_error_naming_it(raw: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve("m", KEY, URL, env={"FLOTORCH_MAX_RETRIES": raw})
    assert "FLOTORCH_MAX_RETRIES" in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize("raw", ["3", " 3 ", "0"])
def test_a_whole_max_retries_variable_is_used(raw: str) -> None:
    assert resolve("m", KEY, URL, env={"FLOTORCH_MAX_RETRIES": raw}).max_retries == int(raw)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1.7, -1, True, "2"])
def test_a_bad_max_retries_argument_is_a_configuration_error_naming_it(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve("m", KEY, URL, max_retries=value, env={})  # type: ignore[arg-type]
    assert "max_retries" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "0", "soon"])
def test_a_bad_timeout_variable_is_a_configuration_error_naming_it(raw: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve("m", KEY, URL, env={"FLOTORCH_TIMEOUT": raw})
    assert "FLOTORCH_TIMEOUT" in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -2.5, "5"])
def test_a_bad_timeout_argument_is_a_configuration_error_naming_it(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve("m", KEY, URL, timeout=value, env={})  # type: ignore[arg-type]
    assert "timeout" in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://[::1]:99999", "http://host:port", "https://[not-an-ip]/x"]
)
def test_a_malformed_base_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        check_base_url(url)
    with pytest.raises(ConfigurationError, match="base_url"):
        FlotorchLLM("m", KEY, url)


@pytest.mark.parametrize(
    "url",
    [
        "https://gateway.test/api?key=sk-" + "hidden-in-query",
        "https://gateway.test?token=sk-" + "hidden-in-query",
        "https://gateway.test/#sk-" + "hidden-in-query",
        "https://gateway.test/api?",
    ],
)
def test_a_base_url_with_a_query_or_fragment_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve("m", KEY, url, env={})
    message = str(info.value)
    assert "base_url" in message and ("query" in message or "fragment" in message)
    assert "sk-" + "hidden-in-query" not in message
    assert "gateway.test" in message  # what is shown is enough to find the mistake


def test_a_base_url_with_credentials_is_not_echoed_when_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_base_url("ftp://user:pw-secret@gateway.test")
    assert "pw-secret" not in str(info.value)


def test_good_base_urls_still_work() -> None:
    assert check_base_url(" http://[::1]:8080/prefix/ ") == "http://[::1]:8080/prefix"
    assert check_base_url("https://gateway.test") == "https://gateway.test"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (None, None)),
        ({"FLOTORCH_RECORD": "rec"}, ("record", "rec")),
        ({"FLOTORCH_REPLAY": "rep"}, ("replay", "rep")),
        ({"FLOTORCH_RECORD": "rec", "FLOTORCH_REPLAY": "rep"}, ("replay", "rep")),  # replay wins
        ({"FLOTORCH_RECORD": "", "FLOTORCH_REPLAY": ""}, (None, None)),  # empty means unset
    ],
)
def test_one_rule_decides_record_or_replay(env: dict[str, str], expected: tuple[str | None, ...]) -> None:
    assert cassette_from_env(env) == expected
    settings = resolve("m", KEY, URL, env=env)
    assert (settings.cassette_mode, settings.cassette_path) == expected


def test_the_rule_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOTORCH_RECORD", "rec")
    monkeypatch.setenv("FLOTORCH_REPLAY", "rep")
    assert cassette_from_env() == ("replay", "rep")


@pytest.mark.parametrize(
    "url",
    [
        "http://gateway.test/api/openai/v1",
        "http://gateway.test/api/openai/v1/",
        "http://gateway.test/api/openai/v1/chat/completions",
        "http://gateway.test/api/openai",
    ],
)
def test_a_base_url_with_the_endpoint_pasted_in_is_refused_naming_the_url_to_use(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"already ends with '/api/openai.*'http://gateway.test'$"):
        FlotorchLLM("m", KEY, url)
    with pytest.raises(ConfigurationError, match="FLOTORCH_BASE_URL"):
        resolve("m", KEY, None, env={"FLOTORCH_BASE_URL": url})
    # A gateway mounted under a prefix, or with an endpoint of its own, is left alone.
    assert FlotorchLLM("m", KEY, url, endpoint="/v2/generate").base_url == url.rstrip("/")
    assert check_base_url("http://gateway.test/api") == "http://gateway.test/api"


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_key_names_the_variable_to_set(key: str) -> None:
    with pytest.raises(ConfigurationError, match="FLOTORCH_API_KEY"):
        FlotorchLLM("m", key, URL)
    with pytest.raises(ConfigurationError, match="FLOTORCH_API_KEY"):
        resolve("m", None, URL, env={"FLOTORCH_API_KEY": key})


@pytest.mark.parametrize("value", [True, 2.0, "3", -1, None, 0])
def test_a_count_is_a_whole_number_at_least_its_floor_by_one_rule(value: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"^n must be a whole number >= 1, got "):
        check_whole(value, "n", 1, InvalidRequestError)


def test_a_count_that_may_be_none_says_so() -> None:
    assert check_whole(None, "limit", 1, or_none=True) is None
    assert check_whole(3, "limit", 1, or_none=True) == 3
    with pytest.raises(ConfigurationError, match=r"limit must be a whole number >= 1 or None, got 0"):
        check_whole(0, "limit", 1, or_none=True)
