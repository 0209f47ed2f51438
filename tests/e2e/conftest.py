"""Session fixtures for the browser tests: gateway, JupyterLab, Chromium, and a fresh page per test.

Every process is started here and ended in the same fixture's teardown, by PID, whatever happens.
On a failure the report gets the tails of the gateway, JupyterLab and browser-console logs, and a
screenshot lands in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .harness import (
    API_KEY,
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    SERVICE_LOGS,
    Lab,
    descendants,
    end_pids,
    start_gateway,
    start_lab,
    tail,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

VIEWPORT = {"width": 1400, "height": 1800}
_REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(_REPORT_KEY, {})[report.when] = report
    if report.failed and item.get_closest_marker("browser"):
        for name, path in SERVICE_LOGS.items():
            report.sections.append((f"{name}: tail of {path}", tail(path)))
    return report


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """Debian's Chromium; missing it skips locally but fails in CI (CI=true)."""
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true, so browser tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def e2e_gateway(artifacts: Path, chromium_executable: Path) -> Iterator[str]:
    """Base URL of an offline gateway subprocess that streams slowly enough to watch."""
    service, url = start_gateway(api_key=API_KEY, token_delay=0.03, log_path=artifacts / "e2e-gateway.log")
    try:
        yield url
    finally:
        service.stop()


@pytest.fixture(scope="session")
def lab(e2e_gateway: str, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A sandboxed JupyterLab whose only kernel is the project venv pointed at the offline gateway."""
    kernel_env = {
        "FLOTORCH_BASE_URL": e2e_gateway,
        "FLOTORCH_API_KEY": API_KEY,
        "FLOTORCH_MODEL_ID": "offline/assistant",
    }
    log_path = artifacts / "e2e-jupyterlab.log"
    server = start_lab(sandbox=tmp_path_factory.mktemp("lab"), kernel_env=kernel_env, log_path=log_path)
    try:
        yield server
    finally:
        server.service.stop()


@pytest.fixture(scope="module")
def browser(chromium_executable: Path) -> Iterator[Browser]:
    """Headless Debian Chromium under Playwright; its processes are ended by PID at the end.

    Module-scoped on purpose: Playwright's sync API keeps an asyncio loop marked as running in this
    thread while it is started, so every later ``asyncio.run`` (and anyio test) in the same pytest
    process would fail with "Cannot run the event loop while another loop is running".
    """
    from playwright.sync_api import sync_playwright

    before = set(descendants(os.getpid()))
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=str(chromium_executable), args=CHROMIUM_ARGS)
    except BaseException:
        playwright.stop()
        raise
    ours = {pid: started for pid, started in descendants(os.getpid()).items() if pid not in before}
    try:
        yield launched
    finally:
        for pid in list(ours):  # the renderers and helpers started since launch
            ours.update(descendants(pid))
        try:
            launched.close()
            playwright.stop()
        finally:
            end_pids(ours)


@pytest.fixture
def page(browser: Browser, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page with a large viewport (JupyterLab scrolls inside its own panel)."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(20_000)
    new_page = context.new_page()
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    failure_png = artifacts / f"failure-{name}.png"
    failure_png.unlink(missing_ok=True)  # a stale one would mislead
    console_log = artifacts / f"e2e-{name}-console.log"
    SERVICE_LOGS["browser console"] = console_log
    with console_log.open("w") as log:
        new_page.on("console", lambda msg: print(f"[{msg.type}] {msg.text}", file=log, flush=True))
        new_page.on("pageerror", lambda err: print(f"[pageerror] {err}", file=log, flush=True))
        try:
            yield new_page
        finally:
            reports = request.node.stash.get(_REPORT_KEY, {})
            if any(r.failed for r in reports.values()):
                try:
                    new_page.screenshot(path=str(failure_png))
                except Exception as exc:  # a dead page must not hide the real failure
                    print(f"no failure screenshot: {exc}", file=log)
            context.close()
