"""flotorch_nb.lab: the decisions as pure functions, then the launcher for real.

The real runs start child processes; every wait is bounded and everything started is killed by PID
on every exit path, so a failing test never leaves a JupyterLab or a gateway behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from flotorch_nb.notebook import lab

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with _OPENER.open(request, timeout=3) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        return _get(url)[0] == 200
    return False


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- pure decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "offline"),
        ({"FLOTORCH_API_KEY": "k"}, "offline"),
        ({"FLOTORCH_BASE_URL": "https://gw"}, "offline"),
        ({"FLOTORCH_API_KEY": "", "FLOTORCH_BASE_URL": "https://gw"}, "offline"),
        ({"FLOTORCH_API_KEY": "k", "FLOTORCH_BASE_URL": "https://gw"}, "live"),
        ({"FLOTORCH_REPLAY": "/rec"}, "replay"),
        ({"FLOTORCH_REPLAY": "/rec", "FLOTORCH_API_KEY": "k", "FLOTORCH_BASE_URL": "https://gw"}, "replay"),
    ],
)
def test_decide_mode(env: Mapping[str, str], mode: str) -> None:
    assert lab.decide_mode(env) == mode


def test_offline_env_points_everything_at_the_gateway_and_keeps_a_chosen_model() -> None:
    base = {"PATH": "/bin", "FLOTORCH_API_KEY": "half-configured"}
    env = lab.offline_env(base, "http://127.0.0.1:9", "offline-abc")
    assert env == {
        "PATH": "/bin",
        "FLOTORCH_API_KEY": "offline-abc",
        "FLOTORCH_BASE_URL": "http://127.0.0.1:9",
        "FLOTORCH_MODEL_ID": "offline/assistant",
        # Names the gateway as offline for the kernels, which did not start it (autostart.is_offline).
        "FLOTORCH_OFFLINE_GATEWAY": "http://127.0.0.1:9",
    }
    assert base == {"PATH": "/bin", "FLOTORCH_API_KEY": "half-configured"}, "the input is not changed"
    chosen = lab.offline_env({"FLOTORCH_MODEL_ID": "offline/echo"}, "http://x", "k")
    assert chosen["FLOTORCH_MODEL_ID"] == "offline/echo"


def test_jupyter_command(tmp_path: Path) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    py = "/py"
    assert lab.jupyter_command([], is_root=False, notebooks=notebooks, python=py) == [
        py,
        "-m",
        "jupyterlab",
        str(notebooks),
    ]
    args = ["--no-browser", "--port", "8899"]
    assert lab.jupyter_command(args, is_root=True, notebooks=notebooks, python=py) == [
        py,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--port",
        "8899",
        "--allow-root",
        str(notebooks),
    ]
    assert (
        lab.jupyter_command(["--allow-root"], is_root=True, notebooks=None, python=py).count("--allow-root")
        == 1
    )
    # A path of the user's own replaces notebooks/, and a missing notebooks/ is not passed.
    other = str(tmp_path)
    assert lab.jupyter_command([other], is_root=False, notebooks=notebooks, python=py) == [
        py,
        "-m",
        "jupyterlab",
        other,
    ]
    assert lab.jupyter_command([], is_root=False, notebooks=tmp_path / "nope", python=py) == [
        py,
        "-m",
        "jupyterlab",
    ]


def test_gateway_command_is_the_documented_cli() -> None:
    assert lab.gateway_command(8765, "k", python="/py") == [
        "/py",
        "-m",
        "flotorch_nb.gateway",
        "--host",
        "127.0.0.1",
        "--port",
        "8765",
        "--api-key",
        "k",
        "--latency",
        "0.05",
        "--token-delay",
        "0.002",
    ]


# -- main() with JupyterLab replaced by a probe -------------------------------------------------


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace running JupyterLab by a function that records what it would have been given."""
    calls: list[dict[str, Any]] = []

    def fake_run(command: list[str], env: Mapping[str, str]) -> int:
        url = env.get("FLOTORCH_BASE_URL", "")
        calls.append(
            {"command": command, "env": dict(env), "healthy": bool(url) and _answers(f"{url}/health")}
        )
        return 7

    monkeypatch.setattr(lab, "_run_jupyter", fake_run)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the repository, which has notebooks/
    return calls


