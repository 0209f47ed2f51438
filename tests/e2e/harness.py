"""Process and browser plumbing for the JupyterLab end-to-end tests.

Owns: starting the offline gateway and a sandboxed JupyterLab as subprocesses (logs in
``test-artifacts/``), finding free ports, bounded polling, and stopping every process we started by
PID (including the kernels a JupyterLab started and the Chromium a Playwright driver started).
Nothing here knows about flotorch_nb's widgets; the tests own the selectors.
The flags follow the team notes in BROWSER-TESTING.md (facts established on this kind of machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from playwright.sync_api import Page

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The page must never reach for an outside host; JupyterLab is addressed as 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
KERNEL_NAME = "flotorch-e2e"
# The key the kernel gets; the gateway demands it, and it must never reach a saved notebook.
API_KEY = "fk-e2e-SECRET-4f1d27c9b0"
WIDGETS_LABEXTENSION = "@jupyter-widgets/jupyterlab-manager"

# name -> log file of every service started in this session, so a failing test can show their tails.
SERVICE_LOGS: dict[str, Path] = {}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- processes -------------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` (field 22 of /proc/PID/stat), to tell a PID from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing paren.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """PIDs (mapped to their start times) of every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, int] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        started = _start_time(pid)
        if started is not None:
            found[pid] = started
            stack.extend(children.get(pid, []))
    return found


def _is_same_alive(pid: int, started: int) -> bool:
    return _start_time(pid) == started


def end_pids(pids: dict[int, int], *, grace: float = 3.0) -> None:
    """SIGTERM then, after ``grace`` seconds, SIGKILL the recorded processes that are still the same."""

    def alive() -> list[int]:
        return [pid for pid, started in pids.items() if _is_same_alive(pid, started)]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not alive(), timeout=grace, what="processes to exit")


