"""Record gateway exchanges to plain JSON files, and answer from them later with no key and no network.

An instructor runs the notebooks once against a live gateway with ``FLOTORCH_RECORD=DIR``; students,
CI and Binder run them with ``FLOTORCH_REPLAY=DIR``. Both are httpx2 transports that the client puts
around (record) or in place of (replay) its network transport via ``wrap_transport``, so invoke,
ainvoke, stream and astream are all covered without the client knowing.

A request is matched by what it means, never by where it went or who sent it: method, endpoint path
(see ``endpoint_path``: a base URL's own path prefix is not part of it) and the whole JSON body (model,
messages, tools, tool_choice, response_format, stream, every parameter) with sorted keys and
canonical numbers (``1.0`` and ``1`` are the same temperature); host, headers and key play no part.
One pretty-printed file per exchange,
``<slug-of-last-user-message>-<hash12>.json``, holds the canonical request and the response (status,
an allow-list of headers, and the body as parsed JSON or, for a stream, one SSE ``data`` payload per
line) so recordings diff well. Decisions (see ``notebooks/recordings/README.md`` for the format):
one response per request (recording it again replaces the file, so a retried 429 -> 200 keeps the
200); in record mode the body is read in full before the caller gets it (a stream arrives at once,
still as a real event stream) and a request cancelled mid-answer is not recorded; request headers are
never stored and the bearer token is scrubbed from anything written, as a last guard (with the
client's own rule, ``_config.redact``, so a key short enough to be masked in an error message is
masked in a file too).

Every problem with a recording file found for a request (unreadable, not JSON, a field missing or of
the wrong type, an unknown format) is a ``ReplayFileError`` naming the file and what is wrong: a
damaged file must not pass for a miss, nor escape as a bare ``KeyError``.

Regenerate the bundled recordings with ``python -m flotorch_nb.replay record-notebooks``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
import unicodedata
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import httpx2

from .._config import DEFAULT_ENDPOINT, Secret, redact
from .._errors import ReplayFileError, ReplayMissError

__all__ = [
    "AsyncRecordTransport",
    "RecordTransport",
    "ReplayFileError",
    "ReplayMissError",
    "ReplayTransport",
    "canonical_request",
    "endpoint_path",
    "request_key",
    "wrap_transport",
]

FORMAT = 1
#: Headers a replayed answer needs (content type, offline marker, ids, latency, back-off); nothing else.
RECORDED_HEADERS = tuple(
    ["content-type", "x-flotorch-gateway", "x-request-id", "x-gateway-total-latency", "retry-after"]
)
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


def _canonical_numbers(value: Any) -> Any:
    """Equal numbers written differently become one spelling: a float with a whole value is an int.

    ``temperature=1`` and ``temperature=1.0`` are the same request, and so must give the same key.
    """
    if isinstance(value, float):
        return int(value) if value.is_integer() else value  # inf and nan are not whole: kept
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(v) for v in value]
    return value


def canonical_request(method: str, path: str, body: bytes) -> dict[str, Any]:
    """What identifies a request: method, endpoint path and the parsed body (text if it is not JSON).

    The path is reduced by ``endpoint_path``; numbers in the body are canonical (``1.0`` -> ``1``).
    """
    parsed: Any = None
    if body:
        try:
            parsed = _canonical_numbers(json.loads(body))
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = body.decode("utf-8", "replace")
    return {"method": method.upper(), "path": endpoint_path(path), "body": parsed}


def request_key(canonical: Mapping[str, Any]) -> str:
    """sha256 of the canonical request as compact, key-sorted JSON: stable across runs and machines."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _last_user_text(canonical: Mapping[str, Any]) -> str:
    body = canonical.get("body")
    messages = body.get("messages") if isinstance(body, Mapping) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # multimodal parts: keep the text ones
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            return str(content or "")
    return ""


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


def cassette_name(canonical: Mapping[str, Any], key: str) -> str:
    """``<slug-of-last-user-message>-<hash12>.json``: readable in a file list, unique by content."""
    return f"{_slug(_last_user_text(canonical))}-{key[:12]}.json"


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _split_events(text: str) -> list[str]:
    """The ``data`` payload of each SSE event (``event:``/``id:`` fields and comments are not kept)."""
    events: list[str] = []
    for block in re.split(r"\n\n+", text.replace("\r\n", "\n").replace("\r", "\n")):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append("\n".join(data))
    return events


def _event_bytes(data: str) -> bytes:
    return "".join(f"data: {line}\n" for line in data.split("\n")).encode("utf-8") + b"\n"


