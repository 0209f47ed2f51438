"""Cassette files: one pretty-printed JSON file per exchange, named, scrubbed, written and read safely.

A file is ``<slug-of-last-user-message>-<hash12>.json`` and holds the canonical request and the stored
response (see ``notebooks/recordings/README.md``). Nothing here knows httpx2: the stored response is
plain JSON data, built and turned back into a response by ``_transports``.

- **Secrets** (the request's bearer token, as given by the transport) are masked in every string of
  the request and the response, *and in the file name*: the slug is made from the scrubbed prompt, so
  a prompt that quotes the key never puts it in a file list either. Masking is ``_config.redact``,
  the client's own rule.
- **Any text that came in can be written**: a lone surrogate (``"\\udcff"``, from ``os.listdir`` of a
  badly encoded name) is written as a ``\\udcff`` JSON escape, which reads back as the same string,
  so the file and the request key agree.
- **Damaged files** are ``ReplayFileError`` naming the file and the fault, never a miss or a bare
  ``KeyError``; a stored stream without its ``events`` is damaged, not an empty answer.
"""

from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._config import Secret, redact
from .._errors import ReplayFileError, ReplayMissError
from .._text import one_line
from ._match import last_user_text, request_key

__all__ = ["FORMAT", "Cassette", "cassette_name", "dumps_record", "scrubbed"]

FORMAT = 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_BODY_FIELDS = ("events", "json", "text")


def _slug(text: str, limit: int = 40) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            break
        slug = candidate
    return slug or (words[0][:limit] if words else "request")


def cassette_name(canonical: Mapping[str, Any], key: str, secrets: Sequence[Secret] = ()) -> str:
    """``<slug-of-last-user-message>-<hash12>.json``: readable in a file list, unique by content.

    The slug comes from the prompt with ``secrets`` masked, so a key quoted in a prompt never names a file.
    """
    return f"{_slug(scrubbed(last_user_text(canonical), secrets))}-{key[:12]}.json"


def _snippet(text: str, limit: int = 60) -> str:
    return one_line(text, limit)


def scrubbed(value: Any, secrets: Sequence[Secret]) -> Any:
    """``value`` with every secret masked in every string in it (object keys too).

    Masking is ``_config.redact``, the client's own rule: a key long enough to be masked in an error
    message is masked in a file too.
    """
    if isinstance(value, str):
        for secret in secrets:
            value = redact(value, secret)
        return value
    if isinstance(value, dict):
        return {scrubbed(k, secrets): scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrubbed(v, secrets) for v in value]
    return value