class Service:
    """A subprocess we started, its output in a log file; ``stop()`` ends it and its descendants."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("wb")
        SERVICE_LOGS[name] = log_path
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        except BaseException:
            self._log.close()
            raise
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited."""
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode}; log {self.log_path}:\n"
                f"{tail(self.log_path)}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate, then kill after ``timeout``; then end any descendant it left behind (kernels)."""
        if self.alive():
            kids = descendants(self.pid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            end_pids(kids)
        else:
            self.proc.wait()
        self._log.close()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # flotorch_nb is imported from the checkout, whether or not it is installed into the venv.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def http_get(url: str, *, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``; return (status, body), also for error statuses. Raises OSError if unreachable."""
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


# --- offline gateway -------------------------------------------------------------------------------


def start_gateway(
    *, api_key: str, token_delay: float, log_path: Path, timeout: float = 20.0
) -> tuple[Service, str]:
    """Start ``python -m flotorch_nb.gateway`` (the CLI a person types) on a free port; return its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "flotorch_nb.gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--token-delay",
        str(token_delay),
        "--api-key",
        api_key,
    ]
    service = Service("gateway", argv, env=_env(), cwd=REPO_ROOT, log_path=log_path)

    def answering() -> bool:
        service.check_alive()
        try:
            http_get(f"{url}/health", timeout=2)  # any HTTP answer means it is serving
        except OSError:
            return False
        return True

    try:
        wait_for(answering, timeout=timeout, what=f"the gateway at {url} (log {log_path})", interval=0.1)
    except BaseException:
        service.stop()
        raise
    return service, url


# --- JupyterLab ------------------------------------------------------------------------------------


@dataclass
class Lab:
    """A running sandboxed JupyterLab."""

    service: Service
    base_url: str
    token: str
    root_dir: Path

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def start_lab(*, sandbox: Path, kernel_env: dict[str, str], log_path: Path, timeout: float = 60.0) -> Lab:
    """Start JupyterLab with every Jupyter/IPython directory inside ``sandbox``.

    The only kernel is ``KERNEL_NAME``: this interpreter (the project venv) with ``kernel_env`` added to
    its environment. The lab extensions (ipywidgets' manager) come from ``sys.prefix/share/jupyter``,
    which Jupyter searches whatever JUPYTER_DATA_DIR says.
    """
    root = sandbox / "root"
    dirs = {name: sandbox / name for name in ("config", "data", "runtime", "ipython", "path", "settings")}
    for d in (root, *dirs.values()):
        d.mkdir(parents=True, exist_ok=True)
    _write_json(
        dirs["path"] / "kernels" / KERNEL_NAME / "kernel.json",
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "flotorch e2e (project venv)",
            "language": "python",
            "env": {**kernel_env, "PYTHONPATH": str(REPO_ROOT)},
            "metadata": {"debugger": False},
        },
    )
    settings = dirs["settings"]
    _write_json(
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    _write_json(
        settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
        {"windowingMode": "none"},
    )
    token = os.urandom(16).hex()
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={sandbox / 'workspaces'}",
        # window.jupyterapp lets the test run commands (run-all) without driving menus.
        "--LabApp.expose_app_in_browser=True",
        # Only our kernelspec (the venv ships a stock python3 one), so no kernel picker can appear.
        "--KernelSpecManager.ensure_native_kernel=False",
        f"--KernelSpecManager.allowed_kernelspecs={KERNEL_NAME}",
        f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    env = _env(
        JUPYTER_TOKEN=token,
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_PATH=str(dirs["path"]),
        IPYTHONDIR=str(dirs["ipython"]),
    )
    # Secrets meant for the kernel reach it only through the kernelspec, never the server's env.
    for name in kernel_env:
        env.pop(name, None)
    service = Service("jupyterlab", argv, env=env, cwd=root, log_path=log_path)
    lab = Lab(service=service, base_url=f"http://127.0.0.1:{port}", token=token, root_dir=root)
    try:

        def ready() -> bool:
            service.check_alive()
            try:
                status, _ = http_get(lab.base_url + "/api/status", token=token, timeout=2)
            except OSError:
                return False
            return status == 200

        wait_for(ready, timeout=timeout, what=f"JupyterLab /api/status (log {log_path})", interval=0.2)
        check_lab_setup(lab)
    except BaseException:
        service.stop()
        raise
    return lab


def page_config(lab: Lab) -> dict[str, Any]:
    """The ``jupyter-config-data`` JSON that /lab serves to the browser."""
    status, body = http_get(lab.url("/lab"), timeout=10)
    if status != 200:
        raise RuntimeError(f"GET /lab answered {status}")
    match = re.search(rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', body, re.S)
    if not match:
        raise RuntimeError("no jupyter-config-data in /lab")
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def check_lab_setup(lab: Lab) -> None:
    """Fail fast, with a clear message, if the sandbox lost the widget extension or our kernel."""
    config = page_config(lab)
    names = sorted(str(ext.get("name")) for ext in config.get("federated_extensions") or [])
    if WIDGETS_LABEXTENSION not in names:
        raise RuntimeError(
            f"{WIDGETS_LABEXTENSION} is not among the lab extensions the page loads ({names}); "
            f"is jupyterlab_widgets installed in {sys.prefix}?"
        )
    status, body = http_get(lab.base_url + "/api/kernelspecs", token=lab.token)
    specs = json.loads(body) if status == 200 else {}
    if set(specs.get("kernelspecs", {})) != {KERNEL_NAME}:
        raise RuntimeError(f"unexpected kernelspecs: {status} {body[:300]!r}")


def write_notebook(path: Path, sources: list[str]) -> Path:
    """Write an nbformat 4 notebook of code cells, bound to ``KERNEL_NAME``, without outputs."""
    cells: list[dict[str, Any]] = [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"cell-{i}",
            "metadata": {},
            "outputs": [],
            "source": source,
        }
        for i, source in enumerate(sources)
    ]
    _write_json(
        path,
        {
            "cells": cells,
            "metadata": {
                "kernelspec": {"name": KERNEL_NAME, "display_name": "flotorch e2e", "language": "python"},
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        },
    )
    return path


# --- driving the notebook in the page --------------------------------------------------------------

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"

_RUN_STATE_JS = """
(expected) => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!nb) return null;
  const err = nb.querySelector('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]');
  if (err) return {error: err.innerText};
  const prompts = [...nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map((e) => e.textContent.trim());
  const indicator = nb.querySelector('.jp-Notebook-ExecutionIndicator');
  const idle = indicator !== null && indicator.dataset.status === 'idle';
  const done = prompts.length === expected && prompts.every((p) => /^\\[\\d+\\]:$/.test(p));
  return done && idle ? {prompts} : null;
}
"""


_KERNEL_READY_JS = """
() => {
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = widget && widget.sessionContext && widget.sessionContext.session
    && widget.sessionContext.session.kernel;
  return Boolean(kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
}
"""


def open_notebook(page: Page, lab: Lab, name: str) -> None:
    """Open ``name`` in a fresh workspace and wait until its kernel is idle."""
    page.goto(lab.url(f"/lab/tree/{name}?reset"))
    page.locator(f"{NOTEBOOK} .jp-Cell").first.wait_for(state="visible", timeout=45_000)
    page.locator(f'{NOTEBOOK} .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(timeout=45_000)
    # The indicator says idle before the kernel's websocket is up; Run All then silently runs nothing.
    page.wait_for_function(_KERNEL_READY_JS, timeout=45_000)


def run_all(page: Page, code_cells: int, *, timeout: float = 60.0) -> list[str]:
    """Run every cell (``runmenu:run-all``); wait until all are numbered and the kernel is idle.

    Raises ``AssertionError`` with the traceback text if a cell shows an error.
    """
    page.evaluate("() => { window.jupyterapp.commands.execute('runmenu:run-all'); }")
    state = page.wait_for_function(_RUN_STATE_JS, arg=code_cells, timeout=timeout * 1000).json_value()
    if "error" in state:
        raise AssertionError(f"a cell raised:\n{state['error']}")
    prompts: list[str] = state["prompts"]
    return prompts


def save_notebook(page: Page, path: Path, *, timeout: float = 15.0) -> dict[str, object]:
    """Save with Ctrl+S from command mode; return the notebook JSON once the file on disk has changed."""
    before = path.stat().st_mtime_ns
    page.locator(f"{NOTEBOOK} .jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Escape")  # command mode, focus in the notebook rather than in a widget
    page.keyboard.press("Control+s")
    wait_for(lambda: path.stat().st_mtime_ns != before, timeout=timeout, what=f"{path.name} to be saved")
    page.locator("li.lm-TabBar-tab.jp-mod-current.jp-mod-dirty").wait_for(state="detached")
    saved: dict[str, object] = json.loads(path.read_text())
    return saved