def _stored_response(status: int, headers: httpx2.Headers, body: bytes) -> dict[str, Any]:
    kept = {name: headers[name] for name in RECORDED_HEADERS if name in headers}
    entry: dict[str, Any] = {"status": status, "headers": kept}
    content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if content_type == "text/event-stream":
        entry["events"] = _split_events(text)
        return entry
    if "json" in content_type:
        try:
            entry["json"] = json.loads(text)
            return entry
        except json.JSONDecodeError:
            pass
    entry["text"] = text
    return entry


class _EventStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A replayed event stream, one event per chunk, so the client's SSE parser runs as it does live."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


def _to_response(entry: Mapping[str, Any]) -> httpx2.Response:
    """Rebuild a live-looking response from a stored one (the same code serves record and replay)."""
    status = int(entry["status"])
    headers = dict(entry.get("headers") or {})
    if "events" in entry:
        chunks = [_event_bytes(event) for event in entry["events"]]
        return httpx2.Response(status, headers=headers, stream=_EventStream(chunks))
    if "json" in entry:
        content = json.dumps(entry["json"], ensure_ascii=False).encode("utf-8")
    else:
        content = str(entry.get("text", "")).encode("utf-8")
    return httpx2.Response(status, headers=headers, content=content)


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
    """The stored response if it has what ``_to_response`` needs, else ``ReplayFileError``."""
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
    return dict(entry)


class Cassette:
    """One directory of recordings: write an exchange, find the answer to a request."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def save(
        self, canonical: Mapping[str, Any], entry: Mapping[str, Any], secrets: Sequence[Secret]
    ) -> Path:
        """Write (or replace) the file for this request; atomic, so a crash never leaves half a file.

        ``secrets`` are scrubbed from every string of the request and the response before writing;
        the key is the hash of the request as sent, so scrubbing never changes which request a file
        answers (nor can a short secret that happens to occur in the hex digest damage it).
        """
        key = request_key(canonical)
        request, response = _scrubbed(dict(canonical), secrets), _scrubbed(dict(entry), secrets)
        record = {"format": FORMAT, "key": key, "request": request, "response": response}
        text = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f"*-{key[:12]}.json"):  # a renamed slug must not leave twins
            stale.unlink(missing_ok=True)
        target = self.directory / cassette_name(canonical, key)
        scratch = target.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, target)
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
        text = _last_user_text(canonical)
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
            except (ValueError, LookupError, TypeError, AttributeError):
                continue  # a damaged file is no hint
            message += f". Closest recording: {path.name} (differs in: {', '.join(differ) or 'path'})"
            break
        return ReplayMissError(message, directory=self.directory, request=canonical, key=key)


def _secrets(request: httpx2.Request) -> list[Secret]:
    """The credential a request carries (whole header and bare token): never to be written anywhere."""
    value = request.headers.get("authorization", "")
    found = {value, value.partition(" ")[2].strip()}
    # As JSON escapes them too: a key inside an event payload (itself JSON text) is stored escaped.
    found |= {json.dumps(s, ensure_ascii=False)[1:-1] for s in found}
    found.discard("")
    return [Secret(s) for s in sorted(found, key=len, reverse=True)]  # the whole header goes first


def _scrubbed(value: Any, secrets: Sequence[Secret]) -> Any:
    """``value`` with every secret masked in every string in it (object keys too).

    Masking is ``_config.redact``, the client's own rule: a key long enough to be masked in an error
    message is masked in a file too.
    """
    if isinstance(value, str):
        for secret in secrets:
            value = redact(value, secret)
        return value
    if isinstance(value, dict):
        return {_scrubbed(k, secrets): _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, secrets) for v in value]
    return value


def _canonical(request: httpx2.Request) -> dict[str, Any]:
    path = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
    return canonical_request(request.method, path, request.content)


class ReplayTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Answers every request from a cassette directory; never opens a connection."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.cassette = Cassette(directory)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer from the recording, or raise ``ReplayMissError``."""
        request.read()
        return _to_response(self.cassette.load(_canonical(request)))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Answer from the recording, or raise ``ReplayMissError``."""
        await request.aread()
        return _to_response(self.cassette.load(_canonical(request)))


def _recorded(
    cassette: Cassette, request: httpx2.Request, response: httpx2.Response, body: bytes
) -> httpx2.Response:
    """Store one exchange and hand back what replay would answer, with the live headers."""
    entry = _stored_response(response.status_code, response.headers, body)
    cassette.save(_canonical(request), entry, _secrets(request))
    # The body is decoded and complete by now: its length and encoding headers no longer apply.
    dropped = {"content-encoding", "content-length", "transfer-encoding"}
    headers = {name: value for name, value in response.headers.items() if name.lower() not in dropped}
    return httpx2.Response(response.status_code, headers=headers, stream=_to_response(entry).stream)


class RecordTransport(httpx2.BaseTransport):
    """Forwards to the real transport, writes the exchange, hands back an equivalent response."""

    def __init__(self, inner: httpx2.BaseTransport, directory: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.cassette = Cassette(directory)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send, read the whole answer, store it, return it."""
        request.read()
        response = self.inner.handle_request(request)
        try:
            body = response.read()
        finally:
            response.close()
        return _recorded(self.cassette, request, response, body)

    def close(self) -> None:
        """Close the wrapped transport (the client closes us, we close what we own)."""
        self.inner.close()


