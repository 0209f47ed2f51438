"""The per-call fast paths (``_request``, ``_response``) give exactly what the general paths give."""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb._config import DEFAULT_ENDPOINT
from flotorch_nb._errors import InvalidRequestError, ResponseError
from flotorch_nb._request import encode_body, validate_messages
from flotorch_nb._request_key import canonical_request, canonical_text, request_hash, request_key
from flotorch_nb._response import ResponseInfo, _loads, parse_completion

ANSWER = {"id": "x", "model": "m", "choices": [{"message": {"role": "assistant", "content": "hi"}}]}


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(ANSWER).encode(),
        b"  " + json.dumps(ANSWER).encode() + b"\n",  # whitespace around: json.loads' own path
        json.dumps(ANSWER).encode() + b" \r\n",
        json.dumps(ANSWER).encode("utf-16-le"),  # no BOM: json.loads detects the encoding
        json.dumps(ANSWER).encode("utf-8-sig"),
        json.dumps({"a": "é"}, ensure_ascii=False).encode(),
    ],
)
def test_loads_matches_json_loads(body: bytes) -> None:
    assert _loads(body) == json.loads(body)


@pytest.mark.parametrize("body", [b"{", b"{} {}", b'{"a": 1}x', b"{\xff}", b"[1]", b"", b"{" * 100_000])
def test_loads_fails_as_json_loads_does(body: bytes) -> None:
    try:
        expected: object = json.loads(body)
    except Exception as exc:  # the same type of error, whichever path raised it
        with pytest.raises(type(exc)):
            _loads(body)
    else:
        assert _loads(body) == expected


def test_parse_completion_keeps_the_raw_answer_it_parsed() -> None:
    response = parse_completion(json.dumps(ANSWER).encode(), ResponseInfo(0.1))
    assert response.metadata["raw_response"] == ANSWER
    assert response.content == "hi"
    with pytest.raises(ResponseError, match="not an object"):
        parse_completion(b"[1]", ResponseInfo(0.1))


def test_plain_messages_are_copied_like_any_others() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    checked = validate_messages(messages)
    assert checked == messages
    assert all(a is not b for a, b in zip(checked, messages, strict=True))


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "u"}, OrderedDict(role="user", content="u")],
        [{"role": "user", "content": "u"}, {"role": "tool", "content": "r", "tool_call_id": "1"}],
        [{"role": "user", "content": [{"type": "text", "text": "u"}]}],
        ({"role": "user", "content": "u"},),
    ],
)
def test_other_shapes_take_the_full_path(messages: object) -> None:
    assert validate_messages(messages) == [dict(m) for m in messages]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "user", "content": "u"}, {"role": "robot", "content": "x"}],
        [{"role": "user", "content": "u"}, {"role": "tool", "content": "r"}],
    ],
)
def test_a_bad_message_after_plain_ones_is_still_reported(messages: object) -> None:
    with pytest.raises(InvalidRequestError):
        validate_messages(messages)


def test_encode_body_is_compact_sorted_utf8_and_refuses_nan() -> None:
    assert encode_body({"b": 1, "a": [1, "é"]}) == ('{"a":[1,"é"],"b":1}'.encode(), True)
    assert encode_body({"t": 1.0}) == (b'{"t":1.0}', False)  # sent as given; its key goes the long way
    bad: list[dict[Any, Any]] = [{"a": float("nan")}, {"a": object()}, {1: object(), "a": 1}]
    for body in bad:
        with pytest.raises(InvalidRequestError, match="not JSON-serialisable"):
            encode_body(body)


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"b": 1, 2: "x"}, b'{"b":1,"2":"x"}'),  # keys of mixed types cannot be sorted
        ({"b": "\ud800", "a": 1}, b'{"b":"\\ud800","a":1}'),  # a lone surrogate is not UTF-8
    ],
)
def test_a_body_the_sorted_encoder_cannot_write_is_sent_as_written(body: dict[Any, Any], sent: bytes) -> None:
    assert encode_body(body) == (sent, False)


# -- the request hash's short way (``_request_key.request_hash`` of a dict) ----------------------------


def _long_way(body: Mapping[str, Any], endpoint: str = DEFAULT_ENDPOINT) -> str:
    return request_key(canonical_request(body, endpoint))


def _value(rng: random.Random, depth: int) -> Any:
    scalars: list[Any] = [
        "hi",
        "é ✓ \u2028",
        "\ud800",  # a lone surrogate
        'say "1.0", {"2": 1e+5}',  # what the short way looks for, inside a string
        "",
        0,
        -7,
        2**70,
        0.5,
        1.0,
        -0.0,
        1e16,
        1.5e300,
        1e-05,
        3.14,
        True,
        False,
        None,
    ]
    if depth > 2 or rng.random() < 0.5:
        return rng.choice(scalars)
    if rng.random() < 0.5:
        items = [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
        return tuple(items) if rng.random() < 0.2 else items
    return _mapping(rng, depth + 1)


def _mapping(rng: random.Random, depth: int) -> dict[Any, Any]:
    keys: list[Any] = ["a", "b", "model", "Z", "é", "10", "2", "true"]
    if rng.random() < 0.3:  # a key of another type: JSON writes it as text
        keys += [2, 10, -1, 1.5, True, None]
    return {rng.choice(keys): _value(rng, depth) for _ in range(rng.randrange(5))}


def test_the_request_hash_of_a_dict_is_the_long_way_s_key_for_any_body() -> None:
    rng = random.Random(14)
    short = 0
    for _ in range(3000):
        body = _mapping(rng, 0)
        endpoint = rng.choice([DEFAULT_ENDPOINT, "/proxy/v1/chat/completions?x=1"])
        try:
            expected = _long_way(body, endpoint)
        except (TypeError, ValueError):  # a key JSON cannot write at all: no key either way
            continue
        assert request_hash(body, endpoint) == expected, body
        short += canonical_text(body) is not None
    assert short > 300  # the short way was taken, not only the long one


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": 1.0},  # a whole float: the canonical body has 1
        {"seed": 1e16},
        {"n": [-0.0]},
        {"logit_bias": {2: 1, 10: -1}},  # sorted as ints (2, 10), as text "10" < "2"
        {"a": {True: 1, "b": 2}},  # not sortable beside strings
        {"a": {None: 1}},
        {"a": {1.5: 1}},
    ],
)
def test_the_short_way_leaves_what_it_cannot_vouch_for_to_the_long_way(body: dict[str, Any]) -> None:
    assert canonical_text(body) is None
    assert request_hash(body) == _long_way(body)


@pytest.mark.parametrize(
    ("content", "params", "short"),
    [
        ("héllo", {}, True),
        ("héllo", {"temperature": 0.7}, True),
        ("héllo", {"temperature": 0.7, "top_p": 1.0}, False),  # a whole float: the long way
        ("héllo", {"logit_bias": {"50256": -100, 9: 1}}, False),  # keys that are not text
        ("h\ud800llo", {}, False),  # not UTF-8: sent escaped, keyed the long way
    ],
)
def test_a_call_s_request_hash_is_its_request_s_key_whichever_way_it_is_worked_out(
    content: str, params: dict[str, Any], short: bool
) -> None:
    llm = FlotorchLLM("m", "k", "http://127.0.0.1:9/proxy")
    call = llm._pipeline.prepare(
        [{"role": "user", "content": content}], None, None, None, dict(params), stream=False
    )
    assert call.canonical is short
    assert call.request_hash() == _long_way(call.body, call.url) == request_hash(call.content, call.url)
