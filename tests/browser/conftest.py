"""Real-browser checks: a system Chromium driven by Playwright's sync API.

Only a missing Chromium skips these tests; anything else that goes wrong fails them. The
browser is the distribution's (``/usr/bin/chromium`` or ``chromium`` on ``PATH``); Playwright's
own downloaded browsers are not used. A JupyterLab server is started per test in a temporary
folder with its own config, data, runtime and settings folders, and always shut down.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

# Flags for a headless Chromium on a machine without a network: no sandbox (runs as root),
# no GPU, and none of the background connections (updates, sync, QUIC probes).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture
def chromium():
    """A launched headless Chromium (Playwright ``Browser``); closed afterwards."""
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium: neither /usr/bin/chromium nor `chromium` on PATH")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts() -> Path:
    """``test-artifacts/`` at the repository root (git-ignored): screenshots go here."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """A JupyterLab server in a process group of its own."""

    def __init__(self, root: Path, home: Path):
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "lab.log"
        env = dict(os.environ)
        for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_PATH",
                  "JUPYTER_CONFIG_PATH", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
            env.pop(k, None)
        # user-level folders in the temporary home; the lab extensions (ipywidgets, jupyter_bokeh)
        # and the kernel come from the environment's share/jupyter, which stays on the path
        env.update(JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
                   JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
                   JUPYTER_PLATFORM_DIRS="1", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
               "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        # no "official Jupyter news?" toast and no update check in the page
        notif = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notif.parent.mkdir(parents=True, exist_ok=True)
        notif.write_text('{"fetchNews": "false", "checkForUpdates": false}')
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.url}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"jupyter lab not ready after {timeout:.0f} s:\n{self.log()}")

    def lab_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"

    @staticmethod
    def _stat(pid) -> list[str] | None:
        """Fields of /proc/PID/stat after the command name (ppid is [1], start time [19])."""
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None

    def _children(self) -> list[tuple[int, str]]:
        """(pid, start time) of the server's children: its kernels, which run in sessions of
        their own and so are not in the server's process group."""
        out = []
        for d in Path("/proc").iterdir():
            st = self._stat(d.name) if d.name.isdigit() else None
            if st and int(st[1]) == self.proc.pid:
                out.append((int(d.name), st[19]))
        return out

    def stop(self) -> None:
        """Terminate the server's process group (the server shuts its kernels down on SIGTERM);
        kill what is left after 15 s, and any kernel the server left behind."""
        kernels = self._children() if self.proc.poll() is None else []
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left in the server's group (it ignored SIGTERM or is still cleaning up)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        for pid, started in kernels:    # still the same process (not a reused pid)?
            st = self._stat(pid)
            if st and st[19] == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()


@pytest.fixture
def lab_server(tmp_path):
    """A started JupyterLab (``LabServer``) serving ``tmp_path / "root"``; always shut down."""
    root = tmp_path / "root"
    home = tmp_path / "home"
    root.mkdir()
    home.mkdir()
    server = LabServer(root, home)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
