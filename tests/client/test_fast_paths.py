"""The per-call fast paths (``_request``, ``_response``) give exactly what the general paths give."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest

from flotorch_nb._errors import InvalidRequestError, ResponseError
from flotorch_nb._request import encode_body, validate_messages
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


def test_encode_body_is_compact_and_refuses_nan() -> None:
    assert encode_body({"a": [1, "é"]}) == b'{"a":[1,"\\u00e9"]}'
    with pytest.raises(InvalidRequestError, match="not JSON-serialisable"):
        encode_body({"a": float("nan")})
    with pytest.raises(InvalidRequestError, match="not JSON-serialisable"):
        encode_body({"a": object()})