def dumps_record(record: Mapping[str, Any]) -> str:
    """Pretty, key-sorted JSON that keeps non-ASCII text readable and is always encodable as UTF-8.

    ``ensure_ascii=False`` keeps "café" readable in a diff; a lone surrogate, which UTF-8 cannot
    encode, is written as its ``\\uXXXX`` escape instead (only strings can hold one, and JSON reads
    the escape back as the same string).
    """
    text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _read_record(path: Path) -> dict[str, Any]:
    """A recording file as a dict with a string ``key``, or ``ReplayFileError`` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReplayFileError(path, f"it is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ReplayFileError(path, f"it cannot be read ({exc.strerror or exc})") from exc
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ReplayFileError(path, f"it is not valid JSON ({exc.msg} at {where})") from exc
    except RecursionError as exc:
        raise ReplayFileError(path, "it is nested too deeply to read") from exc
    if not isinstance(record, dict):
        raise ReplayFileError(path, f"it holds a JSON {type(record).__name__}, not an object")
    if record.get("format", FORMAT) != FORMAT:
        raise ReplayFileError(
            path, f"it has format {record['format']!r}; this version of flotorch_nb reads format {FORMAT}"
        )
    if not isinstance(record.get("key"), str):
        raise ReplayFileError(path, "its 'key' (the sha256 of the request) is missing or not a string")
    return record


def _checked_response(path: Path, entry: Any) -> dict[str, Any]:
    """The stored response if it has what a replayed response needs, else ``ReplayFileError``."""
    if not isinstance(entry, dict):
        raise ReplayFileError(path, "its 'response' is missing or not an object")
    status = entry.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ReplayFileError(path, f"its 'response.status' must be an HTTP status code, got {status!r}")
    headers = entry.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) and v.isascii() and k.isascii() for k, v in headers.items()
    ):
        raise ReplayFileError(path, "its 'response.headers' must be an object of ASCII strings")
    events = entry.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ReplayFileError(path, "its 'response.events' must be a list of strings (SSE data payloads)")
    if not isinstance(entry.get("text", ""), str):
        raise ReplayFileError(path, "its 'response.text' must be a string")
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if content_type.partition(";")[0].strip().lower() == "text/event-stream" and "events" not in entry:
        # Replaying it as an empty stream would pass a damaged file off as a model that said nothing.
        raise ReplayFileError(path, "its 'response.events' is missing, yet the response is an event stream")
    if not any(name in entry for name in _BODY_FIELDS):
        raise ReplayFileError(path, "its 'response' has no body: one of 'events', 'json' or 'text' is needed")
    return dict(entry)


class Cassette:
    """One directory of recordings: write an exchange, find the answer to a request."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def save(self, canonical: Mapping[str, Any], entry: Mapping[str, Any], secrets: Sequence[Secret]) -> Path:
        """Write (or replace) the file for this request; atomic, so a crash never leaves half a file.

        ``secrets`` are scrubbed from every string of the request and the response, and from the
        file name, before writing; the key is the hash of the request as sent, so scrubbing never
        changes which request a file answers (nor can a short secret that happens to occur in the hex
        digest damage it). Raises ``OSError`` when the directory cannot be written.
        """
        key = request_key(canonical)
        request, response = scrubbed(dict(canonical), secrets), scrubbed(dict(entry), secrets)
        text = dumps_record({"format": FORMAT, "key": key, "request": request, "response": response})
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f"*-{key[:12]}.json"):  # a renamed slug must not leave twins
            stale.unlink(missing_ok=True)
        target = self.directory / cassette_name(canonical, key, secrets)
        scratch = target.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
        try:
            scratch.write_text(text, encoding="utf-8")
            os.replace(scratch, target)
        finally:
            scratch.unlink(missing_ok=True)
        return target

    def load(self, canonical: Mapping[str, Any]) -> dict[str, Any]:
        """The stored response for this request (``ReplayMissError``: none; ``ReplayFileError``: damaged)."""
        key = request_key(canonical)
        for path in sorted(self.directory.glob(f"*-{key[:12]}.json")):
            record = _read_record(path)
            if record["key"] == key:  # another key sharing the 12-digit prefix is another request
                return _checked_response(path, record.get("response"))
        raise self._miss(canonical, key)

    def _miss(self, canonical: Mapping[str, Any], key: str) -> ReplayMissError:
        """Name the request, how to record it, and the closest recording (same last user message)."""
        found = canonical.get("body")
        body: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        text = last_user_text(canonical)
        where = self.directory if self.directory.is_dir() else f"{self.directory} (no such folder)"
        message = (
            f"No recording for this request in {where} (model {body.get('model')}, last user "
            f"message: {_snippet(text)!r}); record it with FLOTORCH_RECORD={self.directory} "
            "against a live gateway"
        )
        for path in sorted(self.directory.glob(f"{_slug(text)}-*.json")):
            try:
                other = json.loads(path.read_text(encoding="utf-8"))["request"]["body"]
                differ = sorted(k for k in body.keys() | other.keys() if body.get(k) != other.get(k))
            except (ValueError, LookupError, TypeError, AttributeError, RecursionError):
                continue  # a damaged file is no hint
            message += f". Closest recording: {path.name} (differs in: {', '.join(differ) or 'path'})"
            break
        return ReplayMissError(message, directory=self.directory, request=canonical, key=key)
