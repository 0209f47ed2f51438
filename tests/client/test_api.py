"""The public API the seed documents: the names, the signatures, and the seed's samples run verbatim."""

from __future__ import annotations

import gc
import inspect
import re
import textwrap
from typing import Any

import pytest

import flotorch_nb
import flotorch_nb.llm
from flotorch_nb import AsyncChatStream, ChatStream, FlotorchLLM
from flotorch_nb._pipeline._loop import Pipeline
from flotorch_nb.gateway import OfflineGateway

# The seed's samples, copied as published (the page lost the indentation of ``main``'s body; it is
# restored here, as the original code had it). Only the import line and the three constants differ.
SEED_SETUP = """
from flotorch.sdk.llm import FlotorchLLM
API_KEY = "<your_api_key>"
BASE_URL = "https://gateway.flotorch.cloud"
MODEL_ID = "<your_flotorch_model_id>" # e.g., a model from FloTorch Model Registry
llm = FlotorchLLM(model_id=MODEL_ID, api_key=API_KEY, base_url=BASE_URL)
"""

SEED_INVOKE = """
from typing import Dict, Any
resp = llm.invoke([
{"role": "system", "content": "You are helpful."},
{"role": "user", "content": "Summarize FloTorch in one line."},
], temperature=0.3)
print(resp.content)
print(resp.metadata["totalTokens"]) # includes prompt/completion/total
"""

SEED_AINVOKE = """
import asyncio
async def main():
    r = await llm.ainvoke([
    {"role": "user", "content": "A haiku about the sea."}
    ])
    print(r.content)
asyncio.run(main())
"""


def _seed_setup(url: str, import_line: str) -> str:
    code = SEED_SETUP.replace("from flotorch.sdk.llm import FlotorchLLM", import_line)
    code = code.replace('"<your_api_key>"', '"offline-seed-key"')
    code = code.replace('"https://gateway.flotorch.cloud"', repr(url))
    code = code.replace('"<your_flotorch_model_id>"', '"offline/assistant"')
    assert code.count("\n") == SEED_SETUP.count("\n")
    return code


@pytest.mark.parametrize(
    "import_line", ["from flotorch_nb import FlotorchLLM", "from flotorch_nb.llm import FlotorchLLM"]
)
def test_the_seed_samples_run_verbatim(
    gateway: OfflineGateway, capsys: pytest.CaptureFixture[str], import_line: str
) -> None:
    namespace: dict[str, Any] = {"__name__": "seed_sample"}
    exec(compile(_seed_setup(gateway.url, import_line), "<seed setup>", "exec"), namespace)
    llm = namespace["llm"]
    try:
        exec(compile(SEED_INVOKE, "<seed invoke>", "exec"), namespace)
        sync_out = capsys.readouterr().out.splitlines()
        exec(compile(SEED_AINVOKE, "<seed ainvoke>", "exec"), namespace)
        async_out = capsys.readouterr().out
    finally:
        llm.close()
    resp = namespace["resp"]
    assert isinstance(resp.metadata["totalTokens"], int)
    assert resp.metadata["totalTokens"] > 0
    assert sync_out[-1] == str(resp.metadata["totalTokens"])
    assert "\n".join(sync_out[:-1]) == resp.content != ""
    assert async_out.strip()
    bodies = [r["body"] for r in gateway.requests]
    assert bodies[0]["temperature"] == 0.3
    assert bodies[0]["messages"][1]["content"] == "Summarize FloTorch in one line."
    assert bodies[1]["messages"] == [{"role": "user", "content": "A haiku about the sea."}]
    gc.collect()  # a leaked socket of asyncio.run's loop would warn here (filterwarnings=error)


def test_the_seed_names_import_from_both_places() -> None:
    from flotorch_nb import FlotorchLLM as A
    from flotorch_nb import LLMResponse as B
    from flotorch_nb import convert_pydantic_to_custom_json_schema as C
    from flotorch_nb.llm import FlotorchLLM as A2
    from flotorch_nb.llm import LLMResponse as B2
    from flotorch_nb.llm import convert_pydantic_to_custom_json_schema as C2

    assert (A, B, C) == (A2, B2, C2)
    for name in ("FlotorchLLM", "LLMResponse", "convert_pydantic_to_custom_json_schema"):
        assert name in flotorch_nb.__all__
        assert name in flotorch_nb.llm.__all__


def test_all_is_sorted_and_complete() -> None:
    assert flotorch_nb.__all__ == sorted(flotorch_nb.__all__)
    for name in flotorch_nb.__all__:
        assert hasattr(flotorch_nb, name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", flotorch_nb.__version__)


@pytest.mark.parametrize(
    ("sync_name", "async_name"),
    # The public twins, and the one send loop written twice (STYLE: a test compares the signatures).
    [
        ("invoke", "ainvoke"),
        ("stream", "astream"),
        ("compare", "acompare"),
        ("run", "arun"),
    ],
)
def test_sync_and_async_methods_have_the_same_signature(sync_name: str, async_name: str) -> None:
    assert_twins(FlotorchLLM, sync_name, async_name)


@pytest.mark.parametrize(
    ("sync_name", "async_name"),
    # The one send loop and the one call around it, written twice in the pipeline.
    [("invoke", "ainvoke"), ("stream", "astream"), ("send", "asend"), ("one", "aone")],
)
def test_the_pipeline_twins_have_the_same_signature(sync_name: str, async_name: str) -> None:
    assert_twins(Pipeline, sync_name, async_name)


def assert_twins(owner: type, sync_name: str, async_name: str) -> None:
    sync_sig = inspect.signature(getattr(owner, sync_name))
    async_sig = inspect.signature(getattr(owner, async_name))
    assert list(sync_sig.parameters) == list(async_sig.parameters)
    for name, param in sync_sig.parameters.items():
        other = async_sig.parameters[name]
        assert (param.kind, param.default, param.annotation) == (other.kind, other.default, other.annotation)
    # astream returns its stream object at once; every other twin is a coroutine function
    assert inspect.iscoroutinefunction(getattr(owner, async_name)) is (async_name != "astream")
    assert not inspect.iscoroutinefunction(getattr(owner, sync_name))


def test_the_seed_signature_is_kept() -> None:
    init = inspect.signature(FlotorchLLM.__init__)
    assert list(init.parameters)[1:4] == ["model_id", "api_key", "base_url"]
    invoke = inspect.signature(FlotorchLLM.invoke)
    assert list(invoke.parameters) == ["self", "messages", "tools", "response_format", "extra_body", "kwargs"]
    for name in ("tools", "response_format", "extra_body"):
        assert invoke.parameters[name].default is None
    assert invoke.parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD


def test_stream_classes_are_exported() -> None:
    import flotorch_nb.llm

    assert (flotorch_nb.llm.ChatStream, flotorch_nb.llm.AsyncChatStream) == (ChatStream, AsyncChatStream)
    assert {"ChatStream", "AsyncChatStream"} <= set(flotorch_nb.__all__) & set(flotorch_nb.llm.__all__)


def test_public_names_have_docstrings() -> None:
    for name in flotorch_nb.__all__:
        value = getattr(flotorch_nb, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, name
    for name in ("invoke", "ainvoke", "stream", "astream", "close", "aclose", "with_model"):
        doc = getattr(FlotorchLLM, name).__doc__
        assert doc and textwrap.dedent(doc).strip(), name
