"""``python -m flotorch_nb.lab [jupyter lab args]``: JupyterLab with a gateway that works, key or no key.

With ``FLOTORCH_API_KEY`` and ``FLOTORCH_BASE_URL`` set this is plain ``jupyter lab``. With
``FLOTORCH_REPLAY`` set the notebooks answer from recordings and no gateway is needed. Otherwise the
embedded OFFLINE gateway is started as a child process (its own session, so the Ctrl-C meant for
JupyterLab does not kill it under a running kernel), the env vars are set for JupyterLab and every
kernel it starts, and the gateway is stopped when JupyterLab exits, whether it was shut down, got
Ctrl-C, or the launcher got SIGTERM/SIGHUP. On Linux the gateway is also told to die with its parent,
so even a SIGKILLed launcher leaves nothing behind.

JupyterLab's "Would you like to get notified about official Jupyter news?" toast (the
``@jupyterlab/apputils-extension:announcements`` plugin, asked while the ``fetchNews`` setting of
``@jupyterlab/apputils-extension:notification`` is "none") would cover the corner of every notebook
on a first start, so the launcher gives that setting the default "false" (and no update check): a
``labconfig/default_setting_overrides.json`` in a folder of its own, put first on
``JUPYTER_CONFIG_PATH`` for JupyterLab only. It is a default, not a lock: a person who turns news on
in Settings keeps it, and nothing in the user's own Jupyter configuration is written.

The decisions are pure functions (``decide_mode``, ``jupyter_command``, ``offline_env``) so they are
tested without starting anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Literal

__all__ = [
    "NEWS_OFF",
    "decide_mode",
    "gateway_command",
    "jupyter_command",
    "main",
    "offline_env",
    "offline_gateway",
    "quiet_lab_env",
]

Mode = Literal["live", "replay", "offline"]
OFFLINE_MODEL = "offline/assistant"
#: Long enough for a cold start on a slow CI box; a gateway that takes longer is broken, not slow.
HEALTH_TIMEOUT_S = 30.0
#: How long JupyterLab and the gateway get to shut down cleanly before they are killed.
STOP_TIMEOUT_S = 15.0


#: Setting defaults JupyterLab gets from the launcher: no news toast, no update check (see above).
NEWS_OFF = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}


def quiet_lab_env(env: Mapping[str, str], folder: Path) -> dict[str, str]:
    """``env`` for JupyterLab with ``NEWS_OFF`` as setting defaults, written under ``folder``."""
    labconfig = folder / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "default_setting_overrides.json").write_text(json.dumps(NEWS_OFF), encoding="utf-8")
    child = dict(env)
    child["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        p for p in (str(folder), env.get("JUPYTER_CONFIG_PATH")) if p
    )
    return child


def decide_mode(env: Mapping[str, str]) -> Mode:
    """``replay`` if FLOTORCH_REPLAY is set, ``live`` with both a key and a URL, else ``offline``."""
    if env.get("FLOTORCH_REPLAY"):
        return "replay"
    if env.get("FLOTORCH_API_KEY") and env.get("FLOTORCH_BASE_URL"):
        return "live"
    return "offline"


def offline_env(env: Mapping[str, str], url: str, api_key: str) -> dict[str, str]:
    """The environment JupyterLab (and so each kernel) gets when the offline gateway is in use.

    ``FLOTORCH_OFFLINE_GATEWAY`` names the gateway as offline, so ``%flotorch`` in a kernel says so too
    (it did not start this gateway itself; see ``autostart.is_offline``).
    """
    child = dict(env)
    child["FLOTORCH_OFFLINE_GATEWAY"] = url
    child["FLOTORCH_BASE_URL"] = url
    child["FLOTORCH_API_KEY"] = api_key
    child["FLOTORCH_MODEL_ID"] = env.get("FLOTORCH_MODEL_ID") or OFFLINE_MODEL
    return child


def gateway_command(port: int, api_key: str, python: str = sys.executable) -> list[str]:
    """How the offline gateway child is started (the same CLI a person would type), timed like the
    gateway ``%load_ext`` starts (``autostart.OFFLINE_LATENCY_S``)."""
    from .autostart import OFFLINE_LATENCY_S, OFFLINE_TOKEN_DELAY_S

    return [
        python,
        "-m",
        "flotorch_nb.gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        api_key,
        "--latency",
        str(OFFLINE_LATENCY_S),
        "--token-delay",
        str(OFFLINE_TOKEN_DELAY_S),
    ]


def jupyter_command(
    args: Sequence[str], *, is_root: bool, notebooks: Path | None, python: str = sys.executable
) -> list[str]:
    """``jupyter lab`` with the user's arguments; opens ``notebooks/`` unless they name a path.

    ``--allow-root`` is added as root (JupyterLab refuses to start otherwise, e.g. in containers).
    """
    command = [python, "-m", "jupyterlab", *args]
    if is_root and "--allow-root" not in args:
        command.append("--allow-root")
    # "--port 8899" has a bare value too: only an existing file or folder counts as the user's path.
    gives_path = any(not arg.startswith("-") and Path(arg).exists() for arg in args)
    if notebooks is not None and notebooks.is_dir() and not gives_path:
        command.append(str(notebooks))
    return command


def free_port() -> int:
    """A port nobody listens on right now (the gateway binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: deliver SIGTERM to the gateway if the launcher dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Poll ``{url}/health`` until it answers 200; fail fast if the child died, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the offline gateway exited early with status {process.returncode}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            opener.open(f"{url}/health", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the offline gateway did not answer {url}/health within {timeout:g} s")


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait (bounded), then SIGKILL: a child never outlives the launcher."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@contextlib.contextmanager
def offline_gateway(api_key: str) -> Iterator[str]:
    """Run the offline gateway as a child on a free loopback port; yield its URL, stop it on exit."""
    last_error = ""
    for _ in range(3):  # another process may grab the free port between our probe and its bind
        port = free_port()
        # Its log goes to a file, not our terminal (and not a pipe nobody reads, which would block it).
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                gateway_command(port, api_key),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                try:
                    wait_healthy(url, process)
                except RuntimeError as exc:
                    log.seek(0)
                    last_error = f"{exc}\n{log.read()[-2000:].decode(errors='replace')}"
                    continue
                yield url
                return
            finally:
                stop(process)
    raise RuntimeError(f"could not start the offline gateway: {last_error}")


def _run_jupyter(command: list[str], env: Mapping[str, str]) -> int:
    """Run JupyterLab to completion; SIGTERM/SIGHUP to us are passed on, Ctrl-C is JupyterLab's to handle."""
    with tempfile.TemporaryDirectory(prefix="flotorch-lab-") as folder:
        return _run(command, quiet_lab_env(env, Path(folder)))


def _run(command: list[str], env: Mapping[str, str]) -> int:
    jupyter = subprocess.Popen(command, env=dict(env))

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            jupyter.send_signal(signal.SIGTERM)

    # Ctrl-C reaches JupyterLab directly (same process group); it asks to confirm, so we must not
    # tear the gateway down under it. A Python handler (not SIG_IGN) is reset in the child on exec.
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        return jupyter.wait()
    finally:
        stop(jupyter)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Start JupyterLab (over ``notebooks/`` when it exists) with the gateway the environment calls for."""
    from .._config import display_url

    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    command = jupyter_command(args, is_root=os.geteuid() == 0, notebooks=Path("notebooks"))
    mode = decide_mode(env)
    if mode == "live":
        url = display_url(env["FLOTORCH_BASE_URL"])
        print(f"flotorch_nb: using the gateway at {url} (FLOTORCH_API_KEY is set)", flush=True)
        return _run_jupyter(command, env)
    if mode == "replay":
        print(f"flotorch_nb: REPLAY mode: answers come from {env['FLOTORCH_REPLAY']}, no gateway", flush=True)
        return _run_jupyter(command, env)
    missing = " and ".join(n for n in ("FLOTORCH_API_KEY", "FLOTORCH_BASE_URL") if not env.get(n))
    key = f"offline-{secrets.token_urlsafe(16)}"
    try:
        with offline_gateway(key) as url:
            print(
                f"flotorch_nb: {missing} not set: using the OFFLINE gateway at {url}\n"
                "flotorch_nb: its answers are canned and local; set FLOTORCH_API_KEY and FLOTORCH_BASE_URL "
                "to use a real FloTorch gateway",
                flush=True,
            )
            return _run_jupyter(command, offline_env(env, url, key))
    except KeyboardInterrupt:  # Ctrl-C while the gateway was starting: nothing left to clean up
        return 130


if __name__ == "__main__":
    sys.exit(main())
