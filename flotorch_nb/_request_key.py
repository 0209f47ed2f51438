"""Pure: what identifies a request, and its key (sha256): one rule for replay's files, the answer
cache's rows, every answer's provenance and the offline gateway's request counts.

A request is identified by what it means, never by where it went or who sent it: the method, the
endpoint path (see :func:`endpoint_path`: a base URL's own path prefix is not part of it) and the whole
JSON body with canonical numbers (``1.0`` and ``1`` are the same temperature). Host, headers and key
play no part. The key is the sha256 of that canonical request as compact, key-sorted JSON, so it is
stable across runs, machines and Python versions. A leaf (stdlib and ``_config`` only): the call
pipeline, the cache, ``replay`` (which re-exports it from ``replay._match``) and the gateway import it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ._config import DEFAULT_ENDPOINT

__all__ = [
    "CANONICAL",
    "KNOWN_ENDPOINTS",
    "answer_key",
    "canonical_body_key",
    "canonical_request",
    "canonical_text",
    "endpoint_path",
    "request_hash",
    "request_key",
    "vouches",
]

#: Endpoints known by name: a path that ends with one is matched as exactly that endpoint.
KNOWN_ENDPOINTS = (DEFAULT_ENDPOINT,)
_VERSION = re.compile(r"v\d+(?:alpha|beta|preview)?\d*", re.IGNORECASE)


def endpoint_path(path: str) -> str:
    """The endpoint part of a URL path (query kept), without the prefix a base URL may have added.

    A gateway may be mounted under a path (``https://corp.example/flotorch``) while replay runs with no
    base URL at all, so that prefix cannot take part in matching. The transport never sees the base
    URL, so the endpoint is recognised in the path itself:

    1. a path ending with a known endpoint (FloTorch's ``/api/openai/v1/chat/completions``) is that
       endpoint, whatever came before it;
    2. otherwise it starts at the last API-version segment (``/proxy/v1/chat/completions`` ->
       ``/v1/chat/completions``), which is where OpenAI-style endpoints begin;
    3. a path with neither is kept whole.
    """
    route, mark, query = path.partition("?")
    suffix = mark + query
    for known in KNOWN_ENDPOINTS:
        if route.endswith(known):  # known starts with "/": the match starts at a segment boundary
            return known + suffix
    segments = route.split("/")
    for index in range(len(segments) - 1, -1, -1):
        if _VERSION.fullmatch(segments[index]):
            return "/" + "/".join(segments[index:]) + suffix
    return path


def _whole(text: str) -> int | float:
    """A JSON number with a fraction or exponent, in its one spelling: a float with a whole value is
    an int. ``temperature=1`` and ``temperature=1.0`` are the same request, and so must give the same
    key (NaN and Infinity are JSON constants, not read here: kept as floats)."""
    value = float(text)
    return int(value) if value.is_integer() else value


#: Reads JSON with canonical numbers as it goes, not by walking the result again afterwards: every
#: answer's provenance carries a request hash, so this runs once per call.
_CANONICAL = json.JSONDecoder(parse_float=_whole)
#: The key's encoder, made once (``json.dumps`` with options builds one per call).
_KEY = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parsed_body(body: bytes | str | Mapping[str, Any] | list[Any] | None) -> Any:
    """The body as JSON values with canonical numbers; text when it is not JSON (or too deep to read).

    A mapping goes through JSON once, so it gives exactly what the bytes a client sends for it give
    (tuples become lists, keys strings), whatever the spacing or key order of those bytes.
    """
    if body is None or body == b"" or body == "":
        return None
    if isinstance(body, Mapping | list):
        body = json.dumps(body)
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    try:  # decoded as json.loads decodes bytes
        return _CANONICAL.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return raw.decode("utf-8", "replace")


def canonical_request(
    body: bytes | str | Mapping[str, Any] | list[Any] | None,
    endpoint: str = DEFAULT_ENDPOINT,
    *,
    method: str = "POST",
) -> dict[str, Any]:
    """What identifies a request: ``{"method", "path", "body"}``, pure and deterministic.

    ``body`` is what is sent (bytes or text) or the JSON value before encoding (a dict): both give the
    same result. ``endpoint`` is the URL path (query kept), reduced by :func:`endpoint_path`; numbers
    in the body are canonical (``1.0`` -> ``1``); a body that is not JSON is kept as text.
    """
    return {"method": method.upper(), "path": endpoint_path(endpoint), "body": _parsed_body(body)}


def request_key(canonical: Mapping[str, Any]) -> str:
    """sha256 of a :func:`canonical_request` as compact, key-sorted JSON: stable across runs and machines.

    Text is hashed as UTF-8; a lone surrogate (a badly encoded file name, say) is hashed as its
    surrogate-escape bytes instead of failing, so any text a client can send has a key.
    """
    return _digest(_KEY.encode(canonical))


def request_hash(body: bytes | Mapping[str, Any], endpoint: str = DEFAULT_ENDPOINT) -> str:
    """The key of a chat-completion request (the JSON sent, or its dict) at ``endpoint``: what replay
    files are named by, and what an answer's provenance carries so it can be traced to its recording.

    A dict takes the short way when it can (:func:`canonical_text`): one encoding instead of an
    encoding, a parse and a second encoding. The key is the same either way
    (``tests/client/test_fast_paths.py`` holds the two ways to each other).
    """
    if isinstance(body, dict) and (text := canonical_text(body)) is not None:
        return canonical_body_key(text.encode("utf-8", "surrogatepass"), endpoint)
    return request_key(canonical_request(body, endpoint))


def canonical_body_key(body: bytes, endpoint: str = DEFAULT_ENDPOINT) -> str:
    """:func:`request_hash` of a body given as its canonical text (UTF-8; see :func:`vouches`): one
    sha256, since that text is already what :func:`request_key` would write for it. The call
    pipeline sends such bytes (``_request.encode_body``), so a call's key costs no encoding at all."""
    # request_key's text of {"body", "method", "path"}: its keys in sorted order, written out.
    return hashlib.sha256(
        b'{"body":' + body + b',"method":"POST","path":' + _path_json(endpoint) + b"}"
    ).hexdigest()


#: What the short way cannot vouch for, found in its own text (a match inside a string only sends a
#: body the long way, never to a wrong key): a float with a whole value (``1.0``; ``1e+16`` is found
#: as ``e+``), which the canonical body writes as an int; and a key that a non-string key may have
#: become (``1``, ``true``, ``null``...), which was sorted before it was written, so it may stand out
#: of order. Each pattern starts with text, so the search jumps from candidate to candidate.
_WHOLE_FLOAT = re.compile(r"\.0(?![0-9])")
_OTHER_KEYS = tuple(
    re.compile(re.escape(start) + r'"(?:-?[0-9]|(?:true|false|null|NaN|-?Infinity)")') for start in "{,"
)
#: The canonical body's encoder, as the key's (``_KEY``) but without the check for circles (a circle
#: recurses until RecursionError: the long way, where it is refused as before) and refusing NaN and
#: infinities (which no request may send). ``_request`` sends what it writes.
CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False, allow_nan=False
)


def vouches(text: str) -> bool:
    """Whether ``text``, :data:`CANONICAL`'s encoding of a body, is the canonical body's own text.

    For a body of string keys without whole-valued floats, JSON's round trip (the long way) changes
    nothing the key's encoder writes: tuples are lists either way, strings and other numbers come
    back equal. A key of another type is written as text after sorting, so it may stand out of
    order, and a whole-valued float becomes an int on the long way: both are left to it.
    """
    if "e+" in text or (".0" in text and _WHOLE_FLOAT.search(text)):
        return False
    return not any(keys.search(text) for keys in _OTHER_KEYS)


def canonical_text(body: dict[str, Any]) -> str | None:
    """``body`` as the canonical request writes it, or None when only the long way can tell (a key
    JSON cannot sort, NaN, a value it cannot write, or what :func:`vouches` leaves to it)."""
    try:
        text = CANONICAL.encode(body)
    except (TypeError, ValueError, RecursionError):
        return None
    return text if vouches(text) else None


@functools.lru_cache(maxsize=64)
def _path_json(endpoint: str) -> bytes:
    """The request's path as the canonical request writes it, once per endpoint."""
    return _KEY.encode(endpoint_path(endpoint)).encode("utf-8", "surrogatepass")


def _digest(text: str) -> str:
    # A lone surrogate (a badly encoded file name, say) is hashed as its surrogate-escape bytes.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


#: Left out of the answer key: the finished answer is the same whether it was streamed or not.
_TRANSPORT_ONLY = frozenset(("stream", "stream_options"))


def answer_key(body: Mapping[str, Any], url: str) -> str:
    """The answer cache's key for a request POSTed to ``url``: :func:`request_hash` without
    ``stream``/``stream_options``, so a streamed call and an ``invoke`` of it share one answer."""
    kept = {k: v for k, v in body.items() if k not in _TRANSPORT_ONLY}
    parts = urlsplit(url)
    return request_hash(kept, parts.path + (f"?{parts.query}" if parts.query else ""))
