"""Canonical numbers in the request key: read while parsing (``parse_float``) since the per-call
provenance hash had to get cheaper; these pin that every spelling still meets at one key."""

from __future__ import annotations

import math

from flotorch_nb.replay import canonical_request, request_key


def _key(body: bytes) -> str:
    return request_key(canonical_request(body))


def test_whole_floats_become_ints_at_any_depth_and_in_any_spelling() -> None:
    plain = b'{"t":1,"a":[2,{"b":100}],"c":{"d":[0]}}'
    spelled = b'{"t":1.0,"a":[2.00,{"b":1e2}],"c":{"d":[-0.0]}}'
    assert _key(spelled) == _key(plain)
    assert canonical_request(spelled)["body"] == {"t": 1, "a": [2, {"b": 100}], "c": {"d": [0]}}
    assert type(canonical_request(spelled)["body"]["a"][1]["b"]) is int


def test_fractions_and_constants_are_kept() -> None:
    body = canonical_request(b'{"a":0.5,"b":[NaN,Infinity,-Infinity,1e400]}')["body"]
    assert body["a"] == 0.5
    assert math.isnan(body["b"][0]) and body["b"][1:] == [math.inf, -math.inf, math.inf]
    assert _key(b'{"a":0.5}') != _key(b'{"a":1}')


def test_a_mapping_and_its_bytes_and_other_encodings_give_one_key() -> None:
    sent = b'{"model":"m","temperature":1.0,"messages":[{"role":"user","content":"hi \xc3\xa9"}]}'
    mapping = {"model": "m", "temperature": 1, "messages": [{"role": "user", "content": "hi é"}]}
    assert _key(sent) == request_key(canonical_request(mapping))
    assert _key(sent.decode().encode("utf-16")) == _key(sent)  # detected as json.loads detects it
    assert _key(b"\xef\xbb\xbf" + sent) == _key(sent)