class AsyncRecordTransport(httpx2.AsyncBaseTransport):
    """The async twin of ``RecordTransport``; the steps match line for line."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, directory: str | os.PathLike[str]) -> None:
        self.inner = inner
        self.cassette = Cassette(directory)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send, read the whole answer, store it, return it."""
        await request.aread()
        response = await self.inner.handle_async_request(request)
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        return _recorded(self.cassette, request, response, body)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


@overload
def wrap_transport(
    inner: httpx2.BaseTransport | None,
    mode: Literal["record", "replay"],
    path: str | os.PathLike[str],
    *,
    asynchronous: Literal[False],
) -> httpx2.BaseTransport: ...
@overload
def wrap_transport(
    inner: httpx2.AsyncBaseTransport | None,
    mode: Literal["record", "replay"],
    path: str | os.PathLike[str],
    *,
    asynchronous: Literal[True],
) -> httpx2.AsyncBaseTransport: ...
def wrap_transport(
    inner: httpx2.BaseTransport | httpx2.AsyncBaseTransport | None,
    mode: Literal["record", "replay"],
    path: str | os.PathLike[str],
    *,
    asynchronous: bool,
) -> httpx2.BaseTransport | httpx2.AsyncBaseTransport:
    """The transport for FLOTORCH_RECORD / FLOTORCH_REPLAY; ``inner`` may be None in replay (no network)."""
    if mode == "replay":
        return ReplayTransport(path)  # ``inner`` is never used: pass None so no pool is even built
    if mode == "record" and asynchronous and isinstance(inner, httpx2.AsyncBaseTransport):
        return AsyncRecordTransport(inner, path)
    if mode == "record" and not asynchronous and isinstance(inner, httpx2.BaseTransport):
        return RecordTransport(inner, path)
    raise ValueError(
        f"need mode 'record' with the network transport to forward to, or 'replay'; got {mode!r}"
    )


def record_notebooks(
    notebooks: Sequence[Path], recordings: Path, *, timeout: float = 120.0
) -> dict[str, int]:
    """Run each notebook with FLOTORCH_RECORD=<recordings>/<stem>; return the file count per notebook.

    Old files go first, so a directory holds exactly what its notebook asks today. Kernels inherit the
    environment: a live gateway if FLOTORCH_API_KEY/FLOTORCH_BASE_URL are set, else the embedded one.
    """
    import nbformat
    from nbclient import NotebookClient

    counts: dict[str, int] = {}
    for notebook in notebooks:
        target = (recordings / notebook.stem).resolve()
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.json"):
            old.unlink()
        env = {k: v for k, v in os.environ.items() if k != "FLOTORCH_REPLAY"}
        env["FLOTORCH_RECORD"] = str(target)
        nb = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]
        cwd = str(notebook.parent.resolve())
        NotebookClient(nb, timeout=timeout, kernel_name="python3").execute(cwd=cwd, env=env)
        counts[notebook.stem] = len(list(target.glob("*.json")))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flotorch_nb.replay record-notebooks [--notebooks DIR] [--out DIR] [NAME ...]``."""
    parser = argparse.ArgumentParser(prog="python -m flotorch_nb.replay", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record-notebooks", help="run the notebooks and record their gateway exchanges")
    rec.add_argument("names", nargs="*", help="notebook stems or files (default: all numbered ones)")
    rec.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="notebook directory")
    rec.add_argument("--out", type=Path, help="recordings directory (default: NOTEBOOKS/recordings)")
    rec.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = [Path(n) if n.endswith(".ipynb") else args.notebooks / f"{n}.ipynb" for n in args.names]
    paths = paths or sorted(args.notebooks.glob("[0-9]*.ipynb"))
    if not paths:
        parser.error(f"no notebooks found in {args.notebooks}")
    live = bool(os.environ.get("FLOTORCH_API_KEY") and os.environ.get("FLOTORCH_BASE_URL"))
    print(f"recording against the {'LIVE' if live else 'embedded OFFLINE'} gateway", flush=True)
    counts = record_notebooks(paths, args.out or args.notebooks / "recordings", timeout=args.timeout)
    print("\n".join(f"{stem}: {count} recordings" for stem, count in counts.items()))
    return 0