@pytest.mark.slow
def test_offline_main_runs_jupyter_on_a_live_gateway_and_stops_it(
    probe: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTORCH_API_KEY", "half-configured-key")  # a key alone is not a gateway
    assert lab.main(["--no-browser"]) == 7, "JupyterLab's exit status is the launcher's"
    (call,) = probe
    env = call["env"]
    assert call["healthy"], "the gateway answered /health while JupyterLab ran"
    assert env["FLOTORCH_BASE_URL"].startswith("http://127.0.0.1:")
    assert env["FLOTORCH_MODEL_ID"] == "offline/assistant"
    assert env["FLOTORCH_API_KEY"].startswith("offline-")
    assert call["command"][1:4] == ["-m", "jupyterlab", "--no-browser"]
    assert call["command"][-1] == "notebooks"
    out = capsys.readouterr().out
    assert "OFFLINE gateway" in out and env["FLOTORCH_BASE_URL"] in out
    assert "FLOTORCH_BASE_URL not set" in out and "half-configured-key" not in out
    assert env["FLOTORCH_API_KEY"] not in out, "the launcher prints no key, not even the offline one"
    assert not _answers(env["FLOTORCH_BASE_URL"] + "/health"), "the gateway stops when JupyterLab exits"


def test_live_and_replay_main_start_no_gateway(
    probe: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOTORCH_API_KEY", "sk-" + "real-key-000000")
    monkeypatch.setenv("FLOTORCH_BASE_URL", "https://gateway.example")
    lab.main([])
    monkeypatch.setenv("FLOTORCH_REPLAY", "/somewhere")
    lab.main([])
    live, replay = probe
    for call in (live, replay):
        assert call["env"]["FLOTORCH_BASE_URL"] == "https://gateway.example"
        assert call["env"]["FLOTORCH_API_KEY"] == "sk-" + "real-key-000000"
    out = capsys.readouterr().out
    assert "https://gateway.example" in out and "REPLAY" in out and "/somewhere" in out
    assert "sk-" + "real-key" not in out


# -- the launcher for real -------------------------------------------------------------------------


def _kill_tree(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


@contextlib.contextmanager
def _launcher(
    tmp_path: Path, port: int, token: str
) -> Iterator[tuple[subprocess.Popen[str], list[str], set[int]]]:
    """Run ``python -m flotorch_nb.lab`` in ``tmp_path``; whatever it started is killed afterwards.

    Tests add the PIDs they see to the yielded set, so even children of a launcher that was killed
    (and can no longer be asked for its children) are cleaned up.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOTORCH_", "JUPYTER"))}
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(tmp_path / name.lower())
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    command = [
        sys.executable,
        "-m",
        "flotorch_nb.lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={tmp_path}",
        "--LabApp.news_url=None",
    ]
    launcher = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(launcher.stdout or []), daemon=True)
    reader.start()
    family: set[int] = set()
    try:
        yield launcher, lines, family
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            family.update(p.pid for p in psutil.Process(launcher.pid).children(recursive=True))
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait(10)
        # A child started just before the launcher died is found by the unique port it was given.
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if f"--port={port}" in (proc.info["cmdline"] or []):
                family.add(proc.info["pid"])
        _kill_tree(sorted(family))
        reader.join(10)
        if launcher.stdout is not None:
            launcher.stdout.close()


@pytest.mark.slow
def test_the_launcher_serves_jupyterlab_with_a_gateway_and_cleans_up_on_sigterm(tmp_path: Path) -> None:
    port, token = lab.free_port(), "test-token-123"
    with _launcher(tmp_path, port, token) as (launcher, lines, family):
        _wait_for(lambda: any("OFFLINE gateway at" in line for line in lines), 30, "the offline banner")
        banner = next(line for line in lines if "OFFLINE gateway at" in line)
        gateway_url = banner.split("OFFLINE gateway at ")[1].split()[0]
        assert _get(gateway_url + "/health")[0] == 200

        server = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _answers_with_token(f"{server}/api/status", token), 60, "JupyterLab's /api/status")

        children = psutil.Process(launcher.pid).children(recursive=True)
        family.update(p.pid for p in children)
        (gateway,) = [p for p in children if "flotorch_nb.gateway" in p.cmdline()]
        (jupyter,) = [p for p in children if "jupyterlab" in p.cmdline()]
        assert jupyter.environ()["FLOTORCH_BASE_URL"] == gateway_url

        # A kernel started through the server inherits the gateway settings.
        status, kernel = _get(f"{server}/api/kernels", token, method="POST")
        assert status == 201, status

        def kernel_process() -> psutil.Process | None:
            for child in jupyter.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if kernel["id"] in " ".join(child.cmdline()):
                        return child
            return None

        _wait_for(lambda: kernel_process() is not None, 30, "the kernel process")
        kernel_proc = kernel_process()
        assert kernel_proc is not None
        family.add(kernel_proc.pid)
        assert kernel_proc.environ()["FLOTORCH_BASE_URL"] == gateway_url
        assert kernel_proc.environ()["FLOTORCH_MODEL_ID"] == "offline/assistant"

        launcher.send_signal(signal.SIGTERM)
        launcher.wait(40)
        _, alive = psutil.wait_procs([gateway, jupyter, kernel_proc], timeout=20)
        assert not alive, f"still running after the launcher exited: {alive}"
        assert not _answers(gateway_url + "/health")


def _answers_with_token(url: str, token: str) -> bool:
    with contextlib.suppress(OSError):
        return _get(url, token)[0] == 200
    return False


@pytest.mark.slow
def test_a_killed_launcher_takes_its_gateway_along(tmp_path: Path) -> None:
    """Even SIGKILL, which runs no cleanup, leaves no gateway behind (Linux parent-death signal)."""
    if sys.platform != "linux":
        pytest.skip("parent-death signals are Linux-only")
    port, token = lab.free_port(), "test-token-456"
    with _launcher(tmp_path, port, token) as (launcher, lines, family):
        _wait_for(lambda: any("OFFLINE gateway at" in line for line in lines), 30, "the offline banner")
        children = psutil.Process(launcher.pid).children(recursive=True)
        family.update(p.pid for p in children)
        (gateway,) = [p for p in children if "flotorch_nb.gateway" in p.cmdline()]
        launcher.kill()
        launcher.wait(10)
        _, alive = psutil.wait_procs([gateway], timeout=20)
        assert not alive


def test_jupyterlab_gets_the_news_toast_turned_off_by_a_setting_it_knows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    import jupyterlab
    from jupyterlab_server.settings_utils import _get_overrides

    seen: list[dict[str, str]] = []

    def run(command: list[str], env: dict[str, str]) -> int:
        seen.append(dict(env))
        return 0

    monkeypatch.setattr(lab, "_run", run)
    lab._run_jupyter(["jupyter"], {"JUPYTER_CONFIG_PATH": str(tmp_path / "theirs")})
    (env,) = seen
    ours, theirs = env["JUPYTER_CONFIG_PATH"].split(os.pathsep)
    assert theirs == str(tmp_path / "theirs") and not Path(ours).exists()  # removed once JupyterLab ends

    # What JupyterLab's settings handler reads with that environment.
    quiet = lab.quiet_lab_env({}, tmp_path / "config")
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", quiet["JUPYTER_CONFIG_PATH"])
    overrides, error = _get_overrides(str(tmp_path / "no-app-settings"))
    assert not error
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    # ...and the installed JupyterLab has that setting, with "false" as one of its values.
    schemas = Path(jupyterlab.__file__).parents[4] / "share/jupyter/lab/schemas/@jupyterlab"
    schema = json.loads((schemas / "apputils-extension/notification.json").read_text(encoding="utf-8"))
    assert {"const": "false", "title": "Never"} in schema["properties"]["fetchNews"]["oneOf"]
    assert schema["properties"]["checkForUpdates"]["type"] == "boolean"
