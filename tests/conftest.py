"""Shared fixtures: one real offline gateway on loopback for the whole run, and clean environments.

Tests talk real HTTP to ``OfflineGateway`` (uvicorn in a thread on 127.0.0.1); pure edge cases use
``httpx2.MockTransport`` instead. No fixture here reads or writes the developer's real FLOTORCH_* config.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest

from flotorch_nb import FlotorchLLM
from flotorch_nb._config import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MAX_RETRIES,
    ENV_MODEL_ID,
    ENV_RECORD,
    ENV_REPLAY,
    ENV_TIMEOUT,
)
from flotorch_nb.gateway import OfflineGateway

# Tests that build an InteractiveShell (and the kernels nbmake starts) must not write a profile into
# the developer's ~/.ipython; set before anything imports IPython.
os.environ["IPYTHONDIR"] = _IPYTHONDIR = tempfile.mkdtemp(prefix="flotorch-nb-ipython-")
atexit.register(shutil.rmtree, _IPYTHONDIR, True)

TEST_KEY = "offline-test-key"
ALL_ENV = (ENV_API_KEY, ENV_BASE_URL, ENV_MODEL_ID, ENV_RECORD, ENV_REPLAY, ENV_TIMEOUT, ENV_MAX_RETRIES)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio: that is the loop Jupyter's kernel runs."""
    return "asyncio"


@pytest.fixture(scope="session")
def gateway() -> Iterator[OfflineGateway]:
    """The embedded offline gateway on a free loopback port, shared by the whole run.

    It records request bodies (``gateway.requests``): tests assert what the client sent.
    """
    with OfflineGateway(record=True) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _clean_gateway_and_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's FLOTORCH_* variables, nor faults or requests left by another test.

    Code under test writes os.environ on purpose (``%flotorch record``, the offline fallback), which
    monkeypatch cannot undo, so every FLOTORCH_* variable is put back as it was afterwards.
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("FLOTORCH_")}
    for name in ALL_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    # The notebook layer's process-wide state (session, ledger, budget, autostarted gateway...), if a
    # test loaded it: back to clean, so no test sees another's conversation, usage or budget.
    session = sys.modules.get("flotorch_nb.notebook.session")
    if session is not None:
        session.reset()
    if "gateway" in request.fixturenames:
        gw = request.getfixturevalue("gateway")
        gw.faults.clear()
        gw.requests.clear()
        gw.clear_request_counts()
    monkeypatch.undo()
    for name in [k for k in os.environ if k.startswith("FLOTORCH_")]:
        del os.environ[name]
    os.environ.update(saved)


@pytest.fixture
def offline_env(gateway: OfflineGateway, monkeypatch: pytest.MonkeyPatch) -> OfflineGateway:
    """FLOTORCH_* pointing at the offline gateway, as the notebook launcher sets them."""
    monkeypatch.setenv(ENV_API_KEY, TEST_KEY)
    monkeypatch.setenv(ENV_BASE_URL, gateway.url)
    monkeypatch.setenv(ENV_MODEL_ID, "offline/assistant")
    return gateway


@pytest.fixture
def llm(gateway: OfflineGateway) -> Iterator[FlotorchLLM]:
    """A client on the offline gateway with instant retries, closed after the test."""
    from flotorch_nb import RetryPolicy

    client = FlotorchLLM(
        "offline/assistant",
        TEST_KEY,
        gateway.url,
        retry=RetryPolicy(max_retries=2, base_delay=0, max_delay=0),
    )
    yield client
    client.close()
