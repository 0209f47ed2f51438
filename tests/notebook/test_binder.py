"""binder/: what mybinder.org does, done here (Binder itself cannot be reached from a test).

Binder installs ``binder/requirements.txt`` from the repository root into a fresh environment and runs
``binder/start <server command>``. The slow test does the same with a fresh virtualenv and a command
that executes all the teaching notebooks with nbmake, with no FloTorch key anywhere, and checks from
their saved outputs that every kernel used the gateway ``binder/start`` started. The quick tests run
``binder/start`` with this environment's Python to check what it sets and that it starts nothing
when a gateway or recordings are configured. Every gateway started is killed by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.support.notebooks import SERIES as TEACHING

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "binder" / "start"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _clean_env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOTORCH_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _kill(pid: int) -> bool:
    """Kill a gateway we started; True if it was still running."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


def _health(url: str) -> int:
    with _OPENER.open(f"{url}/health", timeout=3) as reply:
        return int(reply.status)


def test_requirements_install_this_repository_for_notebooks() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["-e .[notebook]"]
    assert os.access(START, os.X_OK), "binder/start must be executable"
    assert START.read_text().rstrip().endswith('exec "$@"'), "Binder's start hook must hand over with exec"


def test_start_runs_an_offline_gateway_and_exports_its_settings(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    probe = (
        "import os, pathlib; e = os.environ; pathlib.Path(os.sys.argv[1]).write_text("
        "'\\n'.join([e['FLOTORCH_BASE_URL'], e['FLOTORCH_API_KEY'], e['FLOTORCH_MODEL_ID'], "
        "e['FLOTORCH_GATEWAY_PID']]))"
    )
    result = subprocess.run(
        [str(START), sys.executable, "-c", probe, str(out)],
        env=_clean_env(Path(sys.executable).parent),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.exists(), result.stderr
    url, key, model, pid = out.read_text().splitlines()
    try:
        assert result.returncode == 0, result.stderr
        assert url.startswith("http://127.0.0.1:")
        assert (key, model) == ("flotorch-offline-placeholder", "offline/assistant")
        assert "OFFLINE gateway" in result.stderr and url in result.stderr
        assert _health(url) == 200, "the gateway keeps serving the server that start exec'd"
    finally:
        assert _kill(int(pid)), "the gateway was not running"


@pytest.mark.parametrize(
    "configured",
    [
        {"FLOTORCH_API_KEY": "sk-" + "real-000000000000", "FLOTORCH_BASE_URL": "https://gateway.example"},
        {"FLOTORCH_REPLAY": "/recordings"},
    ],
    ids=["live", "replay"],
)
def test_start_changes_nothing_when_a_gateway_or_recordings_are_configured(
    configured: dict[str, str],
) -> None:
    env = {**_clean_env(Path(sys.executable).parent), **configured}
    result = subprocess.run([str(START), "env"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    seen = dict(line.split("=", 1) for line in result.stdout.splitlines() if line.startswith("FLOTORCH_"))
    assert seen == configured
    assert result.stderr == ""


@pytest.fixture(scope="module")
def binder_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with what Binder installs (plus nbmake to run the notebooks)."""
    home = tmp_path_factory.mktemp("binder") / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    python = home / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", "binder/requirements.txt", "nbmake", "pytest"],
        cwd=ROOT,
        check=True,
        timeout=900,
        env=_clean_env(home / "bin"),
    )
    return home


SERIES = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _banner(notebook: Path) -> str:
    """What the executed notebook's ``%load_ext flotorch_nb`` cell printed."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    cell = next(
        c
        for c in cells
        if c["cell_type"] == "code" and "".join(c["source"]).strip() == "%load_ext flotorch_nb"
    )
    return "".join("".join(o.get("text", "")) for o in cell["outputs"] if o["output_type"] == "stream")


@pytest.mark.slow
def test_the_notebooks_run_on_a_fresh_binder_environment_with_no_key(
    binder_venv: Path, tmp_path: Path
) -> None:
    """Every teaching notebook, under nbmake, in the fresh environment, served by binder/start's gateway.

    nbmake's ``--overwrite`` keeps each executed copy's outputs, so every notebook's own banner can be
    read: its kernel must name the URL binder/start exported, and must not have started an embedded
    gateway of its own (that banner starts "no FLOTORCH_API_KEY/FLOTORCH_BASE_URL set").
    """
    assert [f"{stem}.ipynb" for stem in TEACHING] == SERIES, SERIES  # the glob found every one
    work = tmp_path / "notebooks"
    work.mkdir()
    for name in SERIES:
        shutil.copy(ROOT / "notebooks" / name, work)
    pid_file, url_file = tmp_path / "gateway.pid", tmp_path / "gateway.url"
    python = binder_venv / "bin" / "python"
    command = (
        f'echo "$FLOTORCH_GATEWAY_PID" > {pid_file}; echo "$FLOTORCH_BASE_URL" > {url_file}; '
        f"exec {python} -m pytest -p no:cacheprovider --nbmake --nbmake-timeout=120 --overwrite -q "
        + " ".join(SERIES)
    )
    try:
        result = subprocess.run(
            [str(START), "bash", "-c", command],
            cwd=work,
            env=_clean_env(binder_venv / "bin"),
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        pid = pid_file.read_text().strip() if pid_file.exists() else ""
        gateway_was_running = bool(pid) and _kill(int(pid))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"{len(SERIES)} passed" in result.stdout
    url = url_file.read_text().strip()
    assert url.startswith("http://127.0.0.1:") and f"OFFLINE gateway at {url}" in result.stderr
    assert gateway_was_running, "binder/start's gateway kept running for the server it exec'd"
    for name in SERIES:
        banner = _banner(work / name)
        assert f"using the OFFLINE gateway at {url} (model offline/assistant" in banner, (name, banner)
        assert "no FLOTORCH_API_KEY" not in banner, f"{name}: the kernel started a gateway of its own"
    installed = subprocess.run(
        [str(python), "-c", "import flotorch_nb, ipywidgets; print(flotorch_nb.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(installed.stdout.strip()).is_relative_to(ROOT), "the repository itself is installed"
