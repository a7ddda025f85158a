"""Starting the real API and UI servers on loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    """Running, as opposed to gone or exited and waiting to be reaped (a zombie holds no memory)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def survivors(pids: set[int], within_s: float = 5.0) -> list[int]:
    """The pids still running after waiting up to ``within_s`` for them to exit."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        running = [pid for pid in pids if alive(pid)]
        if not running:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


class ServerProcess:
    """``python -m <module>`` in a child process, stopped with SIGTERM like a process manager does."""

    module = ""
    ready_path = "/"

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, quiet: bool = False) -> None:
        output = subprocess.DEVNULL if quiet else None
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, stdout=output, stderr=output)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited with code {self.process.returncode}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.module} did not start")

    def stop(self) -> set[int]:
        """SIGTERM the server; return the pids of the processes it had started."""
        if self.process is None or self.process.poll() is not None:
            return set()
        children = {c.pid for c in psutil.Process(self.process.pid).children(recursive=True)}
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return children


class ApiServer(ServerProcess):
    """The API. With accounts on (the default), an administrator ``tester`` and an API key
    are made first with the real CLI; :attr:`headers` carries the key. ``auth="off"`` is the
    single-user local mode, for tests of other things than accounts."""

    module = "api"
    ready_path = "/openapi.json"  # public: it answers before anyone signs in

    def __init__(self, home: Path, models_dir: Path, auth: str = "on", **settings: str) -> None:
        port = free_port()
        env = {
            "LLMCHAT_PORT": str(port),
            "LLMCHAT_DB_URL": str(home / "chat.sqlite3"),
            "LLMCHAT_LOGS_DIR": str(home / "logs"),
            "LLMCHAT_STATE_DIR": str(home),
            "LLMCHAT_MODELS_DIR": str(models_dir),
            "LLMCHAT_AUTH": auth,
            **{f"LLMCHAT_{k.upper()}": v for k, v in settings.items()},
        }
        super().__init__(env, port)
        self.key: str | None = None
        self.headers: dict[str, str] = {}

    def start(self, quiet: bool = False) -> None:
        if self.env["LLMCHAT_AUTH"] == "on" and self.key is None:  # once: a restart keeps the database
            self.key = self.add_user("tester", "admin")[1]
            self.headers = {"Authorization": f"Bearer {self.key}"}
        super().start(quiet)

    def add_user(self, name: str, role: str = "user", password: str = "correct horse battery") -> tuple[str, str]:
        """A user made with ``python -m api.users``: (password, API key)."""
        done = subprocess.run(
            [sys.executable, "-m", "api.users", "add", name, "--role", role, "--password-stdin", "--key", "tests"],
            input=password + "\n", env=self.env, capture_output=True, text=True, check=True,
        )
        key = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("key: "))
        return password, key


class UiServer(ServerProcess):
    """The dashboard. With sign-in on (the default) it is ready when its sign-in page
    answers; ``auth="off"`` is the local mode (loopback only), as for the API."""

    module = "ui"

    def __init__(self, api_url: str, auth: str = "on", **settings: str) -> None:
        port = free_port()
        env = {
            "LLMCHAT_UI_PORT": str(port),
            "LLMCHAT_API_URL": api_url,
            "LLMCHAT_AUTH": auth,
            **{f"LLMCHAT_{k.upper()}": v for k, v in settings.items()},
        }
        super().__init__(env, port)
        self.ready_path = "/login" if auth == "on" else "/"
